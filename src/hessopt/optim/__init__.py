"""``torch.optim.Optimizer`` subclasses: thin shells over the functional cores in ``hessopt.curvature``.

- :class:`BFGS`: dense inverse-Hessian quasi-Newton (Sherman-Morrison update); three (D, D) matrices.
- :class:`OGR`: online gradient-regression Hessian, saddle-free Newton step; about five (D, D) matrices.
- :class:`DiagOGR`: coordinate-wise OGR, saddle-free per coordinate; five D-vectors.
- :class:`SubspaceOGR`: OGR in a d-dimensional online-PCA subspace, diagonal OGR outside; (d + 5) D-vectors.
- :class:`AdaHesScale`, :class:`AdaHesScaleGN`: Adam-style steps with a HesScale (HesScaleGN) Hessian
  diagonal computed during ``backward()`` (set up once with ``opt.attach(model, loss_fn)``); two D-vectors.
- :class:`BlockDiagonalHessianFree`: block-diagonal Hessian-free (one GGN system per layer, solved by CG);
  :class:`HessianFree`: Martens' Hessian-free (one block). ``step(inputs, targets)`` takes the batch.
"""

from .bfgs import BFGS
from .diag_ogr import DUDA_DOGR, DiagOGR
from .hesscale import AdaHesScale, AdaHesScaleGN
from .hessian_free import BlockDiagonalHessianFree, HessianFree
from .ogr import OGR
from .subspace_ogr import DUDA_SUBSPACE_OGR, SubspaceOGR

__all__ = [
    "BFGS",
    "OGR",
    "DiagOGR",
    "SubspaceOGR",
    "AdaHesScale",
    "AdaHesScaleGN",
    "BlockDiagonalHessianFree",
    "HessianFree",
    "DUDA_DOGR",
    "DUDA_SUBSPACE_OGR",
]
