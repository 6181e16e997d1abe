"""hessopt: curvature (second-order) optimizers for PyTorch and an honest benchmark of them."""

__version__ = "0.1.0"
