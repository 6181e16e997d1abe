"""AdaHesScale and AdaHesScaleGN: Adam-style steps preconditioned by a HesScale Hessian diagonal.

The curvature comes from :mod:`hessopt.curvature.hesscale`: hooks on the model, set up once with
:meth:`AdaHesScale.attach`, compute the diagonal during the ordinary ``loss.backward()``; ``step()``
consumes it. The training loop::

    opt = AdaHesScale(model.parameters())
    opt.attach(model, loss_fn)      # loss_fn: the loss module the loop calls, e.g. nn.CrossEntropyLoss()
    for x, y in loader:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

References: Elsayed & Mahmood, arXiv:2210.11639 (AdaHesScale, AdaHesScaleGN); Elsayed et al.,
arXiv:2406.03276 (variants, step-size scaling); docs/algorithms/hesscale.md (equations, defaults and
the measurement behind them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from hessopt.curvature import hesscale

from .base import HessoptOptimizer
from .checks import check_choice, check_nonnegative, check_positive, check_unit_interval

__all__ = ["VARIANTS", "AdaHesScale", "AdaHesScaleGN"]

#: ``variant`` values: what the second moment averages and whether its square root is taken.
VARIANTS = ("adam", "abs_sqrt", "abs", "max")

# Defaults measured against torch.optim.Adam's on seven MLP/CNN/autoencoder problems
# (docs/algorithms/hesscale.md, "Defaults"); the public code's are lr 1e-5, eps 1e-8.
DEFAULT_LR = 2e-3
DEFAULT_EPS = 1e-3

_HYPERPARAMETERS = (
    "lr", "betas", "eps", "weight_decay", "variant", "delta", "max_scale", "curvature", "nonfinite",
)  # fmt: skip
_SHARED = ("delta", "max_scale", "curvature", "nonfinite")  # one value for all groups


class AdaHesScale(HessoptOptimizer):
    """Adam with the squared HesScale diagonal in place of the squared gradient (arXiv:2210.11639).

    Per parameter, with ``h_t`` the curvature diagonal of the mini-batch loss at ``θ_{t-1}``::

        m_t = β1 m_{t-1} + (1 - β1) g_t
        v_t = β2 v_{t-1} + (1 - β2) φ(h_t)                 φ(h) = h², |h|, |h| or max(h, 0) by variant
        θ_t = θ_{t-1}(1 - lr·wd) - lr · (m_t / (1 - β1^t)) / (ψ(v_t / (1 - β2^t)) + ε)

    with ``ψ = sqrt`` for variants ``"adam"`` and ``"abs_sqrt"`` and the identity for ``"abs"`` and
    ``"max"`` (power-1 steps ``g/|h|``; arXiv:2406.03276 calls ``"abs"`` AdaHesScale). With
    ``delta``, the step is scaled by ``κ = min(max_scale, sqrt(2 δ / Σ D u²))`` over all parameters, where
    ``u`` is the unscaled step and ``D = ψ(v̂)`` the curvature magnitude (arXiv:2406.03276's step-size
    scaling; ``κ = max_scale`` when ``Σ D u² = 0``).

    The step ``g/(sqrt(v̂) + ε)`` is a fraction ``lr`` of a damped diagonal Newton step on ``|h|``, so ``lr``
    is dimensionless (Adam's is in parameter units); ``ε`` is a damping in curvature units (see ``eps``).

    Args:
        params: parameters or param groups.
        lr: step size, the fraction of a (damped) diagonal Newton step (default 2e-3, measured against
            Adam's defaults on MLPs, CNNs and an autoencoder; the public code's 1e-5 trains far slower;
            docs/algorithms/hesscale.md, "Defaults"). 0 is allowed (no update). Per group.
        betas: ``(β1, β2)``, each in [0, 1) (default (0.9, 0.999), the public code's). Per group.
        eps: damping added to the denominator, >= 0, in curvature units (default 1e-3; the public code's
            1e-8 leaves the step ``g/|h|`` undamped, and since a diagonal Newton step on a wide layer
            overshoots by about the layer's fan-in, it collapsed a ReLU CNN with a 3136-input dense layer
            at every learning rate tried; coordinates with curvature far below ``eps`` take
            momentum-SGD steps of size ``lr/eps``). With 0, a coordinate whose curvature average is
            exactly 0 is not moved. Per group.
        weight_decay: decoupled weight decay (``θ ← θ(1 - lr·wd)``), >= 0 with ``lr·wd <= 1`` (default 0).
            Per group.
        variant: ``"adam"`` (default), ``"abs_sqrt"``, ``"abs"`` or ``"max"`` (see above). Per group.
        delta: step-size scaling trust radius δ > 0, or None (default: off). Same in all groups.
        max_scale: upper bound of the scaling κ, > 0 (default 1). Same in all groups.
        curvature: the diagonal consumed: ``"hesscale"`` (default), ``"hesscale_gn"`` (HesScaleGN) or
            ``"bl89"``; :meth:`attach` extends the model accordingly. Same in all groups.
        nonfinite: ``"skip"`` (default) or ``"raise"`` for a non-finite loss, gradient or curvature;
            see :mod:`hessopt.optim.base`.

    Raises:
        ValueError: an argument out of range (the message names it).

    State per parameter: ``step`` (int64), ``exp_avg``, ``exp_curvature``; with ``delta``, the last κ in
    ``flat_state()["scale"]``. ``exp_curvature`` is kept at or above a floor so small that no update
    changes by a bit (its square root is below half an ulp of ``eps``); ``h²`` scales like the fourth power
    of the gradient, so deep float32 networks would otherwise fill it with subnormal numbers and zeros,
    whose ``sqrt`` is tens of times slower on CPUs. (With ``eps = 0``, subnormal entries are set to 0.)
    Cost per step beyond Adam's: the curvature pass during ``backward()`` (about one more backward pass,
    see :mod:`hessopt.curvature.hesscale`) and two element-wise passes.
    Under ``torch.distributed`` (DistributedDataParallel), the per-process diagonals are averaged with an
    all-reduce before use, so the step matches one process on the concatenated batch.

    References:
        Elsayed & Mahmood, arXiv:2210.11639 (AdaHesScale); Elsayed, Farrahi, Dangel & Mahmood,
        arXiv:2406.03276 (variants, scaling); docs/algorithms/hesscale.md.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = DEFAULT_LR,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = DEFAULT_EPS,
        weight_decay: float = 0.0,
        *,
        variant: str = "adam",
        delta: float | None = None,
        max_scale: float = 1.0,
        curvature: str = "hesscale",
        nonfinite: str = "skip",
    ) -> None:
        """Validate the hyper-parameters (see the class docstring) and build the param groups."""
        defaults = self._validated(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            variant=variant,
            delta=delta,
            max_scale=max_scale,
            curvature=curvature,
            nonfinite=nonfinite,
        )
        super().__init__(params, defaults)

    @staticmethod
    def _validated(**hp: Any) -> dict[str, Any]:
        out = dict(hp)
        out["lr"] = check_nonnegative("lr", hp["lr"])
        betas = hp["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        out["betas"] = (check_unit_interval("betas[0]", betas[0]), check_unit_interval("betas[1]", betas[1]))
        out["eps"] = check_nonnegative("eps", hp["eps"])
        out["weight_decay"] = check_nonnegative("weight_decay", hp["weight_decay"])
        if out["lr"] * out["weight_decay"] > 1.0:
            raise ValueError(
                f"weight_decay * lr must be at most 1, got weight_decay={hp['weight_decay']!r} with lr="
                f"{hp['lr']!r}: the decoupled decay θ ← θ(1 - lr·weight_decay) would flip the parameters' "
                "sign and grow them every step; weight decays are usually 1e-4 to 1e-1"
            )
        check_choice("variant", hp["variant"], VARIANTS)
        if hp["delta"] is not None:
            out["delta"] = check_positive("delta", hp["delta"])
        out["max_scale"] = check_positive("max_scale", hp["max_scale"])
        check_choice("curvature", hp["curvature"], hesscale.METHODS)
        check_choice("nonfinite", hp["nonfinite"], ("skip", "raise"))
        return out

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """As :meth:`torch.optim.Optimizer.add_param_group`, validating the group's hyper-parameters."""
        merged = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
        self._validated(**{k: merged[k] for k in _HYPERPARAMETERS})
        super().add_param_group(param_group)
        try:
            for name in _SHARED:
                self.uniform_hyperparameter(name)
        except ValueError:
            self.param_groups.pop()
            raise

    @property
    def curvature(self) -> str:
        """The curvature method this optimizer consumes (``"hesscale"``, ``"hesscale_gn"`` or ``"bl89"``)."""
        return self.uniform_hyperparameter("curvature")

    def attach(self, model: nn.Module, loss_fn: nn.Module) -> hesscale.HesScale:
        """Extend ``model`` so that ``loss_fn(model(x), y).backward()`` computes this optimizer's curvature.

        Args:
            model: the network whose parameters this optimizer updates (DDP wrappers are unwrapped).
            loss_fn: the loss module the training loop calls on ``model(x)``.

        Returns:
            The extension (its ``remove()`` detaches the hooks). The optimizer keeps no reference to it.

        Raises:
            hessopt.curvature.hesscale.UnsupportedModelError: a module or function without a HesScale rule.
        """
        return hesscale.extend(model, loss_fn, self.curvature)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        """One step with the curvature computed during the last ``backward()``; returns the closure's loss.

        Raises:
            RuntimeError: a parameter has a gradient but no fresh curvature (the model is not attached,
                or the loss was not computed with the attached loss module, or ``step()`` was called twice).
            FloatingPointError: with ``nonfinite="raise"``, a non-finite loss, gradient or curvature.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        method = self.curvature
        delta = self.uniform_hyperparameter("delta")
        max_scale = self.uniform_hyperparameter("max_scale")
        work, located = [], []
        for gi, group in enumerate(self.param_groups):
            hp = self._validated(**{k: group[k] for k in _HYPERPARAMETERS})
            params, curv = [], []
            for pi, p in enumerate(group["params"]):
                if p.grad is None:
                    hesscale.take_diagonal(p)  # a diagonal without a gradient is stale
                    continue
                if p.grad.is_sparse:
                    raise TypeError(f"{type(self).__name__} does not support sparse gradients")
                h = hesscale.take_diagonal(p, method)
                if h is None:
                    raise RuntimeError(
                        f"{type(self).__name__}.step(): parameter {pi} of param group {gi} (shape "
                        f"{tuple(p.shape)}) has a gradient but no fresh {method!r} curvature. Set up once "
                        "with opt.attach(model, loss_fn), compute the loss with that loss module on "
                        "model(x), and call backward() before every step()"
                    )
                params.append(p)
                curv.append(h)
                located.append((gi, pi, p, h))
            if params:
                work.append((hp, params, curv))
        if not work:
            return loss
        curv_all = [h for *_, hs in work for h in hs]
        _all_reduce_mean(curv_all)
        grads = [p.grad for _, ps, _ in work for p in ps]
        ok, read = self._finite(loss, located, grads, curv_all)
        if read and not bool(ok):
            return loss
        gate = None if read else ok
        updates = [self._group_update(hp, ps, hs, gate, scaled=delta is not None) for hp, ps, hs in work]
        if delta is not None:
            self._apply_scaled([ps for _, ps, _ in work], updates, delta, max_scale, gate)
        return loss

    def _finite(self, loss, located, grads, curv) -> tuple[Tensor, bool]:
        """The non-finite policy: ``(flag, read)``; ``read`` means the flag was read on the host.

        One summary: the sum of every gradient and curvature tensor and the loss, finite exactly when every
        entry is (or a sum overflows, which counts as non-finite). On a CPU the flag is read (free there);
        elsewhere it gates the update as a tensor, except on steps that create state (which then starts
        from a finite observation).
        """
        sums = [t.sum() for t in grads] + [h.sum() for h in curv]
        if loss is not None:
            sums.append(torch.as_tensor(loss, device=grads[0].device).detach().sum().to(sums[0].dtype))
        ok = torch.isfinite(torch.stack(sums)).all()
        if self.uniform_hyperparameter("nonfinite") == "raise":
            if not bool(ok):
                raise FloatingPointError(self._describe(loss, located))
            return ok, True
        if grads[0].device.type == "cpu" or any("exp_avg" not in self.state[p] for _, _, p, _ in located):
            if not bool(ok):
                self.add_to_counter("nonfinite_skips", 1)
            return ok, True
        self.add_to_counter("nonfinite_skips", ~ok)
        return ok, False

    def _describe(self, loss, located) -> str:
        name = type(self).__name__
        if loss is not None and not bool(torch.isfinite(torch.as_tensor(loss)).all()):
            return f"{name}: the loss is not finite ({float(torch.as_tensor(loss).reshape(-1)[0])})"
        for what in ("gradient", "HesScale curvature"):
            for gi, pi, p, h in located:
                bad = int((~torch.isfinite(h if what != "gradient" else p.grad)).sum())
                if bad:
                    return (
                        f"{name}: the {what} of parameter {pi} of param group {gi} (shape {tuple(p.shape)}) "
                        f"has {bad} non-finite entries"
                    )
        return f"{name}: the gradient or curvature entries are so large that their sum overflows"

    def _group_update(self, hp, params, curv, gate, *, scaled: bool) -> list[list[Tensor]] | None:
        """Moments and (unless ``scaled``) the parameter update of one group; ``[u, D]`` when ``scaled``.

        ``gate`` None: the step is known to be finite; bias corrections are host scalars per distinct step
        count (step counts are read, free on a CPU). Otherwise ``gate`` (0-dim bool) masks everything on the
        device: EMA rates, step increments and the update are multiplied by it, so a non-finite step leaves
        parameters and state unchanged without a host sync.
        """
        states = [self.state[p] for p in params]
        for p, st in zip(params, states, strict=True):
            if "exp_avg" not in st:
                st["step"] = torch.zeros((), dtype=torch.int64, device=p.device)
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["exp_curvature"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if gate is not None:
            return _gated_update(hp, params, curv, states, gate, scaled)
        steps = [st["step"] for st in states]
        torch._foreach_add_(steps, 1)
        by_count: dict[int, list[int]] = {}
        for i, count in enumerate(steps):
            by_count.setdefault(int(count), []).append(i)
        out: list[list[Tensor]] = [[None] * len(params), [None] * len(params)]  # type: ignore[list-item]
        for count, idx in by_count.items():
            sub = _update(
                hp,
                [params[i] for i in idx],
                [params[i].grad for i in idx],
                [curv[i] for i in idx],
                [states[i]["exp_avg"] for i in idx],
                [states[i]["exp_curvature"] for i in idx],
                count,
                scaled,
            )
            if sub is not None:
                for j, i in enumerate(idx):
                    out[0][i], out[1][i] = sub[0][j], sub[1][j]
        return out if scaled else None

    def _apply_scaled(self, param_lists, updates, delta: float, max_scale: float, gate) -> None:
        """Step-size scaling: one κ for all parameters, ``θ ← θ - κ u``."""
        total = None
        for u, mag in updates:
            sq = torch._foreach_mul(u, u)
            torch._foreach_mul_(sq, mag)
            s = torch.stack([x.sum() for x in sq]).sum()
            total = s if total is None else total + s
        kappa = torch.clamp(torch.sqrt((2.0 * delta) / total), max=max_scale)
        head = self.flat_state()
        head["scale"] = kappa if gate is None else torch.where(gate, kappa, head.get("scale", kappa))
        for params, (u, _) in zip(param_lists, updates, strict=True):
            torch._foreach_mul_(u, [kappa] * len(u))
            torch._foreach_sub_(params, u)


def _second_moment(v: list[Tensor], curv: list[Tensor], variant: str, rate) -> None:
    """``v ← β2 v + (1 - β2) φ(h)`` in place (``rate = 1 - β2``, a float or per-tensor 0-dim tensors)."""
    if variant == "adam":
        if isinstance(rate, float):
            torch._foreach_mul_(v, 1.0 - rate)
            torch._foreach_addcmul_(v, curv, curv, value=rate)
            return
        phi = torch._foreach_mul(curv, curv)
    elif variant == "max":
        phi = torch._foreach_clamp_min(curv, 0.0)
    else:
        phi = torch._foreach_abs(curv)
    torch._foreach_lerp_(v, phi, rate)


def _curvature_floor(offset: float, rooted: bool, dtype: torch.dtype) -> float:
    """The largest ``v`` that leaves ``ψ(v) + offset`` equal to ``offset`` after rounding (0 if subnormal).

    ``ψ(v) ≤ offset·ε/8`` (ε the dtype's machine epsilon) is below half an ulp of ``offset``, so flooring the
    curvature average there changes no update bit; it keeps the state out of subnormal numbers and out of
    the slow special-value paths of ``sqrt`` near zero.
    """
    info = torch.finfo(dtype)
    bound = offset * info.eps / 8
    floor = min(bound * bound if rooted else bound, info.max)
    return floor if floor >= info.tiny else 0.0


def _update(hp, params, grads, curv, m, v, count: int, scaled: bool) -> list[list[Tensor]] | None:
    """One ungated update of tensors sharing the step count ``count`` (host-scalar bias corrections).

    ``m̂/(ψ(v̂) + ε)`` is evaluated as ``m / (ψ(v) + ε c2) · (c2 / (1 - β1^t))`` with ``c2 = sqrt(1 - β2^t)``
    (ψ = sqrt) or ``1 - β2^t`` (ψ = identity): the same value with Adam's pass count (lerp, two passes for
    ``v``, sqrt, add, addcdiv). Tensor by tensor, so that each one's passes run while it is in cache (on a
    CPU, twice as fast as the multi-tensor kernels for layers of a few hundred thousand entries).
    """
    beta1, beta2 = hp["betas"]
    lr, eps, wd, variant = hp["lr"], hp["eps"], hp["weight_decay"], hp["variant"]
    bc1, bc2 = 1.0 - beta1**count, 1.0 - beta2**count
    rooted = variant in ("adam", "abs_sqrt")
    c2 = math.sqrt(bc2) if rooted else bc2
    step = lr * c2 / bc1
    us, magnitudes = [], []
    floor = _curvature_floor(eps * c2, rooted, params[0].dtype)
    for p, g, h, m_, v_ in zip(params, grads, curv, m, v, strict=True):
        m_.lerp_(g, 1.0 - beta1)
        if variant == "adam":
            v_.mul_(beta2).addcmul_(h, h, value=1.0 - beta2)
        else:
            v_.lerp_(h.clamp_min(0.0) if variant == "max" else h.abs(), 1.0 - beta2)
        if floor > 0:
            v_.clamp_min_(floor)
        else:
            torch.nn.functional.threshold_(v_, torch.finfo(v_.dtype).tiny, 0.0)
        denom = v_.sqrt() if rooted else v_.clone()
        if scaled:
            magnitudes.append(denom / c2)
        denom.add_(eps * c2)
        if eps == 0:  # a coordinate without curvature is not moved
            denom = torch.where(denom > 0, denom, torch.inf)
        if wd:
            p.mul_(1.0 - lr * wd)
        if scaled:
            us.append(torch.div(m_, denom).mul_(step))
        else:
            p.addcdiv_(m_, denom, value=-step)
    return [us, magnitudes] if scaled else None


def _gated_update(hp, params, curv, states, gate: Tensor, scaled: bool) -> list[list[Tensor]] | None:
    """The update with the finiteness flag ``gate`` kept on the device (see ``_group_update``)."""
    beta1, beta2 = hp["betas"]
    lr, eps, wd, variant = hp["lr"], hp["eps"], hp["weight_decay"], hp["variant"]
    n, dtype = len(params), params[0].dtype
    ok = gate.to(dtype)
    grads = [torch.where(gate, p.grad, 0.0) for p in params]
    curv = [torch.where(gate, h, 0.0) for h in curv]
    steps = [st["step"] for st in states]
    m = [st["exp_avg"] for st in states]
    v = [st["exp_curvature"] for st in states]
    torch._foreach_add_(steps, [gate.to(torch.int64)] * n)
    if wd:
        torch._foreach_mul_(params, [1.0 - ok * (lr * wd)] * n)
    torch._foreach_lerp_(m, grads, [ok * (1.0 - beta1)] * n)
    _second_moment(v, curv, variant, [ok * (1.0 - beta2)] * n)
    info = torch.finfo(dtype)
    tiny = info.tiny
    t = [s.to(dtype) for s in steps]
    bc1 = torch._foreach_pow(beta1, t)
    torch._foreach_neg_(bc1)
    torch._foreach_add_(bc1, 1.0)
    torch._foreach_clamp_min_(bc1, tiny)  # > 0 also after a skipped first step
    bc2 = torch._foreach_pow(beta2, t)
    torch._foreach_neg_(bc2)
    torch._foreach_add_(bc2, 1.0)
    torch._foreach_clamp_min_(bc2, tiny)
    rooted = variant in ("adam", "abs_sqrt")
    for vt, b2 in zip(v, bc2, strict=True):  # the floor of _curvature_floor, as a device scalar
        bound = eps * (b2.sqrt() if rooted else b2) * (info.eps / 8)
        floor = bound * bound if rooted else bound
        vt.clamp_min_(torch.where(floor >= tiny, floor, 0.0))
        torch.nn.functional.threshold_(vt, tiny, 0.0)
    denom = torch._foreach_div(v, bc2)  # v̂
    if rooted:
        torch._foreach_sqrt_(denom)
    magnitude = [d.clone() for d in denom] if scaled else None
    torch._foreach_add_(denom, eps)
    if eps == 0:
        denom = [torch.where(d > 0, d, torch.inf) for d in denom]
    coef = torch._foreach_reciprocal(bc1)  # lr·ok/bc1
    torch._foreach_mul_(coef, [ok * lr] * n)
    if scaled:
        u = torch._foreach_div(m, denom)
        torch._foreach_mul_(u, coef)
        return [u, magnitude]
    # p += m / (denom / (-coef)): coef = 0 (lr = 0 or a skipped step) gives denom / -0 = -inf, a zero step
    torch._foreach_neg_(coef)
    torch._foreach_div_(denom, coef)
    torch._foreach_addcdiv_(params, m, denom)
    return None


def _all_reduce_mean(tensors: list[Tensor]) -> None:
    """Average ``tensors`` over the default ``torch.distributed`` group in place (no-op without one)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


class AdaHesScaleGN(AdaHesScale):
    """:class:`AdaHesScale` with the HesScaleGN diagonal (``curvature="hesscale_gn"``; arXiv:2210.11639).

    HesScaleGN drops HesScale's second-derivative terms: a non-negative diagonal Gauss-Newton
    approximation, slightly cheaper to compute. Arguments and defaults as :class:`AdaHesScale`.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = DEFAULT_LR,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = DEFAULT_EPS,
        weight_decay: float = 0.0,
        *,
        variant: str = "adam",
        delta: float | None = None,
        max_scale: float = 1.0,
        curvature: str = "hesscale_gn",
        nonfinite: str = "skip",
    ) -> None:
        """As :class:`AdaHesScale`, with ``curvature="hesscale_gn"`` by default."""
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            variant=variant,
            delta=delta,
            max_scale=max_scale,
            curvature=curvature,
            nonfinite=nonfinite,
        )
