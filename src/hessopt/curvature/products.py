"""Block-diagonal curvature-vector products of a model's loss, built once per outer step and reused.

For a model ``z = model(x; theta)`` and a loss ``loss_fn(z, y)`` on a batch, with ``theta`` partitioned into
blocks ``theta_1, ..., theta_B``, :class:`BlockCurvature` applies

* the **GGN blocks** ``G_bb v_b = J_b^T H J_b v_b`` (``J_b = dz/dtheta_b``, ``H`` the output Hessian of
  :mod:`hessopt.curvature.output_hessians`) -- the curvature of Martens' Hessian-free method restricted to
  blocks (Zhang et al. 2017, arXiv:1712.07296, abstract; one block is full HF, Martens 2010, ICML, Sec. 4.2);
* or the **Hessian blocks** ``H_bb v_b`` of the loss (``curvature="hessian"``, reverse-over-reverse),

to one vector per block, for all blocks or only the "active" ones. ``scale`` multiplies every product (the
optimizer rescales a sum-reduced loss measured on a sub-batch).

**Linearization reuse.** Building the operator runs, per block, one forward pass that records the graph
of ``z`` as a function of that block alone (``torch.func.vjp``; the other blocks are constants, so the
backward pass stops at the block) and one backward pass with a graph, which makes ``w -> J_b^T w`` itself
differentiable. Every product then costs two backward passes through the recorded graphs:
``u = J_b v_b`` is the vjp of the linear map ``w -> J_b^T w`` (the "R-operator via two VJPs",
``jvp="reverse"``), then ``J_b^T (H u)``. No forward pass is repeated. ``jvp="forward"`` computes
``J_b v_b`` with forward-mode AD (``torch.func.jvp``) instead, which re-runs the forward pass in every
product: it is the fallback for operations without double-backward support (e.g. cuDNN RNNs).

**Back-ends.** ``"loop"`` (default): the blocks one after the other, each with its own recorded graph; a
tangent of block ``b`` only traverses the layers above it. ``"vmap"``: one full-network graph, products
batched over the active blocks with masked tangents (tangent ``b`` holds ``v_b`` on block ``b``, zero
elsewhere) by ``torch.func.vmap``: each product then costs a full-network pass per block, batched.
Measurements and the choice of defaults: docs/algorithms/hessian-free.md and benchmarks/hf_cost.py.

**Module state.** Products call the model through ``torch.func.functional_call`` with detached copies of
the parameters and fresh copies of the buffers, so they never modify the model: a train-mode BatchNorm
normalises with the batch's statistics (the GGN of that function) and its running statistics stay
untouched. A train-mode Dropout draws new masks in every forward pass and makes the operator random;
:func:`check_deterministic` detects it.

Vectors are flat: the blocks' parameters concatenated in block order (within a block in the given order),
each tensor in row-major order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vjp, vmap

from hessopt.curvature.output_hessians import OutputHessian, output_hessian

__all__ = [
    "BACKENDS",
    "CURVATURES",
    "JVP_MODES",
    "BlockCurvature",
    "ModelFunction",
    "NonDeterministicCurvatureError",
    "OutputActivationError",
    "check_deterministic",
    "check_logits_output",
    "example_gradient_squares",
]

BACKENDS = ("loop", "vmap")
JVP_MODES = ("reverse", "forward")
CURVATURES = ("ggn", "hessian")

Inputs = tuple[Tensor, ...]


class ModelFunction:
    """``named tensors -> model output`` on fixed inputs, with every other tensor of the model held fixed.

    Args:
        module: the model (not a DistributedDataParallel wrapper: pass its ``.module``).
        inputs: the positional arguments of ``module``.
        fixed: detached values for all parameters (those not passed at call time stay at these values).

    Buffers are copied at every call, so a train-mode BatchNorm updates copies, never the model.
    """

    def __init__(self, module: nn.Module, inputs: Inputs, fixed: Mapping[str, Tensor]) -> None:
        """Hold the module, its inputs and the fixed parameter values; snapshot the buffers."""
        self.module = module
        self.inputs = inputs
        self.fixed = dict(fixed)
        self.buffers = {n: b.detach() for n, b in module.named_buffers()}

    def __call__(self, named: Mapping[str, Tensor], inputs: Inputs | None = None) -> Tensor:
        """The output with the tensors ``named`` replacing the fixed values (on ``inputs`` if given)."""
        fresh = {n: b.clone() for n, b in self.buffers.items()}
        args = self.inputs if inputs is None else inputs
        return functional_call(self.module, {**self.fixed, **fresh, **named}, args)


class OutputActivationError(ValueError):
    """The model ends in a Softmax/LogSoftmax/Sigmoid: the GGN needs the loss applied to logits."""


_PROBABILITY_MODULES = (nn.Softmax, nn.LogSoftmax, nn.Sigmoid)
_FIXES = {
    nn.Softmax: "return the logits and use nn.CrossEntropyLoss (it applies log-softmax itself)",
    nn.LogSoftmax: "return the logits and use nn.CrossEntropyLoss instead of LogSoftmax + NLLLoss "
    "(with NLLLoss on log-probabilities the loss is linear in the output, so the GGN is zero)",
    nn.Sigmoid: "return the logits and use nn.BCEWithLogitsLoss (or apply the sigmoid inside loss_fn)",
}


def check_logits_output(module: nn.Module, inputs: Inputs) -> None:
    """Raise if the output of ``module(*inputs)`` is produced by a Softmax, LogSoftmax or Sigmoid module.

    Runs one forward pass under ``torch.no_grad`` (buffers copied, the model is not modified) with forward
    hooks on every leaf module, and finds the leaf module whose output tensor is the model's output.
    Functional calls inside ``forward`` (``torch.softmax``) are not visible to this check.

    Raises:
        OutputActivationError: naming the module and the fix (return logits; put the nonlinearity into the
            loss). The GGN of a loss on probabilities is a different, non-matching curvature, and
            ``LogSoftmax`` + ``NLLLoss`` gives a zero GGN (Martens & Sutskever 2012, "Training deep and
            recurrent networks with Hessian-free optimization", Sec. 20.6).
    """
    produced: list[tuple[str, nn.Module, Tensor]] = []
    handles = []
    for name, sub in module.named_modules():
        if next(sub.children(), None) is None:
            handles.append(
                sub.register_forward_hook(lambda m, args, out, name=name: produced.append((name, m, out)))
            )
    try:
        with torch.no_grad():
            fixed = {n: p.detach() for n, p in module.named_parameters()}
            out = ModelFunction(module, inputs, fixed)({})
    finally:
        for handle in handles:
            handle.remove()
    for name, sub, value in reversed(produced):
        if value is out:
            if isinstance(sub, _PROBABILITY_MODULES):
                fix = next(f for cls, f in _FIXES.items() if isinstance(sub, cls))
                raise OutputActivationError(
                    f"the model's output comes from {type(sub).__name__} module {name!r}: Hessian-free "
                    f"needs the loss on logits; {fix}"
                )
            return


class BlockCurvature:
    """Block-diagonal GGN (or Hessian) products of ``loss_fn(model(inputs), targets)`` at fixed parameters.

    Args:
        module: the model (the plain module, not a DDP wrapper).
        loss_fn: loss on the model's output and ``targets`` (see :mod:`hessopt.curvature.output_hessians`).
        inputs: positional arguments of the model (a tuple of tensors).
        targets: targets of ``loss_fn``.
        params: name -> tensor, the current values of all the model's parameters (detached inside).
        blocks: the blocks, each a list of parameter names; parameters not in a block are held fixed.
        curvature: ``"ggn"`` (default) or ``"hessian"``.
        backend: ``"loop"`` or ``"vmap"`` (module docstring).
        jvp: ``"reverse"`` (double backward, default) or ``"forward"`` (forward-mode AD); GGN only.
        scale: factor applied to every product; an attribute that may be changed after construction.

    Attributes:
        outputs: the model output at the current parameters (detached).
        hessian: the :class:`~hessopt.curvature.output_hessians.OutputHessian` at ``outputs``.
        sizes: number of entries of each block's flat vector.

    Cost: building runs one forward pass per block (``"loop"``; one in all for ``"vmap"``) plus one backward
    pass with graph per block; each :meth:`matvec` costs, per active block, two backward passes through
    the layers above that block (``jvp="forward"``: a forward-mode pass and a backward pass).

    References:
        Zhang, Xiong, Bradbury, Socher (2017), arXiv:1712.07296 (block-diagonal GGN);
        Schraudolph (2002), Neural Computation 14(7) (GGN products); Martens (2010), ICML, Sec. 4.2;
        docs/algorithms/hessian-free.md.
    """

    def __init__(
        self,
        module: nn.Module,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        inputs: Inputs,
        targets: Tensor | None,
        params: Mapping[str, Tensor],
        blocks: Sequence[Sequence[str]],
        *,
        curvature: str = "ggn",
        backend: str = "loop",
        jvp: str = "reverse",
        scale: float | Tensor = 1.0,
    ) -> None:
        """Validate the arguments and record the graphs of every block (see the class docstring)."""
        for name, value, choices in (
            ("curvature", curvature, CURVATURES),
            ("backend", backend, BACKENDS),
            ("jvp", jvp, JVP_MODES),
        ):
            if value not in choices:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
        self.blocks = [list(b) for b in blocks]
        names = [n for b in self.blocks for n in b]
        if len(set(names)) != len(names):
            raise ValueError("blocks must not share a parameter name")
        unknown = [n for n in names if n not in params]
        if unknown:
            raise ValueError(f"blocks name parameters that are not in params: {unknown}")
        self.module, self.loss_fn, self.targets = module, loss_fn, targets
        self.curvature, self.backend, self.jvp_mode, self.scale = curvature, backend, jvp, scale
        self.values = {n: t.detach() for n, t in params.items()}
        self.function = ModelFunction(module, tuple(inputs), self.values)
        self.shapes = [[self.values[n].shape for n in b] for b in self.blocks]
        self.sizes = [sum(self.values[n].numel() for n in b) for b in self.blocks]
        self.outputs: Tensor
        self.hessian: OutputHessian
        if backend == "loop":
            self._ops = [self._build(b) for b in range(len(self.blocks))]
        else:
            self._ops = [self._build(None)]

    # ------------------------------------------------------------------------------------ construction
    def _function_of(self, names: list[str]) -> Callable[..., Tensor]:
        def f(*tensors: Tensor) -> Tensor:
            return self.function(dict(zip(names, tensors, strict=True)))

        return f

    def _build(self, block: int | None) -> dict:
        names = self.blocks[block] if block is not None else [n for b in self.blocks for n in b]
        f = self._function_of(names)
        primals = tuple(self.values[n] for n in names)
        if self.curvature == "hessian":
            targets, loss_fn = self.targets, self.loss_fn

            def loss(*tensors: Tensor) -> Tensor:
                return loss_fn(f(*tensors), targets)

            if not hasattr(self, "outputs"):
                with torch.no_grad():
                    self._set_outputs(f(*primals))
            _, hvp = vjp(grad(loss, argnums=tuple(range(len(names)))), *primals)
            return {"names": names, "hvp": hvp}
        z, pull_back = vjp(f, *primals)
        self._set_outputs(z)
        op = {"names": names, "pull_back": pull_back, "f": f, "primals": primals}
        if self.jvp_mode == "reverse":
            # w -> J^T w is linear; its vjp at any point is v -> J v (the R-operator by two VJPs).
            _, push = vjp(pull_back, torch.zeros_like(z))
            op["push"] = push
        return op

    def _set_outputs(self, z: Tensor) -> None:
        if not hasattr(self, "outputs"):
            self.outputs = z.detach()
            self.hessian = output_hessian(self.loss_fn, self.outputs, self.targets)

    # ------------------------------------------------------------------------------------ products
    def _split(self, v: Tensor) -> list[list[Tensor]]:
        """Flat vector -> per block, per parameter views."""
        out = []
        for chunk, shapes in zip(v.split(self.sizes), self.shapes, strict=True):
            parts = chunk.split([s.numel() for s in shapes])
            out.append([p.view(s) for p, s in zip(parts, shapes, strict=True)])
        return out

    def _push(self, op: dict, tangents: tuple[Tensor, ...]) -> Tensor:
        if "push" in op:
            return op["push"](tangents)[0]
        return jvp(op["f"], op["primals"], tangents)[1]

    def _ggn(self, op: dict, tangents: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        u = self._push(op, tangents)
        return op["pull_back"](self.scale * self.hessian(u))

    def _apply(self, op: dict, tangents: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        if self.curvature == "hessian":
            return tuple(self.scale * t for t in op["hvp"](tangents))
        return self._ggn(op, tangents)

    def matvec(self, v: Tensor, active: Sequence[bool] | None = None) -> Tensor:
        """Block-diagonal product: block ``b`` of the result is ``C_bb v_b`` (``C`` = GGN or Hessian).

        Args:
            v: flat vector over all blocks.
            active: per block, whether to compute it; inactive blocks get zeros (default: all active).

        Returns:
            The flat product, same layout as ``v``.
        """
        parts = self._split(v)
        active = [True] * len(self.blocks) if active is None else list(active)
        if self.backend == "loop":
            out = []
            for op, block_parts, on in zip(self._ops, parts, active, strict=True):
                if on:
                    out.extend(t.reshape(-1) for t in self._apply(op, tuple(block_parts)))
                else:
                    out.append(
                        torch.zeros(sum(t.numel() for t in block_parts), dtype=v.dtype, device=v.device)
                    )
            return torch.cat(out)
        return self._matvec_vmap(v, parts, active)

    def _matvec_vmap(self, v: Tensor, parts: list[list[Tensor]], active: list[bool]) -> Tensor:
        rows = [b for b, on in enumerate(active) if on]
        result = torch.zeros_like(v)
        if not rows:
            return result
        offsets = [0]
        for size in self.sizes:
            offsets.append(offsets[-1] + size)
        masked = torch.zeros(len(rows), v.numel(), dtype=v.dtype, device=v.device)
        for r, b in enumerate(rows):
            masked[r, offsets[b] : offsets[b + 1]] = v[offsets[b] : offsets[b + 1]]
        shapes = [s for block in self.shapes for s in block]
        tangents = tuple(
            t.reshape(len(rows), *s)
            for t, s in zip(masked.split([s.numel() for s in shapes], dim=1), shapes, strict=True)
        )
        op = self._ops[0]
        products = vmap(lambda *t: self._apply(op, t))(*tangents)
        flat_rows = torch.cat([t.reshape(len(rows), -1) for t in products], dim=1)
        for r, b in enumerate(rows):
            result[offsets[b] : offsets[b + 1]] = flat_rows[r, offsets[b] : offsets[b + 1]]
        return result

    def full_matvec(self, v: Tensor) -> Tensor:
        """The product with the full (not block-diagonal) matrix ``C v``, coupling all blocks.

        Builds a full-network operator on first use (one forward and one backward pass with graph).
        """
        if not hasattr(self, "_full"):
            self._full = self._build(None)
        parts = [t for block in self._split(v) for t in block]
        return torch.cat([t.reshape(-1) for t in self._apply(self._full, tuple(parts))])

    def quadratic_form(self, v: Tensor) -> Tensor:
        """``v^T G v`` with the full GGN, from one forward-mode pass: ``(J v)^T H (J v)`` (times ``scale``).

        Falls back to :meth:`full_matvec` for the Hessian (``v^T H v``) and when forward mode fails.
        """
        if self.curvature == "hessian":
            return torch.dot(v, self.full_matvec(v))
        names = [n for b in self.blocks for n in b]
        parts = tuple(t for block in self._split(v) for t in block)
        primals = tuple(self.values[n] for n in names)
        try:
            u = jvp(self._function_of(names), primals, parts)[1]
        except RuntimeError:
            return torch.dot(v, self.full_matvec(v))
        return self.scale * (u * self.hessian(u)).sum()


def example_gradient_squares(
    function: ModelFunction,
    params: Mapping[str, Tensor],
    names: Sequence[str],
    output_grads: Tensor,
    *,
    chunk_size: int,
) -> Tensor:
    """``sum_i (J_i^T e_i)^2``: squared per-example gradients of the batch loss, flat over ``names``.

    ``e_i`` is row ``i`` of ``output_grads = d loss / d z``, so ``J_i^T e_i`` is the gradient of example
    ``i``'s contribution to the batch loss. Computed with ``torch.func.vmap`` over examples in chunks of
    ``chunk_size`` (memory ``chunk_size`` x parameters); for a model that ``vmap`` cannot batch (e.g.
    ``nn.LSTM``, which writes into an unbatched hidden state) the examples of a chunk run one by one.

    Normalisation layers run with the model's current mode on one example at a time, so a train-mode
    BatchNorm would normalise a single example; callers put such layers into eval mode first.
    """
    primals = {n: params[n] for n in names}

    def one(*args: Tensor) -> list[Tensor]:
        *xs, e = args
        _, pull = vjp(lambda p: function(p, tuple(x.unsqueeze(0) for x in xs)), primals)
        g = pull(e.unsqueeze(0))[0]
        return [g[n].reshape(-1) for n in names]

    n = output_grads.shape[0]
    total = None
    batched = True
    for start in range(0, n, chunk_size):
        xs = tuple(x[start : start + chunk_size] for x in function.inputs)
        es = output_grads[start : start + chunk_size]
        if batched:
            try:
                rows = vmap(one)(*xs, es)
                squares = torch.cat([(r * r).sum(0) for r in rows])
            except RuntimeError:
                batched = False
        if not batched:
            squares = sum(
                torch.cat([g * g for g in one(*(x[i] for x in xs), es[i])]) for i in range(es.shape[0])
            )
        total = squares if total is None else total + squares
    return total


class NonDeterministicCurvatureError(RuntimeError):
    """Two builds of the same curvature operator disagree: the model is random (e.g. train-mode Dropout)."""


def check_deterministic(
    build: Callable[[], BlockCurvature],
    v: Tensor,
    *,
    rtol: float | None = None,
    module: nn.Module | None = None,
) -> None:
    """Raise unless two independently built operators give the same product (and one gives it twice).

    Conjugate gradient assumes every product applies the same matrix. A model whose forward pass is
    random (train-mode Dropout, random augmentation inside ``forward``) violates that silently. Costs two
    builds and three products.

    Args:
        build: returns a fresh operator on the same batch and parameters.
        v: the probe vector.
        rtol: relative tolerance (default ``1000 * eps`` of ``v``'s dtype, so that only real randomness,
            not reduction order, fails).
        module: the model, to name its train-mode Dropout modules in the message.

    Raises:
        NonDeterministicCurvatureError: naming the likely cause and the fix.

    References:
        The same probe as curvlinops' ``check_deterministic`` and PyTorchHessianFree's test; see
        docs/algorithms/hessian-free.md.
    """
    rtol = 1e3 * torch.finfo(v.dtype).eps if rtol is None else rtol
    first, second = build(), build()
    a, a_again, b = first.matvec(v), first.matvec(v), second.matvec(v)
    scale = torch.linalg.vector_norm(a) + torch.finfo(v.dtype).tiny
    worst = max(
        float(torch.linalg.vector_norm(a - b) / scale), float(torch.linalg.vector_norm(a - a_again) / scale)
    )
    if worst <= rtol:
        return
    dropouts = []
    if module is not None:
        dropouts = [
            name
            for name, m in module.named_modules()
            if isinstance(m, nn.modules.dropout._DropoutNd) and m.training
        ]
    cause = (
        f"train-mode dropout modules {dropouts}"
        if dropouts
        else "randomness in the model's forward pass (dropout, sampling, augmentation)"
    )
    raise NonDeterministicCurvatureError(
        f"the curvature products are not deterministic (relative difference {worst:.2e} > {rtol:.1e} "
        f"between two builds on the same batch), most likely {cause}. Conjugate gradient needs the same "
        "matrix in every product: put those modules into eval mode (module.eval()) or remove the "
        "randomness from forward(); train-mode BatchNorm is fine (it uses the batch's statistics)"
    )
