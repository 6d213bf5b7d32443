"""ctypes binding of the fused CPU passes of a Mechanic step (``fused_kernels.c``).

``make setup`` (``scripts/setup.sh``) and ``colcon build`` (``CMakeLists.txt``)
compile ``fused_kernels.c`` into ``_fused_kernels.so`` next to this file (in a
colcon install, the installed ``mechanic_rl_ros/optim/``; test_colcon_build.py
checks it loads there). A missing library is reported once per process, as a
``RuntimeWarning`` when the first Mechanic is made, with what it costs.
:class:`~mechanic_rl_ros.optim.Mechanic` uses it for float32/float64
parameters on the CPU whose tensors are contiguous, and falls back to torch
``_foreach`` kernels otherwise (or when the library is missing, or when
``MECHANIC_FUSED=0`` is set in the environment). Both compute the same step;
the fused one reads and writes parameter-sized memory about half as often.
:func:`measure` and :func:`finish` go around any base optimizer's step;
:func:`adam_measure` and :func:`adam_update` replace it when the base is
torch's Adam/AdamW (:mod:`.adam_fused`).

Only pointers to tensors' memory and element counts cross into C; nothing is
copied or converted. At more than one torch thread the kernels run on an
OpenMP team: torch's own intra-op threads, provided the library resolved
``libgomp.so.1`` to the copy torch loaded; when the process maps any other
OpenMP runtime next to it (a torch built with another one, or a library
loaded before torch), :func:`_load` switches the kernels to plain pthreads so
that two pools never spin side by side (:func:`threading`).
"""
from __future__ import annotations

import ctypes
import os
import warnings
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch

__all__ = ["LIBRARY_PATH", "available", "supports", "measure", "finish", "adam_measure",
           "adam_update", "threading", "ADAM_COEFFICIENTS"]

# The per-tensor coefficients of adam_update, in the kernel's order (K_* in C).
ADAM_COEFFICIENTS = ("b1w", "beta2", "one_minus_beta2", "l2", "decay", "neg_step",
                     "inv_bc2_sqrt", "eps", "a", "e", "d")

LIBRARY_PATH = Path(__file__).with_name("_fused_kernels.so")
_lib: Optional[ctypes.CDLL] = None
_load_error: Optional[str] = None


def _load() -> Optional[ctypes.CDLL]:
    global _lib, _load_error
    if _lib is not None or _load_error is not None:
        return _lib
    try:
        lib = ctypes.CDLL(str(LIBRARY_PATH))
    except OSError as exc:
        _load_error = (f"{LIBRARY_PATH} not loadable ({exc}); build it with `make setup` (venv) or "
                       f"`colcon build` (a ROS workspace), which compile fused_kernels.c next to fused.py")
        # said once per process, when the first Mechanic is made (a node's start): the fallback computes the
        # same step, but a Mechanic(Adam) step takes about 3.5x as long (docs/mechanic.md: 20-53 ms instead of
        # 5.7-17 ms, 1 thread), which a learner notices as fewer gradient steps per robot minute
        warnings.warn(f"Mechanic falls back to torch kernels, same results, optimizer steps about 3.5x "
                      f"slower: {_load_error}", RuntimeWarning, stacklevel=2)
        return None
    vp, i64, dbl = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
    try:
        ncoef = lib.mechanic_adam_ncoef()
        lib.mechanic_threading.argtypes = [ctypes.c_int]
    except AttributeError:
        ncoef = None
    if ncoef != len(ADAM_COEFFICIENTS):
        _load_error = (f"{LIBRARY_PATH.name} is older than fused_kernels.c (Adam coefficients "
                       f"{ncoef}, expected {len(ADAM_COEFFICIENTS)}); rebuild it with `make setup`")
        # a library that is there but stale would otherwise halve Mechanic's speed without a word
        warnings.warn(f"Mechanic falls back to torch kernels: {_load_error}", RuntimeWarning, stacklevel=2)
        return None
    c_int = ctypes.c_int
    lib.mechanic_measure.argtypes = [c_int, i64, vp, vp, vp, vp, vp, vp, c_int]
    lib.mechanic_finish.argtypes = [c_int, i64, vp, vp, vp, vp, vp, dbl, c_int]
    lib.mechanic_adam_measure.argtypes = [c_int, i64, vp, vp, vp, vp, vp, vp, c_int]
    lib.mechanic_adam_update.argtypes = [c_int, i64, vp, vp, vp, vp, vp, vp, vp, vp, c_int]
    for fn in (lib.mechanic_measure, lib.mechanic_finish, lib.mechanic_adam_measure,
               lib.mechanic_adam_update):
        fn.restype = c_int
    if len(_openmp_runtimes()) != 1:
        lib.mechanic_threading(0)
    _lib = lib
    return lib


def _openmp_runtimes() -> set:
    """Paths of the OpenMP runtimes mapped into this process (Linux; an empty set where unknown)."""
    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split(None, 5)[-1].strip() for line in fh if line.count(" ") >= 5}
    except OSError:
        return set()
    return {p for p in paths if os.path.basename(p).startswith(("libgomp", "libiomp", "libomp"))}


