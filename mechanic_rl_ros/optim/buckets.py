r"""Mechanic's per-parameter arithmetic around an arbitrary base optimizer.

The parameters of one step are grouped in buckets of one device and dtype. A
bucket reduces its parameters to the sums the tuner needs (:meth:`Bucket.measure`),
snapshots them before the base optimizer steps (:meth:`Bucket.prepare`) and,
after it, reads the base update :math:`u_t` off the parameters and moves them
to Mechanic's iterate (:meth:`Bucket.finish`). Float32/float64 CPU tensors go
through the compiled passes of ``fused_kernels.c`` (:mod:`.fused`); everything
else through ``torch._foreach_*`` kernels.

State and notation. The displacement :math:`x_t - x_{ref}` is stored as
``offset_scale * offset`` (:math:`k R`: a float per parameter tensor times a
tensor in the parameter's dtype, float32 for bf16/fp16 parameters), so
:math:`x_{ref}` is implicit and a step updates :math:`R` with one scaled add.
With :math:`S` the scale before and :math:`S'` after the tuner update,
:math:`a = (S + \epsilon)/k` and :math:`k' = S' k / (S + \epsilon)`, one step is

.. math::
    R' = R + a\,u, \qquad x' = x + (S + \epsilon)\,u + (k' - k)\,R'

which is optax's :math:`x' = x_{ref} + S'(\Delta + u)` with
:math:`\Delta = (x - x_{ref})/(S + \epsilon)` (paper, Algorithm 1, (M2) and
(M8) of ``docs/mechanic.md``). bf16/fp16 parameters keep a float32 ``master``
copy as :math:`x`; the parameter is its rounding.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import torch

from . import fused as _fused

__all__ = ["Entry", "Bucket", "is_narrow", "work_dtype", "new_state", "rescale_offset"]

# offset_scale is folded back into offset when it leaves this range, so that
# offset stays far from overflow and underflow in its own dtype.
RESCALE_BELOW, RESCALE_ABOVE = 1e-8, 1e8
# Below this many elements the per-step snapshot is made of separate clones.
_FLAT_SNAPSHOT_MIN = 1 << 16


def is_narrow(dtype: torch.dtype) -> bool:
    """True for floating dtypes narrower than float32 (bf16, fp16)."""
    return torch.finfo(dtype).bits < 32


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype Mechanic's arithmetic (and ``offset``) uses for a parameter dtype."""
    return torch.float32 if is_narrow(dtype) else dtype


def new_state(param: torch.Tensor) -> Dict[str, Any]:
    """Mechanic's state of a parameter at its first step: zero displacement."""
    offset = torch.zeros_like(param, dtype=work_dtype(param.dtype),
                              memory_format=torch.preserve_format)
    return {"offset": offset, "offset_scale": 1.0}


def rescale_offset(state: Dict[str, Any], k_new: float) -> bool:
    """Set ``offset_scale`` to ``k_new``, or fold ``k_new`` into ``offset`` (and
    set the scale to 1) when it leaves [1e-8, 1e8]; return True when folded."""
    if RESCALE_BELOW <= k_new <= RESCALE_ABOVE:
        state["offset_scale"] = k_new
        return False
    state["offset"].mul_(k_new)
    state["offset_scale"] = 1.0
    return True


def _snapshot(params: List[torch.Tensor], copy: bool = True) -> List[torch.Tensor]:
    """Copies of the parameters (uninitialised buffers of their shapes with
    ``copy=False``), as views of one flat buffer: a single large
    allocation is recycled by the C allocator from step to step, where many
    separate ones are returned to the OS and page-faulted in again (measured:
    ~8000 minor faults per step for 4.7 M float32 parameters, ~5x the cost of
    the copy itself)."""
    total = sum(p.numel() for p in params)
    if total < _FLAT_SNAPSHOT_MIN:
        return [p.clone() if copy else torch.empty_like(p, memory_format=torch.contiguous_format)
                for p in params]
    flat = torch.empty(total, dtype=params[0].dtype, device=params[0].device)
    views, offset = [], 0
    for p in params:
        views.append(flat[offset:offset + p.numel()].view(p.shape))
        offset += p.numel()
    if copy:
        torch._foreach_copy_(views, params)
    return views


def _flat_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # linalg.vecdot is a TensorIterator reduction; torch.dot goes to BLAS,
    # which costs ~10x more CPU time with 2 threads on a busy machine.
    return torch.linalg.vecdot(a.reshape(-1), b.reshape(-1))


class Entry:
    """A parameter with a gradient in this step: where it sits in
    ``param_groups`` (for error messages) and, after measuring, the norms of
    its gradient and value."""

    __slots__ = ("param", "group", "index", "flat", "g_norm", "x_norm")

    def __init__(self, param, group, index, flat):
        self.param, self.group, self.index, self.flat = param, group, index, flat
        self.g_norm = self.x_norm = 0.0


