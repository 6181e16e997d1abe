"""One-dimensional OGR: an online parabola model along a direction (J. Duda, arXiv:1907.07063, "P3"; §3.3).

Along the unit direction ``u`` (in P3 the momentum direction ``m/‖m‖``) the scalars ``x = θ·u`` and
``y = g·u`` follow the model ``y ≈ λ (x − p)``: ``λ`` is the curvature along ``u`` and ``p`` the position of
the parabola's vertex. P3: "λ, p are MSE estimated by just updating four averages (of g, θ, gθ, θ²) in the
considered direction"; "controlling sign of curvature λ, we can repel from saddles". The closed form is the
1-D regression ``λ = cov(x, y)/var(x)``, ``p = x̄ − ȳ/λ``. Equation and section numbers (§) refer to hessopt's
``shared/research/ogr.md``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hessopt.curvature.regression import DiagonalGradientRegression

__all__ = ["ParabolaRegression"]


class ParabolaRegression:
    """Online 1-D parabola fit of the directional derivative along a (changing) direction (P3; §3.3).

    The four averages are kept in centred form, ``(x̄, ȳ, var x, cov(x, y))``, which carries the same
    information as P3's raw ``(avg θ, avg g, avg gθ, avg θ²)`` without the cancellation of
    ``avg(x²) − avg(x)²``. They are updated exactly like the statistics of full OGR in one dimension (§2.1,
    :class:`~hessopt.curvature.regression.DiagonalGradientRegression` with ``D = 1``, whose prior
    ``s0·β^t`` towards ``h_prior`` and ridge floor apply; with one coordinate the floor's relative part is a
    constant ``δ_rel`` relative bias of ``λ``: 1.5e-8 in float64, 3.5e-4 in float32, unless ``ridge_rel=0``).

    The direction may change between updates (P3 uses the momentum): the averages then mix directions, as
    the subspace prototypes do (§4.2); only a fixed direction gives the exact 1-D regression. A zero
    direction carries no information and leaves the state unchanged (sync-free, by masking).

    Args: ``beta`` (EMA weight of the old values; default 0.5, as full OGR: P3's own values are not
    reproduced in the spec), ``sigma0``, ``h_prior`` (a scalar), ``mean_init``, ``ridge_rel``, ``ridge_abs``,
    ``dtype``, ``device``: as :class:`~hessopt.curvature.regression.OnlineGradientRegression`.
    Cost: O(D) per :meth:`update` (two dot products), O(1) per :meth:`fit`.
    """

    def __init__(
        self,
        *,
        beta: float = 0.5,
        sigma0: float = 1.0,
        h_prior: float = 0.0,
        mean_init: str = "first",
        ridge_rel: float | None = None,
        ridge_abs: float | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if isinstance(h_prior, bool) or not isinstance(h_prior, (int, float)):
            raise TypeError(
                f"h_prior must be a float (the prior curvature along the direction), got {h_prior!r}"
            )
        self._line = DiagonalGradientRegression(
            1,
            beta=beta,
            sigma0=sigma0,
            h_prior=float(h_prior),
            mean_init=mean_init,
            ridge_rel=ridge_rel,
            ridge_abs=ridge_abs,
            dtype=dtype,
            device=device,
        )

    @property
    def dtype(self) -> torch.dtype:
        return self._line.dtype

    @torch.no_grad()
    def update(self, theta: Tensor, g: Tensor, direction: Tensor) -> None:
        """Observe ``x = θ·u``, ``y = g·u`` with ``u = direction/‖direction‖`` (flat tensors of one shape)."""
        for name, t in (("theta", theta), ("g", g), ("direction", direction)):
            if not isinstance(t, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.dim() != 1 or t.shape != theta.shape:
                raise ValueError(f"{name} must be a flat tensor of the shape of theta {tuple(theta.shape)}")
            if t.dtype != self.dtype:
                raise ValueError(
                    f"{name} has dtype {t.dtype}; the estimator was built with dtype={self.dtype}"
                )
        norm = torch.linalg.vector_norm(direction)
        valid = norm > 0
        u = direction / torch.where(valid, norm, torch.ones_like(norm))
        self._line.update((theta @ u).reshape(1), (g @ u).reshape(1), mask=valid)

    @torch.no_grad()
    def fit(self) -> tuple[Tensor, Tensor]:
        """``(λ, p)`` as 0-dim tensors: curvature along the direction and the vertex coordinate.

        ``p`` is a coordinate along ``u`` (in units of ``x = θ·u``): the vertex on the line through ``θ`` is
        ``θ + (p − θ·u) u``. ``p`` is defined only where ``λ ≠ 0``; where ``λ = 0`` (or ``ȳ/λ`` overflows) it
        is ``x̄`` (pseudo-inverse convention). The saddle-free step along ``u`` is ``x ← x − y/|λ|``: towards
        ``p`` for ``λ > 0``, away from it for ``λ < 0``.
        """
        lam = self._line.diagonal()
        return lam[0], self._line.zero_gradient_point(lam)[0]

    def state_dict(self) -> dict[str, Tensor]:
        """The four averages (``theta_mean`` = x̄, ``g_mean`` = ȳ, ``sigma``, ``cross``), w, count."""
        return self._line.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore a :meth:`state_dict`; keys and shapes are checked."""
        self._line.load_state_dict(state)