def threading() -> str:
    """How the kernels use more than one thread: ``"openmp"`` (the OpenMP team of the calling thread, torch's
    intra-op threads) or ``"pthreads"`` (threads of their own, for one call); ``""`` without the library."""
    lib = _load()
    if lib is None:
        return ""
    return "openmp" if lib.mechanic_threading(-1) else "pthreads"


def available() -> bool:
    """True when the compiled kernels load and ``MECHANIC_FUSED`` is not ``0``."""
    return os.environ.get("MECHANIC_FUSED", "1") != "0" and _load() is not None


def unavailable_reason() -> str:
    """Why :func:`available` is False ("" when it is True)."""
    if os.environ.get("MECHANIC_FUSED", "1") == "0":
        return "disabled by MECHANIC_FUSED=0"
    _load()
    return _load_error or ""


def supports(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether the kernels can run on these tensors in place: CPU, one dtype
    out of float32/float64, contiguous, no autograd history."""
    if not tensors:
        return False
    dtype = tensors[0].dtype
    if dtype not in (torch.float32, torch.float64):
        return False
    return all(t.device.type == "cpu" and t.dtype == dtype and t.is_contiguous()
               and not t.requires_grad for t in tensors)


def _ptrs(tensors: Sequence[Optional[torch.Tensor]]) -> np.ndarray:
    return np.array([0 if t is None else t.data_ptr() for t in tensors], dtype=np.uint64)


def _addr(array: np.ndarray) -> int:
    # __array_interface__ costs ~1 us; ndarray.ctypes builds an object (~100 us).
    return array.__array_interface__["data"][0]


def _call(fn: str, tensors: Sequence[torch.Tensor], *args, what: str) -> None:
    """Call kernel ``fn`` on the tensors' dtype and element counts; each of
    ``args`` is a list of tensors (their pointers are passed), a numpy array
    (its address) or a float."""
    lib = _load()
    assert lib is not None
    numel = np.array([t.numel() for t in tensors], dtype=np.int64)
    keep = [_ptrs(a) if isinstance(a, list) else a for a in args]
    rc = getattr(lib, fn)(int(tensors[0].dtype == torch.float64), len(tensors), _addr(numel),
                          *(a if isinstance(a, float) else _addr(a) for a in keep),
                          torch.get_num_threads())
    if rc != 0:
        raise MemoryError(f"Mechanic fused {what}: out of memory for the block table")


def measure(grads: List[torch.Tensor], xs: List[torch.Tensor], offsets: List[Optional[torch.Tensor]],
            snaps: List[torch.Tensor]) -> np.ndarray:
    """Per tensor ``(|g|^2, |x|^2, <g, R>, <x, R>)`` as a float64 array
    [n, 4] (the dots are 0 where ``offsets[i]`` is None), and ``snaps[i] = xs[i]``;
    one pass over the four lists."""
    out = np.zeros((len(xs), 4), dtype=np.float64)
    _call("mechanic_measure", xs, grads, xs, offsets, snaps, out, what="measure")
    return out


def finish(params: List[torch.Tensor], snaps: List[torch.Tensor], offsets: List[torch.Tensor],
           a: Sequence[float], d: Sequence[float], e: float) -> None:
    """In place: ``u = p - snap; R += a_i u; p = snap + e u + d_i R`` for every tensor i."""
    ad = np.ascontiguousarray(np.stack([np.asarray(a, np.float64), np.asarray(d, np.float64)], 1))
    _call("mechanic_finish", params, params, snaps, offsets, ad, float(e), what="finish")
    torch.autograd.graph.increment_version(params)


def adam_measure(grads: List[torch.Tensor], xs: List[torch.Tensor], offsets: List[torch.Tensor],
                 need_x: Sequence[bool]) -> np.ndarray:
    """Per tensor ``(|g|^2, |x|^2, <g, R>, <x, R>)`` as a float64 array [n, 4],
    reading ``xs[i]`` only where ``need_x[i]`` (its two sums are 0 elsewhere)."""
    out = np.zeros((len(xs), 4), dtype=np.float64)
    flags = np.asarray(need_x, dtype=np.int8)
    _call("mechanic_adam_measure", xs, grads, xs, offsets, flags, out, what="adam_measure")
    return out


def adam_update(xs: List[torch.Tensor], grads: List[torch.Tensor], exp_avgs: List[torch.Tensor],
                exp_avg_sqs: List[torch.Tensor], offsets: List[torch.Tensor],
                coef: np.ndarray) -> np.ndarray:
    """In place, torch's Adam step on ``xs``, ``exp_avgs``, ``exp_avg_sqs`` taken
    as Mechanic's update (``coef``: [n, len(ADAM_COEFFICIENTS)] float64, see
    fused_kernels.c); returns ``(|x'|^2, <x', R'>)`` per tensor as [n, 2]."""
    coef = np.ascontiguousarray(coef, dtype=np.float64)
    assert coef.shape == (len(xs), len(ADAM_COEFFICIENTS))
    out = np.zeros((len(xs), 2), dtype=np.float64)
    _call("mechanic_adam_update", xs, xs, grads, exp_avgs, exp_avg_sqs, offsets, coef, out,
          what="adam_update")
    torch.autograd.graph.increment_version(xs + exp_avgs + exp_avg_sqs)
    return out
