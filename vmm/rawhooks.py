"""Hooks registered straight through Unicorn's C API (port I/O, per-site code, new edges), bypassing the binding.

The Python binding dispatches every hook through two extra Python frames and `*args` packing; on
the exit path that roughly doubles the cost of a port access. These hooks call the VMM's handler
directly. A handler must not let an exception escape into C: it records it and stops the run.
"""
from __future__ import annotations

import ctypes

from unicorn import UC_HOOK_INSN, Uc, UcError
from unicorn.unicorn_py3.unicorn import uclib

IN_CFUNC = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_void_p)
OUT_CFUNC = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p)


def add_insn_hook(uc: Uc, insn: int, cfunc) -> int:
    """Hook one instruction kind (UC_X86_INS_IN/OUT) everywhere with a ready-made CFUNCTYPE."""
    handle = ctypes.c_size_t()
    status = uclib.uc_hook_add(uc._uch, ctypes.byref(handle), UC_HOOK_INSN, ctypes.cast(cfunc, ctypes.c_void_p),
                               None, ctypes.c_uint64(1), ctypes.c_uint64(0), ctypes.c_int(insn))
    if status != 0:
        raise UcError(status)
    uc._callbacks[handle.value] = cfunc      # the engine holds a raw pointer: keep the thunk alive
    return handle.value


CODE_CFUNC = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_void_p)
INTR_CFUNC = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p)


def add_raw_hook(uc: Uc, htype: int, cfunc, begin: int = 1, end: int = 0) -> int:
    """Add a hook of any kind without extra arguments (UC_HOOK_CODE ranged to [begin, end], EDGE_GENERATED, INTR)."""
    handle = ctypes.c_size_t()
    status = uclib.uc_hook_add(uc._uch, ctypes.byref(handle), htype, ctypes.cast(cfunc, ctypes.c_void_p),
                               None, ctypes.c_uint64(begin), ctypes.c_uint64(end))
    if status != 0:
        raise UcError(status)
    uc._callbacks[handle.value] = cfunc
    return handle.value
