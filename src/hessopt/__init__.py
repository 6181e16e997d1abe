"""hessopt: curvature (second-order) optimizers for PyTorch and an honest benchmark of them."""

from hessopt.curvature.diagonal import DiagonalGradientRegression
from hessopt.curvature.regression import OnlineGradientRegression
from hessopt.optim import (
    BFGS,
    OGR,
    AdaHesScale,
    AdaHesScaleGN,
    BlockDiagonalHessianFree,
    DiagOGR,
    HessianFree,
    SubspaceOGR,
)

__version__ = "0.1.0"

__all__ = [
    "BFGS",
    "OGR",
    "DiagOGR",
    "SubspaceOGR",
    "AdaHesScale",
    "AdaHesScaleGN",
    "BlockDiagonalHessianFree",
    "HessianFree",
    "OnlineGradientRegression",
    "DiagonalGradientRegression",
]
