"""``torch.optim.Optimizer`` subclasses: thin shells over the functional cores in ``hessopt.curvature``.

- :class:`BFGS`: dense inverse-Hessian quasi-Newton (Sherman-Morrison update); three (D, D) matrices.
- :class:`OGR`: online gradient-regression Hessian, saddle-free Newton step; about five (D, D) matrices.
- :class:`DiagOGR`: coordinate-wise OGR, saddle-free per coordinate; five D-vectors.
- :class:`BlockDiagonalHessianFree`: block-diagonal Hessian-free (one GGN system per layer, solved by CG);
  :class:`HessianFree`: Martens' Hessian-free (one block). ``step(inputs, targets)`` takes the batch.
"""

from .bfgs import BFGS
from .diag_ogr import DiagOGR
from .hessian_free import BlockDiagonalHessianFree, HessianFree
from .ogr import OGR

__all__ = ["BFGS", "OGR", "DiagOGR", "BlockDiagonalHessianFree", "HessianFree"]
