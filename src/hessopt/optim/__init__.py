"""``torch.optim.Optimizer`` subclasses: thin shells over the functional cores in ``hessopt.curvature``.

- :class:`BFGS`: dense inverse-Hessian quasi-Newton (Sherman-Morrison update); three (D, D) matrices.
- :class:`OGR`: online gradient-regression Hessian, saddle-free Newton step; about five (D, D) matrices.
- :class:`DiagOGR`: coordinate-wise OGR, saddle-free per coordinate; five D-vectors.
- :class:`AdaHesScale`, :class:`AdaHesScaleGN`: Adam-style steps with a HesScale (HesScaleGN) Hessian
  diagonal computed during ``backward()`` (set up once with ``opt.attach(model, loss_fn)``); two D-vectors.
"""

from .bfgs import BFGS
from .diag_ogr import DiagOGR
from .hesscale import AdaHesScale, AdaHesScaleGN
from .ogr import OGR

__all__ = ["BFGS", "OGR", "DiagOGR", "AdaHesScale", "AdaHesScaleGN"]
