"""Mechanic learning-rate tuner for any torch optimizer (pure torch).

Reference: A. Cutkosky, A. Defazio, H. Mehta, "Mechanic: A Learning Rate Tuner",
NeurIPS 2023, arXiv:2306.00144, Algorithm 1 (MECHANIC). The arithmetic follows
``optax.contrib.mechanize`` of optax 0.2.8 step for step; ``docs/mechanic.md``
explains the algorithm, its use with schedules and with gradient clipping.

This module is the ``torch.optim.Optimizer`` wrapper: parameter groups, the
order of a step, non-finite input, state dicts. It composes
:mod:`.tuner` (the scale update, scalars only) and :mod:`.buckets` (the
per-parameter arithmetic around the base optimizer's step).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional

import torch
from torch.optim import Optimizer

from . import fused as _fused
from . import tuner as _tuner
from .adam_fused import AdamBucket, fusable, group_supported
from .buckets import Bucket, Entry, is_narrow, work_dtype

__all__ = ["Mechanic"]


class Mechanic(Optimizer):
    r"""Learn the global learning-rate scale of a base optimizer (Mechanic).

    The base optimizer runs with learning rate 1.0 (or a schedule that peaks at
    1.0); its step from :math:`x_t` gives the update :math:`u_t`. Mechanic keeps
    the reference point :math:`x_{ref}` (the parameters at their first step)
    and sets

    .. math::
        \Delta_{t+1} = \Delta_t + u_t, \qquad x_{t+1} = x_{ref} + S_{t+1}\,\Delta_{t+1},

    where :math:`S = \sum_i s_i` is learned by ``num_betas`` coin-betting tuners
    with decays :math:`\beta_i = 1 - 10^{-i}` (paper, Algorithm 1). Per step, with
    :math:`g_t` the gradient and every norm and inner product global over the
    parameters that have a gradient:

    .. math::
        \Delta_t &= (x_t - x_{ref}) / (S_t + \epsilon) \\
        h_t &= \langle g_t + \lambda S_t \tfrac{\|g_t\|}{\|x_t\| + \epsilon} x_t,\ \Delta_t\rangle \\
        m' &= \max(\beta m, |h_t| + \epsilon), \quad v' = \beta^2 v + h_t^2, \quad
        r' = \beta r - s\,\mathrm{clip}(h_t, -m, m) \\
        s' &= \frac{(s_{init}/n)\,m' + \max(0, r')}{\sqrt{v'} + \epsilon},
        \qquad S_{t+1} = \textstyle\sum_i s'_i

    The :math:`\lambda` term only enters :math:`h_t`; the base optimizer sees
    the raw gradient and :math:`x_t`.

    Where the paper and optax 0.2.8 (``optax/contrib/_mechanic.py``) differ,
    this class follows optax:

    * :math:`h_t` is clipped to :math:`[-m, m]` with the *previous* :math:`m`
      before it enters :math:`r` (not in the paper; optax added it later), so
      the first step, with :math:`m = 0`, leaves :math:`r = 0`;
    * :math:`m'` is floored at :math:`|h_t| + \epsilon`; :math:`s'` uses the
      *new* :math:`m'`, :math:`r'`, :math:`v'`; :math:`r'` is stored unclipped;
    * :math:`\Delta_t` is :math:`(x_t - x_{ref})/(S_t + \epsilon)`, optax's
      memory-saving form, not the accumulated sum of the paper, so
      :math:`\Delta_{t+1} = S_{t+1}(\Delta_t + u_t)/(S_{t+1} + \epsilon)`;
    * :math:`x_{ref}` is taken at a parameter's first step, not at
      construction: loading pretrained weights after building the optimizer
      works. Before the first step :attr:`scale` is ``num_betas * s_init``,
      after it ``s_init``;
    * optax stores :math:`-\Delta` and :math:`h`, :math:`r` with the opposite
      sign; the iterates are the same.

    State and precision. Recomputing :math:`\Delta` as
    :math:`(x_t - x_{ref})/S` from the rounded parameters stalls for good when
    :math:`S\,|u|` is below one ulp of :math:`x` (a float32 weight of size 1
    with ``s_init * lr`` about 1e-8, e.g. a base lr of 1e-4 with the default
    ``s_init``; bf16 at any ``s_init``). So the displacement
    :math:`x_t - x_{ref}` is stored instead of :math:`x_{ref}`, in float32 or
    wider, as ``offset_scale * offset`` (a per-parameter scalar times a
    tensor, so one step updates ``offset`` with a single axpy), and
    :math:`x_{ref}` is implicit. The parameter moves by the difference of two
    displacements, which rounds like any optimizer's update.

    * float32/float64 parameters: per-parameter state is ``offset`` (parameter
      dtype) and ``offset_scale``: one extra copy of the parameters plus
      ``4 * num_betas`` float64 scalars and one float per parameter tensor,
      no gradient copy. A step allocates one
      transient parameter-sized buffer (the parameters before the base step,
      needed to read :math:`u_t` off the base optimizer).
    * parameters narrower than float32 (bf16, fp16): additionally ``master``, a
      float32 copy of the parameters; all of Mechanic's arithmetic runs on it
      and the parameter is its rounding.

    The tuner scalars are float64 (Python floats). If something outside the
    optimizer changes a parameter between steps, the change moves the
    reference point with it (the learned displacement is kept).

    Non-finite input. If a gradient, a parameter or the scale update is NaN or
    infinite, :meth:`step` raises :class:`ValueError` naming the parameter
    (group and index) *before* anything is modified: parameters, offsets,
    ``s, m, v, r`` and the base optimizer's state are untouched, so the caller
    can drop the batch (``zero_grad()``) and go on.

    Parameters without a gradient in a step are left alone and do not count in
    the norms or inner products. ``param_groups`` is the base optimizer's list,
    so torch LR schedulers on the base (or on this object) work unchanged.

    Args:
        base_optimizer: any ``torch.optim.Optimizer``, built with lr=1.0 (or a
            schedule peaking at 1.0). Optimizers that need a closure in
            ``step`` (LBFGS) are not supported.
        weight_decay: :math:`\lambda`, Mechanic's own decay term in
            :math:`h_t` (not the base optimizer's weight decay).
        eps: :math:`\epsilon` of the formulas above.
        s_init: initial scale; each of the ``num_betas`` tuners starts at it.
        num_betas: number of tuners, :math:`\beta_i = 1 - 10^{-i}`.
        fused: use the compiled CPU kernels of ``fused_kernels.c`` for
            float32/float64 CPU parameters: two passes over memory instead of
            about twenty torch kernels, same step up to rounding; with
            ``torch.optim.Adam``/``AdamW`` as the base, Adam's own step is
            computed in Mechanic's update pass (``adam_fused.py``). ``None``:
            when the library is built (``make setup``) and ``MECHANIC_FUSED``
            is not ``0``; ``True``: required; ``False``: torch kernels only.
            Other dtypes and devices always use torch kernels.

    Example::

        opt = Mechanic(torch.optim.Adam(model.parameters(), lr=1.0))
        opt.zero_grad(); loss.backward(); opt.step()
        print(opt.scale)
    """

    def __init__(
        self,
        base_optimizer: Optimizer,
        weight_decay: float = 1e-2,
        eps: float = 1e-8,
        s_init: float = 1e-6,
        num_betas: int = 6,
        fused: Optional[bool] = None,
    ) -> None:
        if not isinstance(base_optimizer, Optimizer):
            raise TypeError(
                f"Mechanic wraps a torch.optim.Optimizer, got {type(base_optimizer).__name__}")
        if isinstance(base_optimizer, Mechanic):
            raise TypeError("Mechanic cannot wrap another Mechanic")
        hyper = _tuner.check_hyper(weight_decay, eps, s_init, num_betas)
        params = [p for group in base_optimizer.param_groups for p in group["params"]]
        # Optimizer.__init__ builds throw-away groups (see the param_groups
        # property); afterwards the base optimizer's groups are the only ones.
        super().__init__(params, {})
        self.__dict__.pop("_init_param_groups", None)
        self.__dict__.pop("_init_defaults", None)
        self.__dict__["base_optimizer"] = base_optimizer
        self._hyper = hyper
        self._tuner = _tuner.initial_tuner(hyper)
        if fused and not _fused.available():
            raise RuntimeError(f"Mechanic(fused=True): {_fused.unavailable_reason()}")
        self._fused = _fused.available() if fused is None else bool(fused)
        # |x|^2 and <x, R> per parameter left by the fused Adam pass (adam_fused.py)
        self._x_stats: Dict[Any, tuple] = {}

    # ------------------------------------------------------------------ groups
    @property
    def param_groups(self) -> List[Dict[str, Any]]:  # type: ignore[override]
        """The base optimizer's ``param_groups`` (the same list object)."""
        base = self.__dict__.get("base_optimizer")
        if base is None:
            return self.__dict__.setdefault("_init_param_groups", [])
        return base.param_groups

    @param_groups.setter
    def param_groups(self, groups: List[Dict[str, Any]]) -> None:
        base = self.__dict__.get("base_optimizer")
        if base is None:
            self.__dict__["_init_param_groups"] = groups
        else:
            base.param_groups = groups

    @property
    def defaults(self) -> Dict[str, Any]:  # type: ignore[override]
        """The base optimizer's ``defaults`` (LR schedulers such as OneCycleLR
        read ``betas``/``momentum`` there). Mechanic's own hyper-parameters
        are in :attr:`hyperparameters`."""
        base = self.__dict__.get("base_optimizer")
        if base is None:
            return self.__dict__.setdefault("_init_defaults", {})
        return base.defaults

    @defaults.setter
    def defaults(self, value: Dict[str, Any]) -> None:
        base = self.__dict__.get("base_optimizer")
        if base is None:
            self.__dict__["_init_defaults"] = value
        else:
            base.defaults = value

    @property
    def hyperparameters(self) -> Dict[str, Any]:
        """Mechanic's hyper-parameters: weight_decay, eps, s_init, num_betas."""
        return dict(self._hyper)

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Add a group to the base optimizer (with the base's defaults)."""
        if self.__dict__.get("base_optimizer") is None:
            super().add_param_group(param_group)
        else:
            self.base_optimizer.add_param_group(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    # --------------------------------------------------------------- read-outs
    @property
    def scale(self) -> float:
        """The current learned scale :math:`S = \\sum_i s_i`."""
        return _tuner.scale(self._tuner)

    @property
    def tuner_state(self) -> Dict[str, Any]:
        """A copy of the tuner: ``step`` and the lists ``s``, ``m``, ``v``, ``r``."""
        return {key: (list(value) if isinstance(value, list) else value)
                for key, value in self._tuner.items()}

    def __repr__(self) -> str:
        h = self._hyper
        inner = "\n    ".join(repr(self.base_optimizer).splitlines())
        return (f"Mechanic(weight_decay={h['weight_decay']}, eps={h['eps']}, "
                f"s_init={h['s_init']}, num_betas={h['num_betas']}, "
                f"scale={self.scale:.6g},\n    {inner})")

    # -------------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:  # type: ignore[override]
        """One Mechanic step: tuner update, base step, rescaled iterate.

        ``closure`` (optional) re-evaluates the model and returns the loss, as
        in torch; it is called once, with gradients enabled, and its value is
        returned. Raises ``ValueError`` without touching any state when a
        gradient, a parameter or the scale update is non-finite.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        entries = self._entries()
        if not entries:
            # Nothing to tune; the base step is a no-op for torch optimizers but
            # keeps step hooks and LR-scheduler bookkeeping as usual.
            self.base_optimizer.step()
            return loss
        hyper = self._hyper
        scale_old = _tuner.scale(self._tuner)

        # Read-only pass: norms and inner products with x - x_ref.
        buckets: Dict[Any, Any] = {}
        base, groups = self.base_optimizer, self.param_groups
        adam_groups = [self._fused and group_supported(base, group) for group in groups]
        for entry in entries:
            p, state = entry.param, self.state.get(entry.param)
            group = groups[entry.group]
            if adam_groups[entry.group] and fusable(base, p, state):
                key = ("adam", p.dtype)
                if key not in buckets:
                    buckets[key] = AdamBucket(base, self._x_stats)
                buckets[key].add(entry, state, group)
            else:
                key = (p.device, p.dtype)
                if key not in buckets:
                    buckets[key] = Bucket()
                buckets[key].add(entry, state)
        for bucket in buckets.values():
            if isinstance(bucket, AdamBucket):
                bucket.measure()
            else:
                bucket.measure(self._fused)

        g_sq = x_sq = 0.0
        for entry in entries:
            if not math.isfinite(entry.g_norm):
                raise ValueError(_bad_input_message(entry, "gradient"))
            if not math.isfinite(entry.x_norm):
                raise ValueError(_bad_input_message(entry, "value"))
            g_sq += entry.g_norm * entry.g_norm
            x_sq += entry.x_norm * entry.x_norm
        g_dot = math.fsum(b.g_dot for b in buckets.values())
        x_dot = math.fsum(b.x_dot for b in buckets.values())

        h = _tuner.betting_signal(g_sq, x_sq, g_dot, x_dot, scale_old, hyper)
        new_tuner = _tuner.tuner_update(self._tuner, h, hyper)
        scale_new = _tuner.scale(new_tuner)
        if not _tuner.is_finite(h, new_tuner):
            raise ValueError(
                f"Mechanic.step(): the scale update is not finite (h={h!r}, new scale="
                f"{scale_new!r}); nothing was updated: parameters, Mechanic state (offset, "
                f"s, m, v, r) and the base optimizer's state are untouched.")

        # From here on state changes.
        s_eps = scale_old + hyper["eps"]
        adam = [b for b in buckets.values() if isinstance(b, AdamBucket)]
        generic = [b for b in buckets.values() if not isinstance(b, AdamBucket)]
        for bucket in generic:
            bucket.prepare(self.state)
        # The base optimizer steps the other parameters (and runs its hooks);
        # the fused Adam path steps its own below.
        hidden = [b.hide_grads() for b in adam]
        try:
            self.base_optimizer.step()
        finally:
            for bucket, grads in zip(adam, hidden):
                bucket.restore_grads(grads)
        for bucket in generic:
            bucket.finish(s_eps, scale_new)
        for bucket in adam:
            bucket.update(s_eps, scale_new)

        new_tuner["step"] = self._tuner["step"] + 1
        self._tuner = new_tuner
        return loss

    def _entries(self) -> List[Entry]:
        entries = []
        flat = 0
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                index = flat
                flat += 1
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Mechanic does not support sparse gradients "
                                       f"(param_groups[{gi}]['params'][{pi}])")
                if not torch.is_floating_point(p):
                    raise RuntimeError("Mechanic supports real floating-point parameters only "
                                       f"(param_groups[{gi}]['params'][{pi}] is {p.dtype})")
                entries.append(Entry(p, gi, pi, index))
        return entries

    # ------------------------------------------------------------- state dict
    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to resume bit-for-bit.

        Keys: ``state`` (per parameter: ``offset``, ``offset_scale`` and for
        bf16/fp16 parameters ``master``; indexed by the parameter's position
        over ``param_groups`` as in torch), ``tuner`` (``step`` and float64
        tensors ``s``, ``m``, ``v``, ``r``), ``hyper`` (Mechanic's
        hyper-parameters), ``base`` (the base optimizer's ``state_dict()``) and
        ``param_groups`` (the base's, for logging). Only tensors, numbers and
        strings: it loads with ``torch.load(..., weights_only=True)``. As for
        torch optimizers, tensors are references, not copies.
        """
        base_sd = self.base_optimizer.state_dict()
        params = [p for group in self.param_groups for p in group["params"]]
        per_param = {}
        for index, p in enumerate(params):
            state = self.state.get(p)
            if state:
                per_param[index] = dict(state)
        tuner: Dict[str, Any] = {key: torch.tensor(self._tuner[key], dtype=torch.float64)
                                 for key in _tuner.TUNER_KEYS}
        tuner["step"] = self._tuner["step"]
        return {
            "state": per_param,
            "tuner": tuner,
            "hyper": dict(self._hyper),
            "base": base_sd,
            "param_groups": base_sd["param_groups"],
        }

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`, hyper-parameters included (as torch
        restores its param_groups). Everything is validated before anything
        changes; then the base optimizer is loaded, then Mechanic's state."""
        for key in ("state", "tuner", "hyper", "base"):
            if key not in state_dict:
                raise ValueError(f"Mechanic.load_state_dict: missing key {key!r}")
        saved = state_dict["hyper"]
        hyper = _tuner.check_hyper(saved["weight_decay"], saved["eps"], saved["s_init"],
                                   saved["num_betas"])
        tuner = state_dict["tuner"]
        loaded_tuner: Dict[str, Any] = {"step": int(tuner["step"])}
        for key in _tuner.TUNER_KEYS:
            value = torch.as_tensor(tuner[key]).detach()
            if value.shape != (hyper["num_betas"],):
                raise ValueError(f"Mechanic.load_state_dict: tuner {key!r} has shape "
                                 f"{tuple(value.shape)}, expected ({hyper['num_betas']},)")
            loaded_tuner[key] = value.to("cpu", torch.float64).tolist()
        params = [p for group in self.param_groups for p in group["params"]]
        loaded_state = {}
        for index, saved_state in state_dict["state"].items():
            index = int(index)
            if not 0 <= index < len(params):
                raise ValueError(f"Mechanic.load_state_dict: state for parameter {index}, "
                                 f"but the optimizer holds {len(params)} parameters")
            loaded_state[params[index]] = _load_param_state(params[index], index, saved_state)

        self.base_optimizer.load_state_dict(state_dict["base"])
        self._x_stats.clear()
        self.state.clear()
        self.state.update(loaded_state)
        self._hyper = hyper
        self._tuner = loaded_tuner

    def __getstate__(self) -> Dict[str, Any]:
        return {"state": self.state, "base_optimizer": self.base_optimizer, "_hyper": self._hyper,
                "_tuner": self._tuner, "_fused": self._fused}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        super().__setstate__(state)
        self._x_stats = {}


def _load_param_state(p: torch.Tensor, index: int, saved: Dict[str, Any]) -> Dict[str, Any]:
    narrow = is_narrow(p.dtype)
    want = {"offset", "offset_scale"} | ({"master"} if narrow else set())
    if set(saved) != want:
        raise ValueError(f"Mechanic.load_state_dict: parameter {index} ({p.dtype}) needs "
                         f"state keys {sorted(want)}, got {sorted(saved)}")
    scale = float(saved["offset_scale"])
    if not (math.isfinite(scale) and scale > 0.0):
        raise ValueError(f"Mechanic.load_state_dict: offset_scale of parameter {index} "
                         f"is {scale!r}")
    out: Dict[str, Any] = {"offset_scale": scale}
    for key in sorted(want - {"offset_scale"}):
        value = saved[key]
        if not isinstance(value, torch.Tensor) or value.shape != p.shape:
            raise ValueError(f"Mechanic.load_state_dict: {key} of parameter {index} must be "
                             f"a tensor of shape {tuple(p.shape)}")
        if value.dtype != work_dtype(p.dtype):
            raise ValueError(f"Mechanic.load_state_dict: {key} of parameter {index} is "
                             f"{value.dtype}, expected {work_dtype(p.dtype)}")
        out[key] = value.detach().to(p.device).clone(memory_format=torch.preserve_format)
    return out


def _bad_input_message(entry: Entry, what: str) -> str:
    p = entry.param
    tensor = p.grad if what == "gradient" else p
    if bool(torch.isfinite(tensor).all()):
        what = f"{what} norm (the entries are finite, the sum of squares overflows)"
    else:
        what = f"{what} (NaN or inf)"
    return (f"Mechanic.step(): non-finite {what} in parameter "
            f"param_groups[{entry.group}]['params'][{entry.index}] (parameter index "
            f"{entry.flat}, shape {tuple(p.shape)}, {p.dtype}); nothing was updated: "
            f"parameters, Mechanic state (offset, s, m, v, r) and the base optimizer's "
            f"state are untouched. Drop this batch (zero_grad()) or fix the loss.")
