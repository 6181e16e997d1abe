"""Levenberg-Marquardt adjustment of Tikhonov damping from the reduction ratio (Martens 2010, ICML, Sec. 4.1).

HF minimises the damped quadratic model ``q(p) = f + g^T p + 1/2 p^T (C + lambda I) p`` and judges it by the
reduction ratio ``rho = (f(theta + p) - f(theta)) / (q_0(p) - q_0(0))`` of the *undamped* model ``q_0``
(``lambda = 0``, as Martens' HFDemo code evaluates it). Because conjugate gradient tracks the damped
``phi_lambda(p) = q(p) - q(0)``, the undamped value needs no product:
``q_0(p) - q_0(0) = phi_lambda(p) - lambda/2 ||p||^2`` (:func:`undamped_model_change`).
"""

from __future__ import annotations

import math

__all__ = ["DAMPING_BOOST", "DAMPING_DROP", "levenberg_marquardt", "reduction_ratio", "undamped_model_change"]

#: Martens' factors: ``lambda <- 3/2 lambda`` when ``rho < 1/4``, ``lambda <- 2/3 lambda`` when ``rho > 3/4``.
DAMPING_BOOST = 3 / 2
DAMPING_DROP = 2 / 3


def undamped_model_change(phi: float, damping: float, squared_norm: float) -> float:
    """``q_0(p) - q_0(0) = phi_lambda(p) - (lambda / 2) ||p||^2`` for a CG iterate with tracked ``phi``."""
    return phi - 0.5 * damping * squared_norm


def reduction_ratio(f_new: float, f_old: float, model_change: float) -> float:
    """``rho = (f_new - f_old) / model_change``; ``-inf`` when the step is useless.

    ``-inf`` (so that damping grows) when ``f_new`` is not finite, when the objective increased (Martens'
    HFDemo sets ``rho = -Inf`` then), or when the model predicts no decrease (``model_change >= 0``).
    """
    if not math.isfinite(f_new) or f_new > f_old or not model_change < 0:
        return -math.inf
    return (f_new - f_old) / model_change


def levenberg_marquardt(
    damping: float,
    rho: float,
    *,
    lower: float = 0.25,
    upper: float = 0.75,
    boost: float = DAMPING_BOOST,
    drop: float = DAMPING_DROP,
    minimum: float = 1e-8,
    maximum: float = 1e8,
) -> tuple[float, bool]:
    """The Levenberg-Marquardt rule: ``rho < lower`` boosts, ``rho > upper`` drops, else unchanged.

    Both thresholds are inclusive for "unchanged" (``rho == 1/4`` and ``rho == 3/4`` keep ``lambda``).

    Args:
        damping: current ``lambda``.
        rho: the reduction ratio (:func:`reduction_ratio`).
        lower: below it ``lambda`` grows (Martens: 1/4).
        upper: above it ``lambda`` shrinks (Martens: 3/4).
        boost: growth factor (Martens: 3/2).
        drop: shrink factor (Martens: 2/3).
        minimum: lower clamp of the result.
        maximum: upper clamp of the result.

    Returns:
        ``(new_lambda, clamped)`` where ``clamped`` says whether the clamp changed the value.

    References:
        Martens (2010), ICML, Sec. 4.1; Martens & Sutskever (2012), Sec. 20.8.5;
        docs/algorithms/hessian-free.md.
    """
    if rho < lower:
        proposed = damping * boost
    elif rho > upper:
        proposed = damping * drop
    else:
        proposed = damping
    clamped = min(max(proposed, minimum), maximum)
    return clamped, clamped != proposed
