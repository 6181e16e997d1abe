"""One-dimensional OGR: an online parabola model along a direction (J. Duda, arXiv:1907.07063).

Along the unit direction ``u`` (in arXiv:1907.07063 the momentum direction ``m/‖m‖``) the scalars
``x = θ·u`` and ``y = g·u`` follow the model ``y ≈ λ (x − p)``: ``λ`` is the curvature along ``u`` and ``p``
the position of the parabola's vertex. The paper: "λ, p are MSE estimated by just updating four averages
(of g, θ, gθ, θ²) in the considered direction"; "controlling sign of curvature λ, we can repel from
saddles". The closed form is the 1-D regression ``λ = cov(x, y)/var(x)``, ``p = x̄ − ȳ/λ``
(``docs/algorithms/ogr.md``, "One-dimensional parabola").
"""

from __future__ import annotations

import torch
from torch import Tensor

from hessopt.curvature.diagonal import DiagonalGradientRegression

__all__ = ["ParabolaRegression"]


class ParabolaRegression:
    """Online 1-D parabola fit of the directional derivative along a (changing) direction.

    The four averages are kept in centred form, ``(x̄, ȳ, var x, cov(x, y))``, which carries the same
    information as the paper's raw ``(avg θ, avg g, avg gθ, avg θ²)`` without the cancellation of
    ``avg(x²) − avg(x)²``. They are updated exactly like the statistics of OGR in one dimension
    (:class:`~hessopt.curvature.diagonal.DiagonalGradientRegression` with ``D = 1``, whose prior ``s0·β^t``
    towards ``h_prior`` and ridge floor apply; with one coordinate the floor's relative part is a constant
    ``δ_rel`` relative bias of ``λ``: 1.5e-8 in float64, 3.5e-4 in float32, unless ``ridge_rel=0``).

    The direction may change between updates (the paper uses the momentum): the averages then mix
    directions; only a fixed direction gives the exact 1-D regression. A zero direction carries no
    information and leaves the state unchanged (sync-free, by masking). Cost: O(D) per :meth:`update`
    (two dot products), O(1) per :meth:`fit`.

    Args:
        beta: EMA weight of the old values (default 0.5, as full OGR; the paper's own values are not
            reproduced).
        sigma0: prior variance (default 1).
        h_prior: prior curvature along the direction (a float, default 0).
        mean_init: ``"first"`` (default: ``x = θ·u`` is not centred at 0, so a phantom observation at 0
            would bias the first fits) or ``"zero"``.
        ridge_rel: ridge-floor ``δ_rel`` (None: the dtype's default).
        ridge_abs: ridge-floor ``δ_abs`` (None: the dtype's default).
        dtype: of the state.
        device: of the state.

    Raises:
        TypeError: ``h_prior`` not a real number.
        ValueError: other arguments out of range.

    References:
        J. Duda, arXiv:1907.07063; ``docs/algorithms/ogr.md``.
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
        """Validate the arguments and set up the state (see the class docstring)."""
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
        """The state's dtype."""
        return self._line.dtype

    @torch.no_grad()
    def update(self, theta: Tensor, g: Tensor, direction: Tensor) -> None:
        """Observe ``x = θ·u``, ``y = g·u`` with ``u = direction/‖direction‖``.

        Args:
            theta: the position, flat, of the estimator's dtype.
            g: the gradient, shaped like ``theta``.
            direction: the direction ``u`` (normalised here), shaped like ``theta``.

        Raises:
            TypeError, ValueError: inputs of the wrong type, shape or dtype.
        """
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
        """The curvature along the direction and the vertex coordinate.

        The saddle-free step along ``u`` is ``x ← x − y/|λ|``: towards ``p`` for ``λ > 0``, away from it for
        ``λ < 0``.

        Returns:
            ``(λ, p)`` as 0-dim tensors. ``p`` is a coordinate along ``u`` (in units of ``x = θ·u``): the
            vertex on the line through ``θ`` is ``θ + (p − θ·u) u``. ``p`` is defined only where ``λ ≠ 0``;
            where ``λ = 0`` (or ``ȳ/λ`` overflows) it is ``x̄`` (pseudo-inverse convention).
        """
        lam = self._line.diagonal()
        return lam[0], self._line.zero_gradient_point(lam)[0]

    def state_dict(self) -> dict[str, Tensor]:
        """The four averages (``theta_mean`` = x̄, ``g_mean`` = ȳ, ``sigma``, ``cross``), w, count."""
        return self._line.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore a :meth:`state_dict`.

        Args:
            state: from :meth:`state_dict`.

        Raises:
            ValueError: other keys or shapes.
        """
        self._line.load_state_dict(state)
