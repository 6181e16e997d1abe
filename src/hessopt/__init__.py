"""hessopt: curvature (second-order) optimizers for PyTorch and an honest benchmark of them."""

from hessopt.curvature.regression import DiagonalGradientRegression, OnlineGradientRegression
from hessopt.optim import BFGS, OGR, AdaHesScale, AdaHesScaleGN, DiagOGR

__version__ = "0.1.0"

__all__ = [
    "BFGS",
    "OGR",
    "DiagOGR",
    "AdaHesScale",
    "AdaHesScaleGN",
    "OnlineGradientRegression",
    "DiagonalGradientRegression",
]
