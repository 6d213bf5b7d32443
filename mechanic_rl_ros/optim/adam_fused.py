r"""Mechanic over torch's Adam/AdamW in two fused passes (``fused_kernels.c``).

With an arbitrary base optimizer a Mechanic step is: reduce
:math:`\|g\|^2, \|x\|^2, \langle g, R\rangle, \langle x, R\rangle` and
snapshot :math:`x` (one pass), the base optimizer's own step, then read
:math:`u = x_{base} - x` back and apply Mechanic's update (another pass)
(:mod:`.buckets`). When the base is ``torch.optim.Adam``/``AdamW`` its update
is known, so it is computed inside Mechanic's update pass instead:

* pass 1 (:func:`.fused.adam_measure`, before the tuner update): reads
  :math:`g, R` for :math:`\|g\|^2, \langle g, R\rangle`;
* pass 2 (:func:`.fused.adam_update`, after it): torch's Adam step
  (moments :math:`m, v` in place, bias corrections, L2 or decoupled weight
  decay, as ``torch.optim.Adam``'s single-tensor code orders them) gives
  :math:`u`, then :math:`R' = R + a u`, :math:`x' = x + e u + d R'`
  (:mod:`.buckets`), and the sums :math:`\|x'\|^2, \langle x', R'\rangle`
  that the next step's :math:`h` needs ((M3) of ``docs/mechanic.md``).

So :math:`x` is read once and :math:`g, R` twice per step, and no snapshot is
written. The cached sums are used only while the parameter is provably the
one they were computed from: same storage, same offset tensor, and autograd's
version counter unchanged (every in-place torch op on the parameter, such as
``load_state_dict`` or ``with torch.no_grad(): p.mul_(...)``, bumps it;
``load_state_dict`` of the optimizer clears the cache). Otherwise pass 1 also
reads :math:`x` and recomputes them. Writes that bypass the version counter
(through ``p.data``) are not seen: the next step then uses the sums of the
parameter as Mechanic left it.

Parameters take this path when the base optimizer is exactly
``torch.optim.Adam`` or ``torch.optim.AdamW``, their group has
``amsgrad=False, maximize=False, capturable=False, differentiable=False`` and
Python-number hyper-parameters, they are contiguous float32/float64 CPU
tensors (gradient, offset, moments too), and both Mechanic and Adam already
hold state for them (their first step goes through the generic path, which
lets torch create Adam's state). The base optimizer's ``step()`` still runs,
with these parameters' gradients hidden, so its hooks and LR-scheduler
bookkeeping behave as usual.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List

import numpy as np
import torch

from . import fused as _fused
from .buckets import Entry, rescale_offset

__all__ = ["group_supported", "fusable", "AdamBucket"]

_ADAM_TYPES = (torch.optim.Adam, torch.optim.AdamW)
_SCALAR = (int, float)
_DTYPES = (torch.float32, torch.float64)


def group_supported(base: torch.optim.Optimizer, group: Dict[str, Any]) -> bool:
    """Whether the base optimizer and this group's settings are ones the
    kernel computes (see the module docstring)."""
    if type(base) not in _ADAM_TYPES:
        return False
    if group.get("amsgrad") or group.get("maximize") or group.get("capturable") \
            or group.get("differentiable"):
        return False
    betas = group.get("betas", ())
    return (len(betas) == 2 and all(isinstance(b, _SCALAR) for b in betas)
            and all(isinstance(group.get(key), _SCALAR) for key in ("lr", "eps", "weight_decay")))


def fusable(base: torch.optim.Optimizer, p: torch.Tensor, mechanic_state: Dict[str, Any]) -> bool:
    """Whether parameter ``p`` (with a gradient, in a group for which
    :func:`group_supported` holds) can take the fused Adam path this step."""
    if not mechanic_state or p.dtype not in _DTYPES or p.device.type != "cpu":
        return False
    adam = base.state.get(p)
    if not adam:
        return False
    step, m, v = adam.get("step"), adam.get("exp_avg"), adam.get("exp_avg_sq")
    if not (isinstance(step, torch.Tensor) and step.device.type == "cpu" and step.numel() == 1
            and not step.requires_grad and isinstance(m, torch.Tensor)
            and isinstance(v, torch.Tensor)):
        return False
    return all(t.dtype == p.dtype and t.device == p.device and t.shape == p.shape
               and t.is_contiguous() and not t.requires_grad
               for t in (p.grad, mechanic_state["offset"], m, v)) and p.is_contiguous()


class AdamBucket:
    """The fused-Adam parameters of one dtype in one step.

    ``x_stats`` is the owner's cache, parameter -> ``(version, x pointer,
    offset pointer, |x|^2, <x, R>)``, filled by :meth:`update` and read by
    :meth:`measure`. After :meth:`measure`, ``g_dot`` and ``x_dot`` are this
    bucket's :math:`\\langle g, x - x_{ref}\\rangle` and
    :math:`\\langle x, x - x_{ref}\\rangle`, as for :class:`.buckets.Bucket`.
    """

    def __init__(self, base: torch.optim.Optimizer, x_stats: Dict[Any, tuple]) -> None:
        self.base = base
        self.x_stats = x_stats
        self.entries: List[Entry] = []
        self.states: List[Dict[str, Any]] = []
        self.groups: List[Dict[str, Any]] = []
        self.g_dot = 0.0
        self.x_dot = 0.0

    def add(self, entry: Entry, state: Dict[str, Any], group: Dict[str, Any]) -> None:
        self.entries.append(entry)
        self.states.append(state)
        self.groups.append(group)

    def _cached(self, p: torch.Tensor, offset: torch.Tensor):
        hit = self.x_stats.get(p)
        if hit is None or hit[:3] != (p._version, p.data_ptr(), offset.data_ptr()):
            return None
        return hit[3:]

    def measure(self) -> None:
        """Pass 1 (read-only): gradient sums, and the value sums where not cached."""
        params = [e.param.detach() for e in self.entries]
        grads = [e.param.grad for e in self.entries]
        offsets = [s["offset"] for s in self.states]
        cached = [self._cached(e.param, r) for e, r in zip(self.entries, offsets)]
        values = _fused.adam_measure(grads, params, offsets, [c is None for c in cached])
        for row, c in zip(values, cached):
            if c is not None:
                row[1], row[3] = c
        for entry, (gg, xx, _, _) in zip(self.entries, values):
            entry.g_norm, entry.x_norm = math.sqrt(gg), math.sqrt(xx)
        ks = [s["offset_scale"] for s in self.states]
        self.g_dot = math.fsum(k * v for k, v in zip(ks, values[:, 2].tolist()))
        self.x_dot = math.fsum(k * v for k, v in zip(ks, values[:, 3].tolist()))

    def hide_grads(self) -> List[torch.Tensor]:
        """Take the gradients away from the base optimizer's step; returns them."""
        grads = []
        for entry in self.entries:
            grads.append(entry.param.grad)
            entry.param.grad = None
        return grads

    def restore_grads(self, grads: List[torch.Tensor]) -> None:
        for entry, grad in zip(self.entries, grads):
            entry.param.grad = grad

    def update(self, s_eps: float, scale_new: float) -> None:
        """Pass 2: Adam's step as Mechanic's update; caches the value sums."""
        adam = [self.base.state[e.param] for e in self.entries]
        steps = [a["step"] for a in adam]
        for step in steps:
            step += 1  # as torch's Adam: step_t += 1
        coef = np.empty((len(adam), len(_fused.ADAM_COEFFICIENTS)), dtype=np.float64)
        for i, (group, state, step) in enumerate(zip(self.groups, self.states, steps)):
            coef[i] = _coefficients(self.base, group, step.item(), state["offset_scale"],
                                    s_eps, scale_new)
        params = [e.param.detach() for e in self.entries]
        grads = [e.param.grad for e in self.entries]
        offsets = [s["offset"] for s in self.states]
        sums = _fused.adam_update(params, grads, [a["exp_avg"] for a in adam],
                                  [a["exp_avg_sq"] for a in adam], offsets, coef)
        for entry, state, (xx, xr) in zip(self.entries, self.states, sums.tolist()):
            if rescale_offset(state, scale_new * state["offset_scale"] / s_eps):
                self.x_stats.pop(entry.param, None)
                continue
            p = entry.param
            self.x_stats[p] = (p._version, p.data_ptr(), state["offset"].data_ptr(), xx, xr)


def _coefficients(base, group, step: float, k: float, s_eps: float, scale_new: float):
    """The kernel's coefficients (``fused.ADAM_COEFFICIENTS``) for one tensor.

    Adam's are computed as torch's single-tensor Adam computes them (Python
    floats: ``1 - beta1 ** step``, ``lr / bias_correction1``,
    ``bias_correction2 ** 0.5``); Mechanic's are those of
    :meth:`.buckets.Bucket.finish`: a = (S + eps)/k, e = S + eps,
    d = S' k/(S + eps) - k."""
    beta1, beta2 = group["betas"]
    lr, wd = group["lr"], group["weight_decay"]
    decoupled = bool(group.get("decoupled_weight_decay", isinstance(base, torch.optim.AdamW)))
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    return (1 - beta1, beta2, 1 - beta2,
            0.0 if decoupled else wd,
            lr * wd if decoupled else 0.0,
            -(lr / bias_correction1),
            1.0 / bias_correction2 ** 0.5,
            group["eps"],
            s_eps / k, s_eps, scale_new * k / s_eps - k)
