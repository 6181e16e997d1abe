"""``torch.optim.Optimizer`` subclasses: thin shells over the functional cores in ``hessopt.curvature``."""
