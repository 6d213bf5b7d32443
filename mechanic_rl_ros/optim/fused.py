"""ctypes binding of the fused CPU passes of a Mechanic step (``fused_kernels.c``).

``make setup`` (``scripts/setup.sh``) and ``colcon build`` (``CMakeLists.txt``)
compile ``fused_kernels.c`` into ``_fused_kernels.so`` next to this file.
:class:`~mechanic_rl_ros.optim.Mechanic` uses it for float32/float64
parameters on the CPU whose tensors are contiguous, and falls back to torch
``_foreach`` kernels otherwise (or when the library is missing, or when
``MECHANIC_FUSED=0`` is set in the environment). Both compute the same step;
the fused one reads and writes parameter-sized memory about half as often.

Only pointers to tensors' memory and element counts cross into C; nothing is
copied or converted.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch

__all__ = ["LIBRARY_PATH", "available", "supports", "measure", "finish"]

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
        _load_error = f"{LIBRARY_PATH.name} not loadable ({exc}); build it with `make setup`"
        return None
    vp, i64, dbl = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
    lib.mechanic_measure.argtypes = [ctypes.c_int, i64, vp, vp, vp, vp, vp, vp, ctypes.c_int]
    lib.mechanic_measure.restype = ctypes.c_int
    lib.mechanic_finish.argtypes = [ctypes.c_int, i64, vp, vp, vp, vp, vp, vp, dbl, ctypes.c_int]
    lib.mechanic_finish.restype = ctypes.c_int
    _lib = lib
    return lib


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
    return array.ctypes.data


def measure(grads: List[torch.Tensor], xs: List[torch.Tensor], offsets: List[Optional[torch.Tensor]],
            snaps: List[torch.Tensor]) -> np.ndarray:
    """Per tensor ``(|g|^2, |x|^2, <g, R>, <x, R>)`` as a float64 array
    [n, 4] (the dots are 0 where ``offsets[i]`` is None), and ``snaps[i] = xs[i]``;
    one pass over the four lists."""
    lib = _load()
    assert lib is not None
    n = len(xs)
    numel = np.array([x.numel() for x in xs], dtype=np.int64)
    out = np.zeros((n, 4), dtype=np.float64)
    keep = (_ptrs(grads), _ptrs(xs), _ptrs(offsets), _ptrs(snaps))
    rc = lib.mechanic_measure(int(xs[0].dtype == torch.float64), n, _addr(numel),
                              *(_addr(a) for a in keep), _addr(out), torch.get_num_threads())
    if rc != 0:
        raise MemoryError("Mechanic fused measure: out of memory for the block table")
    return out


def finish(params: List[torch.Tensor], snaps: List[torch.Tensor], offsets: List[torch.Tensor],
           a: Sequence[float], d: Sequence[float], e: float) -> None:
    """In place: ``u = p - snap; R += a_i u; p = snap + e u + d_i R`` for every tensor i."""
    lib = _load()
    assert lib is not None
    n = len(params)
    numel = np.array([p.numel() for p in params], dtype=np.int64)
    a_arr = np.asarray(a, dtype=np.float64)
    d_arr = np.asarray(d, dtype=np.float64)
    keep = (_ptrs(params), _ptrs(snaps), _ptrs(offsets))
    rc = lib.mechanic_finish(int(params[0].dtype == torch.float64), n, _addr(numel),
                             *(_addr(x) for x in keep), _addr(a_arr), _addr(d_arr), float(e),
                             torch.get_num_threads())
    if rc != 0:
        raise MemoryError("Mechanic fused finish: out of memory for the block table")
