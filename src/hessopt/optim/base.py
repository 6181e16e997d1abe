"""What every hessopt optimizer shares: validation, non-finite policy, parameter order, flat state, copies.

:class:`HessoptOptimizer` is a :class:`torch.optim.Optimizer` subclass; concrete optimizers subclass it
and keep their ``step`` thin over the functional cores in :mod:`hessopt.curvature`. The mechanisms below
are generic, so a new optimizer gets them by declaring a few class attributes.

**Hyper-parameter validation.** A subclass declares :attr:`HessoptOptimizer.hyperparameter_checks`, one
``check(name, value) -> value`` per hyper-parameter (the checks of :mod:`hessopt.optim.checks`), and may
override :meth:`HessoptOptimizer.check_group` for checks that involve several values or the parameters
(``c1 < c2``, one dtype, ``lr`` within the dtype's range). Every param group is validated when it is
added, in the constructor or by :meth:`~HessoptOptimizer.add_param_group` later (an invalid group is not
added), and again in ``step`` through :meth:`~HessoptOptimizer.group_hyperparameters` (a scheduler may
have changed a value; the result is cached per value tuple). Optimizers whose update couples all
parameters set :attr:`~HessoptOptimizer.uniform_hyperparameters`: every group must then hold the same
values.

**Flat-state slot.** Optimizers whose state is one vector (or matrix) over all parameters, rather than a
tensor per parameter, keep it in ``self.state[p0]``, where ``p0`` is the first parameter of the first
group, as ``torch.optim.LBFGS`` does. :meth:`HessoptOptimizer.flat_state` returns that dict. Because it is
an entry of ``self.state``, ``state_dict()`` saves it under parameter index 0 and ``load_state_dict()``
restores it. Torch's ``load_state_dict`` casts every tensor of a parameter's state except ``"step"`` to
that parameter's dtype; this class undoes that for integer and bool tensors (counters, flags), so
checkpoints resume bit for bit. Floating-point state must therefore have the parameters' dtype.

**Checkpoints of another model.** ``load_state_dict`` checks every saved state tensor against
:meth:`HessoptOptimizer.expected_state_shape` before loading anything and raises a ValueError naming the
parameter, the state entry and both shapes.

**Copies.** ``copy.deepcopy`` and ``pickle`` keep the state, the param groups and the attributes named in
:attr:`HessoptOptimizer.persistent_attributes`; torch's own ``__getstate__`` keeps only the first two.
Anything else an optimizer holds must be a cache that it rebuilds on demand.

**Non-finite policy** (a nan/inf loss or gradient never enters the state). ``nonfinite="skip"``
(default) makes the step a no-op (parameters and state unchanged) and adds one to the int64 counter
``flat_state()["nonfinite_skips"]``; ``nonfinite="raise"`` raises :class:`FloatingPointError` naming the
loss or the parameter whose gradient was not finite. Each optimizer also refuses a step whose *result*
would not be finite (an overflow from a huge learning rate or gradient) and counts it the same way; its
docstring says how.

**Closures.** :meth:`HessoptOptimizer.evaluate_closure` runs a closure with gradients enabled and, when
the optimizer needs the loss (line searches), refuses a closure that returned None with a TypeError
that names the fix.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch

from hessopt.curvature import flat

from .checks import (
    NONFINITE_POLICIES,
    check_choice,
    check_dense_memory,
    check_eigh_dtype,
    check_in_range,
    check_lr_fits_dtype,
    check_one_dtype_and_device,
    check_params_real_floating,
    check_positive_int,
    check_wolfe_constants,
)

__all__ = ["HessoptOptimizer"]


def _check_nonfinite_policy(name: str, value: Any) -> str:
    return check_choice(name, value, NONFINITE_POLICIES)


class HessoptOptimizer(torch.optim.Optimizer):
    """Base class of hessopt optimizers (the module docstring describes each mechanism).

    Args:
        params: parameters or param groups, as for any ``torch.optim.Optimizer``.
        defaults: the hyper-parameters; it must hold every name of :attr:`hyperparameter_checks` and
            ``"nonfinite"``. Values are validated here.

    Raises:
        TypeError: a missing ``"nonfinite"`` entry, a hyper-parameter of the wrong type, or parameters
            that are not real floating-point tensors.
        ValueError: a hyper-parameter out of range, naming it.
    """

    #: ``{name: check(name, value) -> validated value}``; the checks raise TypeError/ValueError naming it.
    hyperparameter_checks: ClassVar[Mapping[str, Callable[[str, Any], Any]]] = {}
    #: True when the update couples all parameters, so that every group must hold the same values.
    uniform_hyperparameters: ClassVar[bool] = False
    #: Attribute names that ``copy.deepcopy`` and ``pickle`` keep besides the state and the groups.
    persistent_attributes: ClassVar[tuple[str, ...]] = ()
    #: For optimizers whose state has one fixed size over all parameters: the flat-state key whose
    #: presence means it is allocated, and what it is; :meth:`add_param_group` then refuses new groups.
    fixed_size_state: ClassVar[tuple[str, str] | None] = None
    #: True when one flat state spans all parameters, so that they must share one dtype and device.
    one_dtype_and_device: ClassVar[bool] = False
    #: For optimizers that keep dense (D, D) matrices: how many at peak; :meth:`check_group` then refuses
    #: parameters whose matrices would not fit the limits set by :meth:`set_memory_limits`.
    dense_matrices: ClassVar[int] = 0
    #: True when the method eigendecomposes or factors its estimate: parameters must be float32 or float64.
    needs_eigh: ClassVar[bool] = False

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        """Validate the arguments and set up the state (see the class docstring)."""
        if "nonfinite" not in defaults:
            raise TypeError(f"{type(self).__name__} must pass a 'nonfinite' entry in defaults")
        super().__init__(params, self._validated_values(defaults))

    # ----------------------------------------------------------------- validation
    def _checks(self) -> dict[str, Callable[[str, Any], Any]]:
        return {**self.hyperparameter_checks, "nonfinite": _check_nonfinite_policy}

    def _validated_values(self, values: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(values)
        for name, check in self._checks().items():
            if name in values:
                out[name] = check(name, values[name])
        return out

    def check_group(self, group: Mapping[str, Any]) -> None:
        """Checks of a whole param group after the per-value checks (override to add; call super()).

        The default refuses parameters that are not real floating-point tensors holding data, an ``lr``
        larger than the parameters' dtype can represent, line-search constants with ``c1 >= c2``, and, per
        :attr:`one_dtype_and_device` and :attr:`dense_matrices`, parameters of mixed dtypes or devices and
        dense matrices that would not fit in memory, and per :attr:`needs_eigh` half-precision parameters.

        Args:
            group: the param group with validated values and its ``"params"``.

        Raises:
            TypeError: parameters of a non-floating dtype (or half precision, per :attr:`needs_eigh`).
            ValueError: meta-device parameters, or ``lr`` beyond the dtype's range.
        """
        name = type(self).__name__
        params = group["params"]
        check_params_real_floating(params, name)
        if self.needs_eigh:
            check_eigh_dtype(params, name)
        if "lr" in group and params and isinstance(group["lr"], float):
            check_lr_fits_dtype(group["lr"], params[0].dtype, name)
        if "c1" in group and "c2" in group:
            check_wolfe_constants(group["c1"], group["c2"])
        if self.one_dtype_and_device or self.dense_matrices:
            every = self.all_parameters_with(group)
            check_one_dtype_and_device(every, name)
            if self.dense_matrices:
                check_dense_memory(every, matrices=self.dense_matrices, who=name, **self._memory_limits)

    def set_memory_limits(self, max_memory_fraction: Any, memory_limit_bytes: Any) -> None:
        """Validate and keep the memory limits of a dense optimizer (before ``super().__init__``).

        Args:
            max_memory_fraction: the fraction of the device's memory the dense matrices may take.
            memory_limit_bytes: an absolute limit in bytes instead, or None.

        Raises:
            TypeError, ValueError: naming the argument.
        """
        self._memory_limits = {
            "max_memory_fraction": check_in_range(
                "max_memory_fraction", max_memory_fraction, 0.0, 1.0, high_open=False
            ),
            "memory_limit_bytes": None
            if memory_limit_bytes is None
            else check_positive_int("memory_limit_bytes", memory_limit_bytes),
        }

    def all_parameters_with(self, group: Mapping[str, Any]) -> list[torch.Tensor]:
        """Every parameter of the optimizer and of ``group`` (being added or re-validated), each once."""
        params = [p for g in self.param_groups for p in g["params"]]
        return params + [p for p in group["params"] if all(p is not q for q in params)]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group after validating its hyper-parameters and parameters (see the module docstring).

        Args:
            param_group: ``{"params": ..., name: value, ...}``; missing names take the defaults.

        Raises:
            RuntimeError: after the first step of an optimizer with fixed-size state.
            TypeError, ValueError: the group is invalid; it is then not added.
        """
        if self.fixed_size_state is not None and self.param_groups:
            key, what = self.fixed_size_state
            if key in self.flat_state():
                name = type(self).__name__
                raise RuntimeError(f"{name} cannot add parameters after its first step ({what} is allocated)")
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            group.update(self._validated_values({k: group[k] for k in self._checks() if k in group}))
            if self.uniform_hyperparameters and len(self.param_groups) > 1:
                self._check_uniform(group)
            self.check_group(group)
        except (TypeError, ValueError):
            self.param_groups.pop()
            raise

    def _check_uniform(self, group: Mapping[str, Any]) -> None:
        first = self.param_groups[0]
        index = len(self.param_groups) - 1
        for name in self._checks():
            if group[name] != first[name]:
                raise ValueError(
                    f"{type(self).__name__} uses one {name} for all parameters, but param group {index} has "
                    f"{name}={group[name]!r} and group 0 has {name}={first[name]!r}; set the same {name} in "
                    "every group"
                )

    def group_hyperparameters(self, group: dict[str, Any]) -> dict[str, Any]:
        """The validated hyper-parameters of ``group`` as they are now (a scheduler may have changed them).

        Validation runs only when the values differ from the last ones seen for this group.

        Args:
            group: one of ``self.param_groups``.

        Returns:
            ``{name: validated value}`` for every declared hyper-parameter.

        Raises:
            TypeError, ValueError: a value was set out of range after construction, naming it.
        """
        names = tuple(self._checks())
        key = tuple(group[name] for name in names)
        cache = self.__dict__.setdefault("_hyperparameter_cache", {})
        entry = cache.get(id(group))
        if entry is None or entry[0] != key:
            values = self._validated_values({name: group[name] for name in names})
            self.check_group({**group, **values})
            entry = (key, values)
            cache[id(group)] = entry
        return entry[1]

    def hyperparameters(self) -> dict[str, Any]:
        """The validated hyper-parameters shared by all groups (for :attr:`uniform_hyperparameters`).

        Returns:
            ``{name: value}`` of group 0, after checking that every group holds the same values.

        Raises:
            ValueError: two groups differ (possible only if a value was changed after construction).
        """
        values = self.group_hyperparameters(self.param_groups[0])
        for name in values:
            self.uniform_hyperparameter(name)
        return values

    # ----------------------------------------------------------------- parameters and hyper-parameters
    def parameters_in_order(self) -> list[torch.Tensor]:
        """All parameters, in ``param_groups`` order (the order :mod:`hessopt.curvature.flat` uses)."""
        return [p for group in self.param_groups for p in group["params"]]

    def parameters_with_grad(self) -> list[torch.Tensor]:
        """The parameters whose ``.grad`` is not None, in ``param_groups`` order."""
        return [p for p in self.parameters_in_order() if p.grad is not None]

    def flat_params(self) -> torch.Tensor:
        """All parameters as one flat vector (a copy), in ``param_groups`` order."""
        return flat.flatten([p.detach() for p in self.parameters_in_order()])

    def flat_grad(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """All gradients as one flat vector, in ``param_groups`` order, and the mask of present grads.

        A parameter whose ``.grad`` is None contributes zeros (as in ``torch.optim.LBFGS``).

        Returns:
            ``(g, mask)``: the mask is a bool vector, True where a gradient was present, or None when
            every parameter has a gradient (so callers can skip masking).

        Raises:
            TypeError: a sparse gradient.
        """
        params = self.parameters_in_order()
        grads, missing = [], False
        for p in params:
            if p.grad is None:
                grads.append(torch.zeros_like(p))
                missing = True
            elif p.grad.is_sparse:
                raise TypeError(f"{type(self).__name__} does not support sparse gradients")
            else:
                grads.append(p.grad)
        g = flat.flatten(grads)
        if not missing:
            return g, None
        mask = flat.flatten([torch.full_like(p, p.grad is not None, dtype=torch.bool) for p in params])
        return g, mask

    def uniform_hyperparameter(self, name: str) -> Any:
        """The value of ``name`` shared by all param groups.

        Args:
            name: a hyper-parameter name.

        Returns:
            Group 0's value.

        Raises:
            ValueError: the groups hold different values, naming them.
        """
        values = [group[name] for group in self.param_groups]
        first = values[0]
        for i, v in enumerate(values[1:], start=1):
            if v != first:
                raise ValueError(
                    f"{type(self).__name__} uses one {name} for all parameters, but param group {i} has "
                    f"{name}={v!r} and group 0 has {name}={first!r}; set the same {name} in every group"
                )
        return first

    # ----------------------------------------------------------------- closures
    def evaluate_closure(self, closure: Callable[[], Any], *, need_loss: bool) -> Any:
        """Call ``closure`` with gradients enabled and return what it returned.

        Args:
            closure: the torch.optim closure (zero the gradients, forward, backward, return the loss).
            need_loss: the optimizer uses the loss value (a line search); None is then refused.

        Returns:
            The closure's return value.

        Raises:
            TypeError: ``need_loss`` and the closure returned None (it forgot ``return loss``).
        """
        with torch.enable_grad():
            loss = closure()
        if need_loss and loss is None:
            raise TypeError(
                f"{type(self).__name__}'s line search needs the loss, but the closure returned None: end the "
                "closure with `return loss` (after loss.backward())"
            )
        return loss

    # ----------------------------------------------------------------- flat-state slot
    def flat_state(self) -> dict[str, Any]:
        """The state dict of the first parameter: the documented slot for whole-vector state."""
        return self.state[self.param_groups[0]["params"][0]]

    def _counter(self, key: str) -> torch.Tensor:
        st = self.flat_state()
        if key not in st:
            st[key] = torch.zeros((), dtype=torch.int64, device=self.param_groups[0]["params"][0].device)
        return st[key]

    def add_to_counter(self, key: str, amount: torch.Tensor | int = 1) -> None:
        """``flat_state()[key] += amount`` as a new int64 tensor (no host sync; a bool tensor counts 0/1)."""
        self.flat_state()[key] = self._counter(key) + amount

    # ----------------------------------------------------------------- checkpoints and copies
    def flat_state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the flat-state slot's tensors that are not shaped like the first parameter.

        Override in optimizers with a flat-state slot (e.g. ``{"H": (D, D)}``); the default is empty.
        """
        return {}

    def expected_state_shape(
        self, key: str, value: torch.Tensor, param: torch.Tensor, *, flat_slot: bool
    ) -> tuple[int, ...] | None:
        """The shape that state entry ``key`` of ``param`` must have, or None when it is not checked.

        The default: the flat-slot shapes of :meth:`flat_state_shapes` for the first parameter, ``()`` for
        0-dim entries (counters, scalars), and otherwise the parameter's shape. Override for per-parameter
        state of another shape.

        Args:
            key: the state entry's name.
            value: the saved tensor.
            param: the parameter it belongs to.
            flat_slot: True for the first parameter (the flat-state slot).

        Returns:
            The expected shape, or None.
        """
        if flat_slot:
            shapes = self.flat_state_shapes()
            if key in shapes:
                return shapes[key]
        if value.dim() == 0:
            return ()
        return tuple(param.shape)

    def _check_state_shapes(self, state_dict: Mapping[str, Any]) -> None:
        saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        params = self.parameters_in_order()
        if len(saved_ids) != len(params):
            return  # torch's own check reports a different number of parameters
        index_to_param = dict(zip(saved_ids, params, strict=True))
        location = {
            id(p): (gi, pi)
            for gi, group in enumerate(self.param_groups)
            for pi, p in enumerate(group["params"])
        }
        for index, pstate in state_dict["state"].items():
            param = index_to_param.get(index)
            if param is None or not isinstance(pstate, Mapping):
                continue
            for key, value in pstate.items():
                if not isinstance(value, torch.Tensor):
                    continue
                expected = self.expected_state_shape(key, value, param, flat_slot=param is params[0])
                if expected is not None and tuple(value.shape) != tuple(expected):
                    gi, pi = location[id(param)]
                    raise ValueError(
                        f"{type(self).__name__}.load_state_dict: state {key!r} of parameter {pi} of param "
                        f"group {gi} has shape {tuple(value.shape)}, but this optimizer needs "
                        f"{tuple(expected)} "
                        f"(that parameter has shape {tuple(param.shape)}): the checkpoint belongs to another "
                        "model or parameter order; load it into the model and optimizer it was saved from"
                    )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As :meth:`torch.optim.Optimizer.load_state_dict`, with shape checks and exact integer state.

        Torch casts every non-``"step"`` state tensor to its parameter's dtype; counters and flags are put
        back with their saved dtype (on the parameter's device), so a resumed run is bit for bit the same.
        The tensors are copied (torch keeps references when dtype and device match, and hessopt updates
        state in place, so a live optimizer's ``state_dict()`` would otherwise be shared). Cached validation
        results are dropped.

        Args:
            state_dict: a dict from :meth:`state_dict`.

        Raises:
            ValueError: a saved state tensor has the wrong shape (nothing is loaded), or torch's own checks
                fail (a different number of groups or parameters).
        """
        self._check_state_shapes(state_dict)
        state_dict = {**state_dict, "state": copy.deepcopy(state_dict["state"])}
        keep: dict[int, dict[str, torch.Tensor]] = {}
        for index, pstate in state_dict["state"].items():
            if isinstance(pstate, dict):
                exact = {
                    k: v
                    for k, v in pstate.items()
                    if isinstance(v, torch.Tensor) and not (v.is_floating_point() or v.is_complex())
                }
                if exact:
                    keep[index] = exact
        super().load_state_dict(state_dict)
        if not keep:
            return
        saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        index_to_param = dict(zip(saved_ids, self.parameters_in_order(), strict=True))
        for index, exact in keep.items():
            param = index_to_param.get(index)
            if param is None:
                continue
            for k, v in exact.items():
                self.state[param][k] = v.to(device=param.device, copy=True)

    def __getstate__(self) -> dict[str, Any]:
        """Torch's picklable state plus the :attr:`persistent_attributes`."""
        state = super().__getstate__()
        for name in self.persistent_attributes:
            if name in self.__dict__:
                state[name] = self.__dict__[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickled or loaded state; caches are rebuilt on demand."""
        super().__setstate__(state)
        self.__dict__.pop("_hyperparameter_cache", None)  # keyed by group identity: rebuilt on demand

    # ----------------------------------------------------------------- non-finite policy
    @staticmethod
    def all_finite(
        loss: torch.Tensor | float | None, grads: torch.Tensor | Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """0-dim bool tensor: True when ``loss`` (if given) and every gradient entry are finite. No sync."""
        if isinstance(grads, torch.Tensor):
            finite = torch.isfinite(grads).all()
        else:
            finite = torch.stack([torch.isfinite(g).all() for g in grads]).all()
        if loss is not None:
            loss_t = torch.as_tensor(loss, device=finite.device)
            finite = finite & torch.isfinite(loss_t).all()
        return finite

    def check_nonfinite(
        self,
        loss: torch.Tensor | float | None,
        grads: torch.Tensor | Sequence[torch.Tensor],
        *,
        params: Sequence[torch.Tensor] | None = None,
        summary: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Apply the ``nonfinite`` policy to a loss and gradients; return the 0-dim bool "all finite".

        ``"skip"``: counts a non-finite input in ``flat_state()["nonfinite_skips"]`` (no host sync); the
        caller must then leave parameters and state unchanged where the returned flag is False.
        ``"raise"``: reads the flag (one sync) and raises naming the loss or the first parameter (group and
        index) whose gradient has nan/inf entries.

        Args:
            loss: the closure's loss, or None.
            grads: the flat gradient (parameters in ``param_groups`` order) or one tensor per parameter.
            params: the parameters the tensors of ``grads`` belong to, when they are not all parameters in
                order (e.g. only those with a gradient).
            summary: a tensor that is finite exactly when every gradient entry is (a cheaper reduction);
                used for the flag instead of ``grads``, which then only serve the error message.

        Returns:
            The 0-dim bool tensor "loss and gradients finite".

        Raises:
            FloatingPointError: ``nonfinite="raise"`` and something is not finite.
        """
        finite = self.all_finite(loss, grads if summary is None else [summary])
        if self.uniform_hyperparameter("nonfinite") == "raise":
            if not bool(finite):
                raise FloatingPointError(self._describe_nonfinite(loss, grads, params))
            return finite
        self.add_to_counter("nonfinite_skips", ~finite)
        return finite

    def _describe_nonfinite(
        self,
        loss: torch.Tensor | float | None,
        grads: torch.Tensor | Sequence[torch.Tensor],
        params: Sequence[torch.Tensor] | None = None,
    ) -> str:
        name = type(self).__name__
        if loss is not None and not bool(torch.isfinite(torch.as_tensor(loss)).all()):
            return f"{name}: the loss is not finite ({float(torch.as_tensor(loss).reshape(-1)[0])})"
        params = self.parameters_in_order() if params is None else list(params)
        per_param = flat.unflatten(grads, params) if isinstance(grads, torch.Tensor) else list(grads)
        location = {
            id(p): (gi, pi)
            for gi, group in enumerate(self.param_groups)
            for pi, p in enumerate(group["params"])
        }
        for g, p in zip(per_param, params, strict=True):
            bad = int((~torch.isfinite(g)).sum())
            if bad:
                gi, pi = location[id(p)]
                return (
                    f"{name}: the gradient of parameter {pi} of param group {gi} "
                    f"(shape {tuple(p.shape)}) has {bad} non-finite entries"
                )
        return f"{name}: non-finite gradient"

    # ----------------------------------------------------------------- distributed
    @staticmethod
    def global_loss(loss: torch.Tensor) -> torch.Tensor:
        """The loss averaged over the processes of the default ``torch.distributed`` group, if one exists.

        DDP averages gradients but not the loss; optimizers that branch on loss values (line searches) use
        this so that every process takes the same decisions. Cost: one all-reduce of a scalar.

        Args:
            loss: this process's loss.

        Returns:
            The mean over processes, or ``loss`` unchanged without an initialised process group.
        """
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return loss
        reduced = loss.detach().clone().reshape(())
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
        return reduced / dist.get_world_size()
