"""Hessian-free (Martens 2010) and block-diagonal Hessian-free (Zhang et al. 2017) as torch optimizers.

One class, :class:`BlockDiagonalHessianFree`, covers both: ``blocks="layers"`` (default) solves one damped
Gauss-Newton system per module with parameters (BDHF, arXiv:1712.07296), ``blocks="single"`` solves one
system over all parameters (Martens' HF; :class:`HessianFree` is that default). The user loop::

    opt = BlockDiagonalHessianFree(model, loss_fn=nn.CrossEntropyLoss())
    for inputs, targets in loader:
        loss = opt.step(inputs, targets)

The optimizer evaluates the model and the loss itself (the curvature products need both), so ``step``
takes the batch instead of a closure. The algorithm, its defaults and their sources:
docs/algorithms/hessian-free.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from hessopt.curvature import flat
from hessopt.curvature.cg import backtrack, backtracking_grid, block_cg
from hessopt.curvature.damping import levenberg_marquardt, reduction_ratio, undamped_model_change
from hessopt.curvature.linesearch import armijo
from hessopt.curvature.output_hessians import describe_loss, output_hessian
from hessopt.curvature.products import (
    BACKENDS,
    CURVATURES,
    JVP_MODES,
    BlockCurvature,
    ModelFunction,
    check_deterministic,
    check_logits_output,
    example_gradient_squares,
)

from .base import HessoptOptimizer
from .checks import (
    check_choice,
    check_in_range,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_unit_interval,
)

__all__ = ["BLOCK_MODES", "BlockDiagonalHessianFree", "HessianFree"]

BLOCK_MODES = ("layers", "single")
PRECONDITIONERS = ("martens", None)
LINE_SEARCHES = ("armijo", None)
RHO_MODELS = ("block", "full")

# Hyper-parameters that must be equal in all param groups (the step couples all parameters through the
# shared damping, line search and reduction ratio); weight_decay may differ per group.
_SHARED = (
    "lr",
    "damping",
    "damping_bounds",
    "adapt_damping",
    "curvature_fraction",
    "curvature",
    "backend",
    "jvp",
    "cg_max_iterations",
    "cg_min_iterations",
    "cg_progress_eps",
    "cg_tolerance",
    "preconditioner",
    "preconditioner_exponent",
    "backtracking",
    "line_search",
    "armijo_c",
    "armijo_shrink",
    "armijo_max_shrinks",
    "warm_start",
    "rho_model",
    "nonfinite",
)
# Memory budget (entries) of one chunk of per-example gradients for the preconditioner.
_EXAMPLE_CHUNK_ENTRIES = 2**25


def _rows(inputs: tuple[Tensor, ...]) -> int:
    return inputs[0].shape[0]


def _prefix(value: Any, rows: int) -> Any:
    if value is None:
        return None
    if isinstance(value, tuple):
        return tuple(v[:rows] for v in value)
    return value[:rows]


class BlockDiagonalHessianFree(HessoptOptimizer):
    """Block-diagonal Hessian-free optimizer (BDHF); with ``blocks="single"`` Martens' Hessian-free (HF).

    One :meth:`step` on a batch ``(inputs, targets)``:

    1. loss ``f`` and gradient ``g`` on the batch (one forward and backward pass through ``model``; ``.grad``
       holds ``g`` afterwards); with ``weight_decay`` ``kappa`` the objective is ``f + kappa/2 ||theta||^2``;
    2. a curvature operator on the curvature batch, the first ``ceil(curvature_fraction * n)`` rows: the
       block-diagonal GGN ``G_bb`` (or the loss Hessian), its graphs recorded once and reused by every CG
       iteration (:class:`~hessopt.curvature.products.BlockCurvature`);
    3. preconditioned CG on ``(G_bb + (lambda + kappa) I) p_b = -g_b`` for all blocks in lock-step
       (:func:`~hessopt.curvature.cg.block_cg`), from ``warm_start *`` the previous final iterate, optionally
       with Martens' diagonal preconditioner ``(mean_i g_i^2 + lambda + kappa)^(3/4)``;
    4. CG backtracking on the batch over the iterates stored at iterations 5, 7, 9, 11, 15, ...;
    5. the reduction ratio ``rho`` with the undamped block model, and the Levenberg-Marquardt update of
       ``lambda`` (x3/2 if ``rho < 1/4``, x2/3 if ``rho > 3/4``), clamped to ``damping_bounds``;
    6. Armijo backtracking line search from ``alpha = 1`` (``c = 1e-2``, factor 0.8, at most 60 shrinks,
       else the step is rejected); ``theta <- theta + lr * alpha * p``.

    Args:
        params: the model (an ``nn.Module``: all its parameters that require grad, and ``model`` is set to
            it), or an iterable of parameters or param groups of ``model``.
        loss_fn: loss on the model's output and the targets, ``loss_fn(outputs, targets)``, reduction
            ``"mean"`` or ``"sum"``. The model must return logits: ``nn.CrossEntropyLoss``,
            ``nn.MSELoss``, ``nn.BCEWithLogitsLoss`` (and their functional forms) get closed-form output
            Hessians, any other loss reverse-over-reverse products. Must be picklable for
            ``copy.deepcopy``/``pickle`` of the optimizer (not a lambda).
        model: the model, required when ``params`` is not a module. May be a
            ``DistributedDataParallel`` wrapper (then gradients, curvature products, preconditioner and loss
            values are averaged over the processes, so every process takes the same step).
        blocks: ``"layers"`` (default: one block per module with parameters; a recurrent module's layers
            are separate blocks; tied parameters share a block), ``"single"`` (one block: HF), or a
            sequence of parameter lists that partitions the optimizer's parameters.
        lr: multiplies the accepted step (default 1, Martens' unit step). 0 makes ``step`` a no-op that
            only evaluates the loss (a scheduler may produce it).
        damping: initial ``lambda`` (default 1.0 for the mean-reduced loss; Martens used 45 for his
            autoencoders). For ``reduction="sum"`` scale it by the loss's mean divisor.
        damping_bounds: ``(lambda_min, lambda_max)``, default ``(1e-8, 1e8)``; clamps are counted.
        adapt_damping: apply the Levenberg-Marquardt rule (default True); False keeps ``lambda`` fixed.
        curvature_fraction: fraction of the batch's rows used for curvature products (default 1/4, the
            fraction of Zhang et al.'s Fig. 3); the first rows of the batch, so shuffle the data.
        curvature: ``"ggn"`` (default; positive semi-definite) or ``"hessian"`` (the loss Hessian; CG stops
            at non-positive curvature).
        backend: ``"loop"`` (default; the blocks one after another) or ``"vmap"`` (all blocks batched over
            masked tangents; more arithmetic, chosen only where measured faster).
        jvp: ``"reverse"`` (default; ``J v`` by two reverse passes through the recorded graph) or
            ``"forward"`` (forward-mode AD, recomputes the forward pass in every product; for operations
            without double-backward support).
        cg_max_iterations: CG cap per block (default 250, Martens 2010).
        cg_min_iterations: iterations before a "progress" or "tolerance" stop (default 1).
        cg_progress_eps: ``eps`` of Martens' relative-progress stopping rule (default 5e-4); None disables.
        cg_tolerance: relative-residual stopping tolerance (default None: off).
        preconditioner: ``"martens"`` (Martens' ``(mean_i g_i^2 + lambda + kappa)^(3/4)`` from per-example
            gradients on the curvature batch) or None (default: measured inert for mean-reduced losses,
            where ``mean_i g_i^2`` is orders of magnitude below ``lambda``, at a cost of several gradient
            evaluations per step; docs/algorithms/hessian-free.md).
        preconditioner_exponent: the exponent ``alpha`` of the preconditioner (default 0.75).
        backtracking: CG-iterate backtracking (default True).
        line_search: ``"armijo"`` (default) or None (take the backtracked step).
        armijo_c: sufficient-decrease constant (default 1e-2).
        armijo_shrink: step-length factor per Armijo reduction (default 0.8).
        armijo_max_shrinks: reductions before the step is rejected (default 60).
        warm_start: ``zeta`` in ``x0 = zeta * x_final(previous step)`` (default 0.95; 0 starts CG at 0).
        rho_model: ``"block"`` (default; the block-diagonal model CG minimised, free) or ``"full"`` (the full
            GGN model, one extra forward-mode pass on the curvature batch).
        weight_decay: L2 coefficient ``kappa`` (per param group; default 0), part of the objective, the
            curvature and the preconditioner as in Martens' ``weightcost``.
        check_determinism: on the first step, check that two builds of the curvature operator agree (raises
            for train-mode Dropout) and that the model returns logits (default True).
        nonfinite: ``"skip"`` (default) or ``"raise"`` for a non-finite loss, gradient or preconditioner; see
            :mod:`hessopt.optim.base`.

    State: ``flat_state()`` (the state of the first parameter) holds ``damping`` (0-dim, the parameters'
    dtype) and int64 counters ``steps``, ``rejected_steps``, ``nonfinite_rejections``,
    ``line_search_failures``, ``damping_clamps``, ``cg_products`` (block products, all blocks) and
    ``nonfinite_skips``; each parameter's state holds its ``warm_start`` (the last final CG iterate). A
    step whose trial point ``theta + p`` has a non-finite loss is rejected: the parameters and the warm
    start stay bit for bit, ``damping`` grows by 3/2 and the counters record it. :attr:`last_step` holds
    the diagnostics of the last step (plain Python values, not state).

    Raises:
        ValueError: for invalid arguments (naming the argument), parameters that are not the model's, or a
            block partition that does not cover the parameters exactly.

    References:
        Martens (2010), "Deep learning via Hessian-free optimization", ICML (Sec. 4.1-4.7); Martens &
        Sutskever (2011), "Learning recurrent neural networks with Hessian-free optimization", ICML; Martens
        & Sutskever (2012), "Training deep and recurrent networks with Hessian-free optimization", Neural
        Networks: Tricks of the Trade, Ch. 20; Zhang, Xiong, Bradbury, Socher (2017), "Block-diagonal
        Hessian-free optimization for training neural networks", arXiv:1712.07296; Schraudolph (2002),
        Neural Computation 14(7); docs/algorithms/hessian-free.md.
    """

    _default_blocks: str | None = "layers"

    #: kept by copies and pickles besides the state and groups: the model, the loss and the block layout
    persistent_attributes: ClassVar = (
        "model",
        "loss_fn",
        "_loss_spec",
        "check_determinism",
        "_blocks_spec",
        "_constructed",
        "_blocks",
        "_block_names",
        "_layout",
        "_sizes",
        "_checked",
        "last_step",
    )

    def __init__(
        self,
        params: nn.Module | Iterable[Any],
        *,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        model: nn.Module | None = None,
        blocks: str | Sequence[Sequence[Tensor]] | None = None,
        lr: float = 1.0,
        damping: float = 1.0,
        damping_bounds: tuple[float, float] = (1e-8, 1e8),
        adapt_damping: bool = True,
        curvature_fraction: float = 0.25,
        curvature: str = "ggn",
        backend: str = "loop",
        jvp: str = "reverse",
        cg_max_iterations: int = 250,
        cg_min_iterations: int = 1,
        cg_progress_eps: float | None = 5e-4,
        cg_tolerance: float | None = None,
        preconditioner: str | None = None,
        preconditioner_exponent: float = 0.75,
        backtracking: bool = True,
        line_search: str | None = "armijo",
        armijo_c: float = 1e-2,
        armijo_shrink: float = 0.8,
        armijo_max_shrinks: int = 60,
        warm_start: float = 0.95,
        rho_model: str = "block",
        weight_decay: float = 0.0,
        check_determinism: bool = True,
        nonfinite: str = "skip",
    ) -> None:
        """Validate the arguments and partition the parameters into blocks (see the class docstring)."""
        if isinstance(params, nn.Module):
            if model is not None and model is not params:
                raise ValueError("pass the model either as params or as model=, not two different modules")
            model = params
            params = [p for p in params.parameters() if p.requires_grad]
        if not isinstance(model, nn.Module):
            raise TypeError(
                "model must be the nn.Module whose parameters are optimized (pass BlockDiagonalHessianFree("
                f"model, loss_fn=...) or model=...), got {type(model).__name__}"
            )
        self.model = model
        self.loss_fn = loss_fn
        self._loss_spec = describe_loss(loss_fn)
        defaults = self._validated(
            lr=lr,
            damping=damping,
            damping_bounds=damping_bounds,
            adapt_damping=adapt_damping,
            curvature_fraction=curvature_fraction,
            curvature=curvature,
            backend=backend,
            jvp=jvp,
            cg_max_iterations=cg_max_iterations,
            cg_min_iterations=cg_min_iterations,
            cg_progress_eps=cg_progress_eps,
            cg_tolerance=cg_tolerance,
            preconditioner=preconditioner,
            preconditioner_exponent=preconditioner_exponent,
            backtracking=backtracking,
            line_search=line_search,
            armijo_c=armijo_c,
            armijo_shrink=armijo_shrink,
            armijo_max_shrinks=armijo_max_shrinks,
            warm_start=warm_start,
            rho_model=rho_model,
            weight_decay=weight_decay,
            nonfinite=nonfinite,
        )
        if not isinstance(check_determinism, bool):
            raise TypeError(f"check_determinism must be True or False, got {check_determinism!r}")
        self.check_determinism = check_determinism
        self._blocks_spec = self._default_blocks if blocks is None else blocks
        self._constructed = False
        super().__init__(params, defaults)
        self._constructed = True
        self._setup_blocks()
        self._hyperparameters()
        self._checked = False
        self.last_step: dict[str, Any] = {}

    # ----------------------------------------------------------------------------------- validation
    @staticmethod
    def _validated(**hp: Any) -> dict[str, Any]:
        out = dict(hp)
        out["lr"] = check_nonnegative("lr", hp["lr"])
        out["damping"] = check_positive("damping", hp["damping"])
        bounds = hp["damping_bounds"]
        if not (isinstance(bounds, Sequence) and len(bounds) == 2):
            raise ValueError(f"damping_bounds must be a pair (lambda_min, lambda_max), got {bounds!r}")
        low = check_positive("damping_bounds[0]", bounds[0])
        high = check_positive("damping_bounds[1]", bounds[1])
        if not low <= high:
            raise ValueError(f"damping_bounds must satisfy lambda_min <= lambda_max, got {bounds!r}")
        out["damping_bounds"] = (low, high)
        for name in ("adapt_damping", "backtracking"):
            if not isinstance(hp[name], bool):
                raise TypeError(f"{name} must be True or False, got {hp[name]!r}")
        out["curvature_fraction"] = check_in_range(
            "curvature_fraction", hp["curvature_fraction"], 0.0, 1.0, high_open=False
        )
        check_choice("curvature", hp["curvature"], CURVATURES)
        check_choice("backend", hp["backend"], BACKENDS)
        check_choice("jvp", hp["jvp"], JVP_MODES)
        out["cg_max_iterations"] = check_positive_int("cg_max_iterations", hp["cg_max_iterations"])
        out["cg_min_iterations"] = check_positive_int("cg_min_iterations", hp["cg_min_iterations"], minimum=0)
        for name in ("cg_progress_eps", "cg_tolerance"):
            if hp[name] is not None:
                out[name] = check_positive(name, hp[name])
        check_choice("preconditioner", hp["preconditioner"], PRECONDITIONERS)
        out["preconditioner_exponent"] = check_in_range(
            "preconditioner_exponent", hp["preconditioner_exponent"], 0.0, 1.0, high_open=False
        )
        check_choice("line_search", hp["line_search"], LINE_SEARCHES)
        out["armijo_c"] = check_in_range("armijo_c", hp["armijo_c"], 0.0, 1.0)
        out["armijo_shrink"] = check_in_range("armijo_shrink", hp["armijo_shrink"], 0.0, 1.0)
        out["armijo_max_shrinks"] = check_positive_int(
            "armijo_max_shrinks", hp["armijo_max_shrinks"], minimum=0
        )
        out["warm_start"] = check_unit_interval("warm_start", hp["warm_start"])
        check_choice("rho_model", hp["rho_model"], RHO_MODELS)
        out["weight_decay"] = check_nonnegative("weight_decay", hp["weight_decay"])
        return out

    def _hyperparameters(self) -> dict[str, Any]:
        """Shared hyper-parameters, checked equal across groups and valid (a scheduler may change lr)."""
        hp = {name: self.uniform_hyperparameter(name) for name in _SHARED}
        for group in self.param_groups:
            self._validated(**{**hp, "weight_decay": group["weight_decay"]})
        return hp

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (its parameters must belong to ``model``); the blocks are rebuilt for the new set."""
        super().add_param_group(param_group)
        if not getattr(self, "_constructed", False):
            return
        try:
            self._setup_blocks()
            self._hyperparameters()
        except (TypeError, ValueError):
            self.param_groups.pop()
            self._setup_blocks()
            raise

    # ----------------------------------------------------------------------------------- blocks
    @property
    def module(self) -> nn.Module:
        """The plain model (``model.module`` of a DistributedDataParallel wrapper)."""
        return self.model.module if isinstance(self.model, DistributedDataParallel) else self.model

    def _setup_blocks(self) -> None:
        """Map the optimizer's parameters to model names and partition them into blocks (flat layout)."""
        names = {id(p): n for n, p in self.module.named_parameters()}
        ours = self.parameters_in_order()
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                if id(p) not in names:
                    raise ValueError(
                        f"parameter {pi} of param group {gi} (shape {tuple(p.shape)}) is not a parameter of "
                        "model; the optimizer evaluates model itself, so it can only optimize its parameters"
                    )
                if not p.requires_grad:
                    raise ValueError(f"parameter {pi} of param group {gi} does not require grad")
        spec = self._blocks_spec
        if isinstance(spec, str):
            check_choice("blocks", spec, BLOCK_MODES)
            groups = [ours] if spec == "single" else self._layer_blocks(ours)
        else:
            groups = self._user_blocks(spec, ours)
        self._blocks: list[list[Tensor]] = groups
        self._block_names = [[names[id(p)] for p in block] for block in groups]
        self._layout = [p for block in groups for p in block]
        self._sizes = [sum(p.numel() for p in block) for block in groups]

    def _layer_blocks(self, ours: list[Tensor]) -> list[list[Tensor]]:
        wanted = {id(p) for p in ours}
        candidates: list[list[Tensor]] = []
        for module in self.module.modules():
            direct = [p for _, p in module.named_parameters(recurse=False) if id(p) in wanted]
            if not direct:
                continue
            if isinstance(module, nn.RNNBase):
                by_layer: dict[str, list[Tensor]] = {}
                for name, p in module.named_parameters(recurse=False):
                    if id(p) in wanted:
                        layer = name.rsplit("_l", 1)[-1].removesuffix("_reverse")
                        by_layer.setdefault(layer, []).append(p)
                candidates.extend(by_layer.values())
            else:
                candidates.append(direct)
        merged: list[list[Tensor]] = []  # tied parameters (in two modules) put their blocks together
        for block in candidates:
            ids = {id(p) for p in block}
            overlapping = [m for m in merged if ids & {id(p) for p in m}]
            for m in overlapping:
                merged.remove(m)
            union: list[Tensor] = []
            for p in [q for m in overlapping for q in m] + block:
                if all(p is not q for q in union):
                    union.append(p)
            merged.append(union)
        order = {id(p): i for i, p in enumerate(ours)}
        return sorted(merged, key=lambda b: min(order[id(p)] for p in b))

    @staticmethod
    def _user_blocks(spec: Any, ours: list[Tensor]) -> list[list[Tensor]]:
        if not isinstance(spec, Sequence) or not all(isinstance(b, Sequence) for b in spec) or not spec:
            raise ValueError(
                "blocks must be 'layers', 'single' or a non-empty sequence of parameter lists, got "
                f"{type(spec).__name__}"
            )
        seen: dict[int, int] = {}
        for bi, block in enumerate(spec):
            if not block:
                raise ValueError(f"blocks[{bi}] is empty")
            for p in block:
                if id(p) in seen:
                    raise ValueError(f"blocks: a parameter appears in blocks {seen[id(p)]} and {bi}")
                seen[id(p)] = bi
        missing = [i for i, p in enumerate(ours) if id(p) not in seen]
        extra = set(seen) - {id(p) for p in ours}
        if missing or extra:
            raise ValueError(
                "blocks must partition the optimizer's parameters exactly: "
                f"{len(missing)} parameter(s) in no block, {len(extra)} not optimized by this optimizer"
            )
        return [list(block) for block in spec]

    def block_sizes(self) -> list[int]:
        """Number of parameters in each block, in block order."""
        return list(self._sizes)

    def block_names(self) -> list[list[str]]:
        """The model's names of each block's parameters, in block order."""
        return [list(b) for b in self._block_names]

    # ----------------------------------------------------------------------------------- state
    def _state(self) -> dict[str, Any]:
        st = self.flat_state()
        if "damping" not in st:
            p0 = self.param_groups[0]["params"][0]
            st["damping"] = torch.tensor(self.param_groups[0]["damping"], dtype=p0.dtype, device=p0.device)
            for key in (
                "steps",
                "rejected_steps",
                "nonfinite_rejections",
                "line_search_failures",
                "damping_clamps",
                "cg_products",
                "nonfinite_skips",
            ):
                self._counter(key)
        for p in self._layout:
            if "warm_start" not in self.state[p]:
                self.state[p]["warm_start"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
        return st

    # ----------------------------------------------------------------------------------- distributed
    def _distributed(self) -> bool:
        dist = torch.distributed
        return (
            isinstance(self.model, DistributedDataParallel)
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size() > 1
        )

    def _mean_over_processes(self, t: Tensor) -> Tensor:
        """Average ``t`` over the processes when ``model`` is DistributedDataParallel (else ``t``)."""
        if not self._distributed():
            return t
        out = t.detach().clone()
        torch.distributed.all_reduce(out)
        return out / torch.distributed.get_world_size()

    # ----------------------------------------------------------------------------------- pieces
    def _decay_vector(self) -> Tensor | None:
        """``kappa`` per entry of the flat layout, or None when no group has weight decay."""
        if all(group["weight_decay"] == 0 for group in self.param_groups):
            return None
        kappa = {id(p): group["weight_decay"] for group in self.param_groups for p in group["params"]}
        return torch.cat(
            [torch.full((p.numel(),), kappa[id(p)], dtype=p.dtype, device=p.device) for p in self._layout]
        )

    def _objective(self, function: ModelFunction, theta: Tensor, targets: Any, kappa: Tensor | None) -> float:
        """``loss_fn(model(inputs; theta), targets) + kappa/2 ||theta||^2`` (averaged over processes)."""
        names = [n for block in self._block_names for n in block]
        with torch.no_grad():
            values = dict(zip(names, flat.unflatten(theta, self._layout), strict=True))
            f = self.loss_fn(function(values), targets)
            if kappa is not None:
                f = f + 0.5 * (kappa * theta * theta).sum()
            return float(self._mean_over_processes(f))

    def _loss_and_gradient(self, inputs: tuple[Tensor, ...], targets: Any) -> tuple[Tensor, Tensor]:
        for p in self._layout:
            p.grad = None
        with torch.enable_grad():
            loss = self.loss_fn(self.model(*inputs), targets)
            loss.backward()
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in self._layout]
        return loss.detach(), flat.flatten(grads)

    def _curvature_scale(self, inputs: tuple[Tensor, ...], targets: Any, op: BlockCurvature) -> float:
        """``s_g / s_c``: a sum-reduced loss on the curvature rows is rescaled to the batch's size."""
        if self._loss_spec.reduction != "sum":
            return 1.0
        with torch.no_grad():
            outputs = op.function({}, inputs)
        s_g = output_hessian(self.loss_fn, outputs, targets).sum_scale
        return float(s_g / op.hessian.sum_scale)

    def _preconditioner(
        self, op: BlockCurvature, c_targets: Any, scale: float, exponent: float, shift: Tensor
    ) -> Tensor:
        """``(d + lambda + kappa)^(-exponent)`` with ``d`` the mean squared per-example gradient (Martens)."""
        z = op.outputs.detach().requires_grad_()
        with torch.enable_grad():
            e = torch.autograd.grad(self.loss_fn(z, c_targets), z)[0]
        names = [n for block in self._block_names for n in block]
        chunk = max(1, _EXAMPLE_CHUNK_ENTRIES // max(1, sum(self._sizes)))
        norms = [
            m for m in self.module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
        ]
        for m in norms:
            m.eval()
        try:
            squares = example_gradient_squares(op.function, op.values, names, e, chunk_size=chunk)
        finally:
            for m in norms:
                m.train()
        rows = e.shape[0]
        d = self._mean_over_processes(squares * (scale * rows / float(op.hessian.sum_scale)))
        return (d + shift).pow(-exponent)

    # ----------------------------------------------------------------------------------- step
    def step(
        self,
        inputs: Tensor | Sequence[Tensor],
        targets: Any = None,
        *,
        curvature_inputs: Tensor | Sequence[Tensor] | None = None,
        curvature_targets: Any = None,
    ) -> Tensor:
        """One (block-diagonal) Hessian-free step on the batch; returns the batch loss before the step.

        Args:
            inputs: the model's input (a tensor, or a tuple of positional arguments), batch along dim 0.
            targets: the targets passed to ``loss_fn`` (batch along dim 0).
            curvature_inputs: an explicit curvature batch's inputs; default the first
                ``ceil(curvature_fraction * n)`` rows of ``inputs``.
            curvature_targets: the targets of an explicit curvature batch.

        Returns:
            The loss ``loss_fn(model(inputs), targets)`` at the parameters before the step (detached; the
            process's own value under DDP; without the weight-decay term).

        Raises:
            TypeError: when called with a closure (this optimizer evaluates the model itself).
            FloatingPointError: for non-finite input with ``nonfinite="raise"``.
        """
        if callable(inputs) and not isinstance(inputs, Tensor):
            raise TypeError(
                f"{type(self).__name__}.step takes the batch, step(inputs, targets), not a closure: it "
                "evaluates model and loss_fn itself because the curvature products need both "
                "(see docs/algorithms/hessian-free.md)"
            )
        hp = self._hyperparameters()
        inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
        if hp["lr"] == 0:
            with torch.no_grad():
                fixed = {n: p.detach() for n, p in self.module.named_parameters()}
                return self.loss_fn(ModelFunction(self.module, inputs, fixed)({}), targets).detach()
        st = self._state()
        loss, g = self._loss_and_gradient(inputs, targets)
        finite = self.check_nonfinite(
            loss, [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.parameters_in_order()]
        )
        if not bool(finite):
            self.last_step = {"loss": float(loss), "skipped": "nonfinite"}
            return loss
        return self._hf_step(hp, st, inputs, targets, curvature_inputs, curvature_targets, loss, g)

    def _hf_step(self, hp, st, inputs, targets, curvature_inputs, curvature_targets, loss, g) -> Tensor:
        kappa = self._decay_vector()
        theta = flat.flatten([p.detach() for p in self._layout])
        if kappa is not None:
            g = g + kappa * theta
        module = self.module
        fixed = {n: p.detach() for n, p in module.named_parameters()}
        batch = ModelFunction(module, inputs, fixed)
        f0 = float(
            self._mean_over_processes(loss + (0.0 if kappa is None else 0.5 * (kappa * theta * theta).sum()))
        )
        if curvature_inputs is None:
            rows = max(1, math.ceil(hp["curvature_fraction"] * _rows(inputs)))
            c_inputs, c_targets = _prefix(inputs, rows), _prefix(targets, rows)
        else:
            c_inputs = (
                tuple(curvature_inputs)
                if isinstance(curvature_inputs, (tuple, list))
                else (curvature_inputs,)
            )
            c_targets = curvature_targets

        def build() -> BlockCurvature:
            return BlockCurvature(
                module,
                self.loss_fn,
                c_inputs,
                c_targets,
                fixed,
                self._block_names,
                curvature=hp["curvature"],
                backend=hp["backend"],
                jvp=hp["jvp"],
            )

        if self.check_determinism and not self._checked:
            check_logits_output(module, c_inputs)
            check_deterministic(build, g, module=module)
            self._checked = True
        op = build()
        op.scale = self._curvature_scale(inputs, targets, op)
        lam = float(st["damping"])
        shift = torch.full_like(theta, lam) if kappa is None else lam + kappa
        inverse_m = None
        if hp["preconditioner"] == "martens":
            inverse_m = self._preconditioner(op, c_targets, op.scale, hp["preconditioner_exponent"], shift)
            if not bool(torch.isfinite(inverse_m).all()):
                if hp["nonfinite"] == "raise":
                    raise FloatingPointError(f"{type(self).__name__}: the preconditioner is not finite")
                self.add_to_counter("nonfinite_skips")
                self.last_step = {"loss": float(loss), "skipped": "nonfinite preconditioner"}
                return loss

        def matvec(v: Tensor, active: Sequence[bool]) -> Tensor:
            return self._mean_over_processes(op.matvec(v, active)).addcmul_(shift, v)

        previous = flat.flatten([self.state[p]["warm_start"] for p in self._layout])
        x0 = None
        if hp["warm_start"] > 0 and bool(previous.any()):
            x0 = hp["warm_start"] * previous
        grid = backtracking_grid(hp["cg_max_iterations"]) if hp["backtracking"] else ()
        result = block_cg(
            matvec,
            -g,
            self._sizes,
            x0=x0,
            inverse_preconditioner=inverse_m,
            max_iterations=hp["cg_max_iterations"],
            min_iterations=hp["cg_min_iterations"],
            progress_eps=hp["cg_progress_eps"],
            tolerance=hp["cg_tolerance"],
            store_at=grid,
        )
        self.add_to_counter("steps")
        self.add_to_counter("cg_products", sum(result.iterations))

        def objective_at(step_vector: Tensor) -> float:
            return self._objective(batch, theta + step_vector, targets, kappa)

        index, f_p, evaluations = backtrack(lambda j: objective_at(result.stored[j]), len(result.stored))
        p = result.stored[index]
        record: dict[str, Any] = {
            "loss": float(loss),
            "objective": f0,
            "damping_used": lam,
            "cg_iterations": list(result.iterations),
            "cg_reasons": list(result.reasons),
            "cg_sweeps": result.sweeps,
            "backtrack_index": result.stored_at[index],
            "curvature_rows": _rows(c_inputs),
            "gradient_rows": _rows(inputs),
        }
        low, high = hp["damping_bounds"]
        if not math.isfinite(f_p):
            new_lam, clamped = levenberg_marquardt(lam, -math.inf, minimum=low, maximum=high)
            self._set_damping(new_lam if hp["adapt_damping"] else lam, clamped and hp["adapt_damping"])
            self.add_to_counter("rejected_steps")
            self.add_to_counter("nonfinite_rejections")
            self.last_step = {
                **record,
                "rho": -math.inf,
                "alpha": 0.0,
                "accepted": False,
                "damping": float(st["damping"]),
                "loss_evaluations": evaluations,
                "rejected": "non-finite loss at theta + p",
            }
            return loss
        if hp["rho_model"] == "full":
            pgp = float(self._mean_over_processes(op.quadratic_form(p)))
            decay = 0.0 if kappa is None else float((kappa * p * p).sum())
            model_change = float(torch.dot(g, p)) + 0.5 * (pgp + decay)
        else:
            squared = [float(t.dot(t)) for t in p.split(self._sizes)]
            model_change = sum(
                undamped_model_change(phi, lam, sq)
                for phi, sq in zip(result.stored_phi[index], squared, strict=True)
            )
        rho = reduction_ratio(f_p, f0, model_change)
        if hp["adapt_damping"]:
            new_lam, clamped = levenberg_marquardt(rho=rho, damping=lam, minimum=low, maximum=high)
            self._set_damping(new_lam, clamped)
        slope = float(torch.dot(g, p))
        alpha, reset = 0.0, False
        if not slope < 0:
            reset = True
            rejected = "not a descent direction"
        elif hp["line_search"] == "armijo":

            def phi(a: float) -> tuple[float, float, None]:
                nonlocal evaluations
                if a == 1.0:
                    return f_p, math.nan, None
                evaluations += 1
                return objective_at(a * p), math.nan, None

            search = armijo(
                phi,
                f0,
                slope,
                c=hp["armijo_c"],
                tau=hp["armijo_shrink"],
                max_backtracks=hp["armijo_max_shrinks"],
                on_failure="zero",
            )
            alpha = search.alpha
            rejected = None if search.success else "Armijo line search failed"
            if not search.success:
                self.add_to_counter("line_search_failures")
        else:
            alpha, rejected = 1.0, None
        if alpha > 0:
            with torch.no_grad():
                torch._foreach_add_(self._layout, flat.unflatten(p, self._layout), alpha=hp["lr"] * alpha)
        else:
            self.add_to_counter("rejected_steps")
        final = torch.zeros_like(result.x) if reset else result.x
        for tensor, value in zip(self._layout, flat.unflatten(final, self._layout), strict=True):
            self.state[tensor]["warm_start"] = value.clone()
        self.last_step = {
            **record,
            "rho": rho,
            "alpha": alpha,
            "accepted": alpha > 0,
            "damping": float(st["damping"]),
            "model_change": model_change,
            "loss_evaluations": evaluations,
            "rejected": rejected,
        }
        return loss

    def _set_damping(self, value: float, clamped: bool) -> None:
        st = self.flat_state()
        st["damping"] = torch.tensor(value, dtype=st["damping"].dtype, device=st["damping"].device)
        if clamped:
            self.add_to_counter("damping_clamps")


class HessianFree(BlockDiagonalHessianFree):
    """Martens' Hessian-free optimizer: :class:`BlockDiagonalHessianFree` with ``blocks="single"``.

    Same arguments and behaviour (one CG system over all parameters); see
    :class:`BlockDiagonalHessianFree`.

    References:
        Martens (2010), "Deep learning via Hessian-free optimization", ICML; Martens & Sutskever (2012),
        Neural Networks: Tricks of the Trade, Ch. 20; docs/algorithms/hessian-free.md.
    """

    _default_blocks = "single"