class Bucket:
    """Parameters of one device and dtype, updated in two fused passes
    (fused_kernels.c: float32/float64 on the CPU, contiguous) or with
    torch._foreach_* kernels (everything else, and ``fused=False``); see the
    module docstring for the update. For bf16/fp16 parameters :math:`x` is the
    float32 ``master`` and :math:`u` is read off the parameter itself.

    After :meth:`measure`, ``g_dot`` and ``x_dot`` are this bucket's
    :math:`\\langle g, x - x_{ref}\\rangle` and :math:`\\langle x, x - x_{ref}\\rangle`.
    """

    def __init__(self) -> None:
        self.entries: List[Entry] = []
        self.states: List[Optional[dict]] = []
        self.narrow = False
        self.fused = False
        self.g_dot = 0.0
        self.x_dot = 0.0

    def add(self, entry: Entry, state: Optional[dict]) -> None:
        self.narrow = is_narrow(entry.param.dtype)
        self.entries.append(entry)
        self.states.append(state if state else None)

    def measure(self, use_fused: bool) -> None:
        """Read-only: the norms of gradients and values, and the two dots."""
        params = [e.param.detach() for e in self.entries]
        grads = [e.param.grad for e in self.entries]
        self.fused = False
        if use_fused and not self.narrow:
            offsets = [None if s is None else s["offset"] for s in self.states]
            if _fused.supports(params + grads + [r for r in offsets if r is not None]):
                self._measure_fused(params, grads, offsets)
                return
        if self.narrow:
            grads = [g.float() for g in grads]
            xs = []
            self.masters = []
            for p, state in zip(params, self.states):
                if state is None:
                    master = p.float()
                else:
                    master = state["master"]
                    same = master.to(p.dtype) == p
                    if not bool(same.all()):
                        master = torch.where(same, master, p.float())
                self.masters.append(master)
                xs.append(master)
        else:
            xs = params
        self.params, self.grads, self.xs = params, grads, xs
        old = [i for i, state in enumerate(self.states) if state is not None]
        offsets = [self.states[i]["offset"] for i in old]
        stats = list(torch._foreach_norm(grads)) + list(torch._foreach_norm(xs))
        stats += [_flat_dot(grads[i], r) for i, r in zip(old, offsets)]
        stats += [_flat_dot(xs[i], r) for i, r in zip(old, offsets)]
        values = torch.stack(stats).tolist()
        n, k = len(params), len(old)
        for i, entry in enumerate(self.entries):
            entry.g_norm, entry.x_norm = values[i], values[n + i]
        scales = [self.states[i]["offset_scale"] for i in old]
        self.g_dot = math.fsum(s * d for s, d in zip(scales, values[2 * n:2 * n + k]))
        self.x_dot = math.fsum(s * d for s, d in zip(scales, values[2 * n + k:2 * n + 2 * k]))

    def prepare(self, all_states) -> None:
        """Create the state of new parameters and snapshot x_t (the only
        transient parameter-sized buffer)."""
        for i, entry in enumerate(self.entries):
            state = all_states[entry.param]
            if not state:
                state.update(new_state(entry.param))
                if self.narrow:
                    state["master"] = self.masters[i]
            elif self.narrow:
                state["master"] = self.masters[i]
            self.states[i] = state
        if not self.fused:
            self.snapshots = _snapshot(self.params)
        self.masters = self.xs = self.grads = None

    def _measure_fused(self, params, grads, offsets) -> None:
        """measure() and the snapshot of prepare() in one pass (fused_kernels.c)."""
        self.params = params
        self.snapshots = _snapshot(params, copy=False)
        values = _fused.measure(grads, params, offsets, self.snapshots)
        for entry, (gg, xx, _, _) in zip(self.entries, values):
            entry.g_norm, entry.x_norm = math.sqrt(gg), math.sqrt(xx)
        scales = [0.0 if s is None else s["offset_scale"] for s in self.states]
        self.g_dot = math.fsum(k * v for k, v in zip(scales, values[:, 2].tolist()))
        self.x_dot = math.fsum(k * v for k, v in zip(scales, values[:, 3].tolist()))
        self.fused = True

    def finish(self, s_eps: float, scale_new: float) -> None:
        """After the base step: move every parameter to Mechanic's iterate."""
        if self.fused:
            ks = [state["offset_scale"] for state in self.states]
            _fused.finish(self.params, self.snapshots, [state["offset"] for state in self.states],
                         [s_eps / k for k in ks], [scale_new * k / s_eps - k for k in ks], s_eps)
        else:
            self._finish_foreach(s_eps, scale_new)
        for state in self.states:
            rescale_offset(state, scale_new * state["offset_scale"] / s_eps)
        self.snapshots = None

    def _finish_foreach(self, s_eps: float, scale_new: float) -> None:
        groups: Dict[float, List[int]] = {}
        for i, state in enumerate(self.states):
            groups.setdefault(state["offset_scale"], []).append(i)
        for k, idx in groups.items():
            k_new = scale_new * k / s_eps
            offsets = [self.states[i]["offset"] for i in idx]
            params = [self.params[i] for i in idx]
            snaps = [self.snapshots[i] for i in idx]
            if self.narrow:
                # u in float32 from the rounded parameters; x is the master.
                us = [p.float() - s.float() for p, s in zip(params, snaps)]
                xs = [self.states[i]["master"] for i in idx]
                torch._foreach_add_(offsets, us, alpha=s_eps / k)
                torch._foreach_add_(xs, us, alpha=s_eps)
                torch._foreach_add_(xs, offsets, alpha=k_new - k)
                for p, x in zip(params, xs):
                    p.copy_(x)
            else:
                torch._foreach_add_(offsets, params, alpha=s_eps / k)
                torch._foreach_sub_(offsets, snaps, alpha=s_eps / k)
                for p, snap in zip(params, snaps):
                    torch.lerp(snap, p, s_eps, out=p)
                torch._foreach_add_(params, offsets, alpha=k_new - k)
