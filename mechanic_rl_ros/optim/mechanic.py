"""Mechanic learning-rate tuner for any torch optimizer (pure torch).

Reference: A. Cutkosky, A. Defazio, H. Mehta, "Mechanic: A Learning Rate Tuner",
NeurIPS 2023, arXiv:2306.00144, Algorithm 1 (MECHANIC). The arithmetic follows
``optax.contrib.mechanize`` of optax 0.2.8 step for step; ``docs/mechanic.md``
explains the algorithm, its use with schedules and with gradient clipping.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch.optim import Optimizer

__all__ = ["Mechanic"]

_TUNER_KEYS = ("s", "m", "v", "r")


class Mechanic(Optimizer):
    r"""Learn the global learning-rate scale of a base optimizer (Mechanic).

    The base optimizer runs with learning rate 1.0 (or a schedule that peaks at
    1.0); its step from :math:`x_t` gives the update :math:`u_t`. Mechanic keeps
    the reference point :math:`x_{ref}` and sets

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
      before it enters :math:`r` (not in the paper; optax added it), so the
      first step, with :math:`m = 0`, leaves :math:`r = 0`;
    * :math:`m'` is floored at :math:`|h_t| + \epsilon` and :math:`s'` uses the
      *new* :math:`m'`, :math:`r'` and :math:`v'`; :math:`r'` is stored unclipped;
    * :math:`\Delta_t` is recomputed from :math:`x_t` with the
      :math:`S_t + \epsilon` denominator (optax's memory-saving form) rather
      than accumulated, so it reflects what the parameters actually are;
    * :math:`x_{ref}` is taken at a parameter's first step, not at
      construction: loading pretrained weights after building the optimizer
      works. Before the first step :attr:`scale` is ``num_betas * s_init``;
      after it, ``s_init``.
    * optax stores :math:`-\Delta` and the opposite sign of :math:`h` and
      :math:`r`; the iterates are the same.

    Precision. The tuner scalars are float64. For float32/float64 parameters
    the extra memory is one copy of the parameters (``x_ref``) plus
    ``4 * num_betas`` scalars; the step allocates one transient parameter-sized
    buffer (it must survive the base step) and stores no gradient copy.
    Recomputing :math:`\Delta` from the parameters stalls when
    :math:`S\,|u|` is below one ulp of :math:`x` (always for bf16/fp16, and for
    float32 parameters of magnitude ~1 with ``s_init`` around 1e-8). Parameters
    narrower than float32 therefore also keep ``offset``, a float32 master copy
    of :math:`x - x_{ref}`; the parameter is set to the rounding of
    :math:`x_{ref} + \text{offset}`. ``fp32_offset=True`` turns this on for
    float32 parameters too (one more copy), ``False`` turns it off everywhere.
    If something outside the optimizer changes a parameter between steps, the
    changed entries of ``offset`` are re-synchronised from the parameter.

    Non-finite input. If a gradient, a parameter or the scale update is NaN or
    infinite, :meth:`step` raises :class:`ValueError` naming the parameter
    (group and index) *before* anything is modified: parameters, ``x_ref``,
    ``offset``, ``s, m, v, r`` and the base optimizer's state are untouched, so
    the caller can drop the batch (``zero_grad()``) and continue.

    Parameters without a gradient in a step are left alone and do not count in
    the norms or inner products; torch LR schedulers attached to the base (or to
    this object: the ``param_groups`` are shared) work unchanged.

    Args:
        base_optimizer: any ``torch.optim.Optimizer``, built with lr=1.0 (or a
            schedule peaking at 1.0). Optimizers that need a closure in
            ``step`` (LBFGS) are not supported.
        weight_decay: :math:`\lambda`, Mechanic's own decay term in
            :math:`h_t` (not the base optimizer's weight decay).
        eps: :math:`\epsilon` of the formulas above.
        s_init: initial scale; each of the ``num_betas`` tuners starts at it.
        num_betas: number of tuners, :math:`\beta_i = 1 - 10^{-i}`.
        fp32_offset: keep a float32 (or wider) master copy of
            :math:`x - x_{ref}`; ``None`` = only for parameters narrower than
            float32.

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
        *,
        fp32_offset: Optional[bool] = None,
    ) -> None:
        if not isinstance(base_optimizer, Optimizer):
            raise TypeError(
                f"Mechanic wraps a torch.optim.Optimizer, got {type(base_optimizer).__name__}")
        if isinstance(base_optimizer, Mechanic):
            raise TypeError("Mechanic cannot wrap another Mechanic")
        hyper = _check_hyper(weight_decay, eps, s_init, num_betas, fp32_offset)
        params = [p for group in base_optimizer.param_groups for p in group["params"]]
        # Optimizer.__init__ builds throw-away groups (see the param_groups
        # property); afterwards the base optimizer's groups are the only ones.
        super().__init__(params, dict(hyper))
        self.__dict__.pop("_init_param_groups", None)
        self.__dict__["base_optimizer"] = base_optimizer
        self._hyper = hyper
        self.tuner_state = _initial_tuner(hyper)

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
        return float(self.tuner_state["s"].sum())

    @property
    def hyperparameters(self) -> Dict[str, Any]:
        return dict(self._hyper)

    def __repr__(self) -> str:
        h = self._hyper
        inner = "\n    ".join(repr(self.base_optimizer).splitlines())
        return (f"Mechanic(weight_decay={h['weight_decay']}, eps={h['eps']}, "
                f"s_init={h['s_init']}, num_betas={h['num_betas']}, "
                f"fp32_offset={h['fp32_offset']}, scale={self.scale:.6g},\n    {inner})")

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
            return loss
        hyper = self._hyper
        eps = hyper["eps"]
        s_old = self.tuner_state["s"]
        scale_old = float(s_old.sum())

        fast, master = _Fast(), []
        for entry in entries:
            if entry.master:
                master.append(_master_stats(entry, self.state.get(entry.param)))
            else:
                fast.add(entry, self.state.get(entry.param))
        fast.compute()

        per_param = fast.norms + [(m.entry, m.g_norm, m.x_norm) for m in master]
        per_param.sort(key=lambda item: item[0].flat)
        g_sq = x_sq = 0.0
        for entry, g_norm, x_norm in per_param:
            if not math.isfinite(g_norm):
                raise ValueError(_bad_input_message(entry, "gradient"))
            if not math.isfinite(x_norm):
                raise ValueError(_bad_input_message(entry, "value"))
            g_sq += g_norm * g_norm
            x_sq += x_norm * x_norm
        g_dot = fast.g_dot + sum(m.g_dot for m in master)
        x_dot = fast.x_dot + sum(m.x_dot for m in master)

        # h = <g + c x, (x - x_ref)> / (S + eps), with c the lambda term.
        c = hyper["weight_decay"] * scale_old * math.sqrt(g_sq) / (math.sqrt(x_sq) + eps)
        h = (g_dot + c * x_dot) / (scale_old + eps)
        new_tuner = _tuner_update(self.tuner_state, h, hyper)
        scale_new = float(new_tuner["s"].sum())
        if not (math.isfinite(h) and math.isfinite(scale_new)
                and bool(torch.isfinite(new_tuner["m"]).all())
                and bool(torch.isfinite(new_tuner["v"]).all())
                and bool(torch.isfinite(new_tuner["r"]).all())):
            raise ValueError(
                f"Mechanic.step(): the scale update is not finite (h={h!r}, new scale="
                f"{scale_new!r}); nothing was updated: parameters, Mechanic state (x_ref, "
                f"offset, s, m, v, r) and the base optimizer's state are untouched.")

        # From here on state changes. New parameters get x_ref = x_t now.
        for entry in entries:
            state = self.state[entry.param]
            if not state:
                state["x_ref"] = entry.param.detach().clone(memory_format=torch.preserve_format)
                if entry.master:
                    state["offset"] = torch.zeros_like(
                        entry.param, dtype=_offset_dtype(entry.param.dtype),
                        memory_format=torch.preserve_format)
        for m in master:
            m.snapshot = m.entry.param.detach().clone()

        self.base_optimizer.step()

        # x_{t+1} = x_ref + S'(Delta_t + u_t) = x_ref + S'(x_base - x_ref) + S' k d,
        # with d = x_t - x_ref, x_base = x_t + u_t and k = 1/(S + eps) - 1.
        k = 1.0 / (scale_old + eps) - 1.0
        fast.finish(self.state, scale_new, scale_new * k)
        inv = 1.0 / (scale_old + eps)
        for m in master:
            p = m.entry.param
            state = self.state[p]
            u = p.detach().to(m.offset.dtype) - m.snapshot.to(m.offset.dtype)
            new_offset = (m.offset * inv + u) * scale_new
            p.copy_(state["x_ref"].to(m.offset.dtype) + new_offset)
            state["offset"] = new_offset

        new_tuner["step"] = self.tuner_state["step"] + 1
        self.tuner_state = new_tuner
        return loss

    def _entries(self) -> List["_Entry"]:
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
                if torch.is_complex(p):
                    raise RuntimeError("Mechanic does not support complex parameters "
                                       f"(param_groups[{gi}]['params'][{pi}])")
                state = self.state.get(p)
                if state:
                    use_master = "offset" in state
                else:
                    wanted = self._hyper["fp32_offset"]
                    use_master = (torch.finfo(p.dtype).bits < 32) if wanted is None else wanted
                entries.append(_Entry(p, p.grad, gi, pi, index, use_master))
        return entries

    # ------------------------------------------------------------- state dict
    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to resume bit-for-bit.

        Keys: ``state`` (per-parameter ``x_ref`` and ``offset``, indexed by the
        parameter's position over ``param_groups`` as in torch), ``tuner``
        (``step``, ``s``, ``m``, ``v``, ``r``), ``hyper`` (Mechanic's
        hyper-parameters), ``base`` (the base optimizer's ``state_dict()``)
        and ``param_groups`` (the base's, for logging). Only tensors, numbers
        and strings: it loads with ``torch.load(..., weights_only=True)``.
        As for torch optimizers, tensors are references, not copies.
        """
        base_sd = self.base_optimizer.state_dict()
        params = [p for group in self.param_groups for p in group["params"]]
        per_param = {}
        for index, p in enumerate(params):
            state = self.state.get(p)
            if state:
                per_param[index] = dict(state)
        tuner = {key: self.tuner_state[key] for key in _TUNER_KEYS}
        tuner["step"] = self.tuner_state["step"]
        return {
            "state": per_param,
            "tuner": tuner,
            "hyper": dict(self._hyper),
            "base": base_sd,
            "param_groups": base_sd["param_groups"],
        }

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (hyper-parameters included, as torch
        restores its param_groups). Everything is validated before anything
        changes; the base optimizer is loaded first, then Mechanic's state."""
        for key in ("state", "tuner", "hyper", "base"):
            if key not in state_dict:
                raise ValueError(f"Mechanic.load_state_dict: missing key {key!r}")
        saved = state_dict["hyper"]
        hyper = _check_hyper(saved["weight_decay"], saved["eps"], saved["s_init"],
                             saved["num_betas"], saved.get("fp32_offset"))
        tuner = state_dict["tuner"]
        loaded_tuner: Dict[str, Any] = {"step": int(tuner["step"])}
        for key in _TUNER_KEYS:
            value = torch.as_tensor(tuner[key])
            if value.shape != (hyper["num_betas"],):
                raise ValueError(f"Mechanic.load_state_dict: tuner {key!r} has shape "
                                 f"{tuple(value.shape)}, expected ({hyper['num_betas']},)")
            loaded_tuner[key] = value.detach().to("cpu", torch.float64).clone()
        params = [p for group in self.param_groups for p in group["params"]]
        loaded_state = {}
        for index, saved_state in state_dict["state"].items():
            index = int(index)
            if not 0 <= index < len(params):
                raise ValueError(f"Mechanic.load_state_dict: state for parameter {index}, "
                                 f"but the optimizer holds {len(params)} parameters")
            p = params[index]
            new_state = {}
            for key, value in saved_state.items():
                if key not in ("x_ref", "offset"):
                    raise ValueError(f"Mechanic.load_state_dict: unknown state key {key!r}")
                if value.shape != p.shape:
                    raise ValueError(
                        f"Mechanic.load_state_dict: {key} of parameter {index} has shape "
                        f"{tuple(value.shape)}, the parameter {tuple(p.shape)}")
                want = p.dtype if key == "x_ref" else _offset_dtype(p.dtype)
                if key == "offset" and value.dtype != want and value.dtype != torch.float64:
                    raise ValueError(f"Mechanic.load_state_dict: offset of parameter {index} "
                                     f"is {value.dtype}, expected {want}")
                if key == "x_ref" and value.dtype != want:
                    raise ValueError(f"Mechanic.load_state_dict: x_ref of parameter {index} "
                                     f"is {value.dtype}, the parameter {want}")
                new_state[key] = value.detach().to(p.device).clone(
                    memory_format=torch.preserve_format)
            if "x_ref" not in new_state:
                raise ValueError(f"Mechanic.load_state_dict: parameter {index} has no x_ref")
            loaded_state[p] = new_state

        self.base_optimizer.load_state_dict(state_dict["base"])
        self.state.clear()
        self.state.update(loaded_state)
        self._hyper = hyper
        self.defaults = dict(hyper)
        self.tuner_state = loaded_tuner

    def __getstate__(self) -> Dict[str, Any]:
        return {"defaults": self.defaults, "state": self.state,
                "base_optimizer": self.base_optimizer, "_hyper": self._hyper,
                "tuner_state": self.tuner_state}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        super().__setstate__(state)


# ---------------------------------------------------------------------------
# helpers


class _Entry:
    __slots__ = ("param", "grad", "group", "index", "flat", "master")

    def __init__(self, param, grad, group, index, flat, master):
        self.param, self.grad = param, grad
        self.group, self.index, self.flat, self.master = group, index, flat, master


def _check_hyper(weight_decay, eps, s_init, num_betas, fp32_offset) -> Dict[str, Any]:
    if not (math.isfinite(weight_decay) and weight_decay >= 0.0):
        raise ValueError(f"weight_decay must be finite and >= 0, got {weight_decay!r}")
    if not (math.isfinite(eps) and eps > 0.0):
        raise ValueError(f"eps must be finite and > 0, got {eps!r}")
    if not (math.isfinite(s_init) and s_init > 0.0):
        raise ValueError(f"s_init must be finite and > 0, got {s_init!r}")
    if isinstance(num_betas, bool) or int(num_betas) != num_betas or num_betas < 1:
        raise ValueError(f"num_betas must be an integer >= 1, got {num_betas!r}")
    if fp32_offset not in (None, True, False):
        raise ValueError(f"fp32_offset must be None, True or False, got {fp32_offset!r}")
    return {"weight_decay": float(weight_decay), "eps": float(eps), "s_init": float(s_init),
            "num_betas": int(num_betas), "fp32_offset": fp32_offset}


def _initial_tuner(hyper: Dict[str, Any]) -> Dict[str, Any]:
    n = hyper["num_betas"]
    zeros = torch.zeros(n, dtype=torch.float64)
    return {"step": 0, "s": torch.full((n,), hyper["s_init"], dtype=torch.float64),
            "m": zeros.clone(), "v": zeros.clone(), "r": zeros.clone()}


def _tuner_update(tuner: Dict[str, Any], h: float, hyper: Dict[str, Any]) -> Dict[str, Any]:
    """The betting update of the paper's Algorithm 1 with optax's clipping:
    clip uses the previous m; wealth and s use the new m, r, v."""
    n, eps = hyper["num_betas"], hyper["eps"]
    betas = torch.tensor([1.0 - 0.1 ** i for i in range(1, n + 1)], dtype=torch.float64)
    h_t = torch.tensor(h, dtype=torch.float64)
    s, m, v, r = (tuner[key] for key in _TUNER_KEYS)
    clipped = torch.clamp(h_t, min=-m, max=m)
    m_new = torch.maximum(betas * m, h_t.abs() + eps)
    v_new = betas ** 2 * v + h_t ** 2
    r_new = betas * r - clipped * s
    wealth = (hyper["s_init"] / n) * m_new + torch.clamp(r_new, min=0.0)
    s_new = wealth / (torch.sqrt(v_new) + eps)
    return {"s": s_new, "m": m_new, "v": v_new, "r": r_new}


def _offset_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _bad_input_message(entry: _Entry, what: str) -> str:
    p = entry.param
    return (f"Mechanic.step(): non-finite {what} (NaN or inf) in parameter "
            f"param_groups[{entry.group}]['params'][{entry.index}] (parameter index "
            f"{entry.flat}, shape {tuple(p.shape)}, {p.dtype}); nothing was updated: "
            f"parameters, Mechanic state (x_ref, offset, s, m, v, r) and the base "
            f"optimizer's state are untouched. Drop this batch (zero_grad()) or fix the loss.")


def _flat_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.dot(a.reshape(-1), b.reshape(-1))


class _Fast:
    """Parameters of float32 or wider without a master offset: Delta is
    recomputed from x - x_ref with vectorised (torch._foreach_*) kernels,
    bucketed by device and dtype."""

    def __init__(self) -> None:
        self.buckets: Dict[Tuple[torch.device, torch.dtype], Dict[str, list]] = {}
        self.norms: List[Tuple[_Entry, float, float]] = []
        self.g_dot = 0.0
        self.x_dot = 0.0

    def add(self, entry: _Entry, state: Optional[dict]) -> None:
        p = entry.param
        bucket = self.buckets.setdefault((p.device, p.dtype), {
            "entries": [], "params": [], "grads": [],
            "old": [], "old_params": [], "old_grads": [], "x_ref": [], "d": None})
        bucket["entries"].append(entry)
        bucket["params"].append(p.detach())
        bucket["grads"].append(entry.grad)
        if state:
            bucket["old"].append(entry)
            bucket["old_params"].append(p.detach())
            bucket["old_grads"].append(entry.grad)
            bucket["x_ref"].append(state["x_ref"])

    def compute(self) -> None:
        for bucket in self.buckets.values():
            g_norms = torch._foreach_norm(bucket["grads"])
            x_norms = torch._foreach_norm(bucket["params"])
            stats = [torch.stack(g_norms), torch.stack(x_norms)]
            if bucket["old"]:
                d = torch._foreach_sub(bucket["old_params"], bucket["x_ref"])
                bucket["d"] = d
                stats.append(torch.stack([_flat_dot(g, di) for g, di in zip(bucket["old_grads"], d)]))
                stats.append(torch.stack([_flat_dot(x, di) for x, di in zip(bucket["old_params"], d)]))
            values = torch.cat([s.reshape(-1) for s in stats]).to("cpu", torch.float64).tolist()
            n, k = len(bucket["entries"]), len(bucket["old"])
            for i, entry in enumerate(bucket["entries"]):
                self.norms.append((entry, values[i], values[n + i]))
            self.g_dot += math.fsum(values[2 * n:2 * n + k])
            self.x_dot += math.fsum(values[2 * n + k:2 * n + 2 * k])

    def finish(self, states, scale_new: float, d_coeff: float) -> None:
        for bucket in self.buckets.values():
            for entry, p in zip(bucket["entries"], bucket["params"]):
                torch.lerp(states[entry.param]["x_ref"], p, scale_new, out=p)
            if bucket["old"]:
                torch._foreach_add_(bucket["old_params"], bucket["d"], alpha=d_coeff)
                bucket["d"] = None


class _MasterStats:
    __slots__ = ("entry", "offset", "g_norm", "x_norm", "g_dot", "x_dot", "snapshot")


def _master_stats(entry: _Entry, state: Optional[dict]) -> _MasterStats:
    """Statistics for a parameter with a float32 master offset (x_hat - x_ref).

    If the parameter no longer equals the rounding of x_ref + offset (someone
    changed it outside the optimizer), the changed entries of the offset are
    re-derived from the parameter, as the recomputing form would see them.
    The state itself is not modified here."""
    p = entry.param.detach()
    out = _MasterStats()
    out.entry = entry
    wide = _offset_dtype(p.dtype)
    grad = entry.grad.to(wide)
    if state:
        x_ref = state["x_ref"].to(wide)
        offset = state["offset"]
        x_hat = x_ref + offset
        same = x_hat.to(p.dtype) == p
        if not bool(same.all()):
            offset = torch.where(same, offset, p.to(wide) - x_ref)
            x_hat = x_ref + offset
        out.offset = offset
        out.g_dot = float(_flat_dot(grad, offset))
        out.x_dot = float(_flat_dot(x_hat, offset))
    else:
        x_hat = p.to(wide)
        out.offset = torch.zeros_like(x_hat)
        out.g_dot = out.x_dot = 0.0
    out.g_norm = float(torch.linalg.vector_norm(grad))
    out.x_norm = float(torch.linalg.vector_norm(x_hat))
    out.snapshot = None
    return out
