"""I/O boundaries: owns the no-op code hooks that let an interrupt made deliverable by a port access be
taken right after the instruction that made it, in native, fullvirt and trap modes alike.

DESIGN.md ("Time and interrupts must not depend on the mode") places such a delivery at the I/O
event: pv mode takes it right after the hypercall (an ``int 0x82`` ends the engine's block). A port
hook runs inside the engine in the middle of a translated block, and its ``emu_stop`` takes effect
only where the generated code next checks for a stop request: at the start of the next block, or
right after a code-hook call. So, as discovery (vmm/discover.py) scans each new block, every
instruction that follows a port I/O instruction inside it gets a code hook, and a stop requested by
the I/O is taken there, before that instruction runs. Without them native mode ran on to the end of
the block (irq32 and irq64 read the PIT twice more before their timer interrupt, pv did not).

The callback is C's ``abs`` (libc): Unicorn calls it with the hook's four arguments, it reads one
and returns, and nothing is done with its result; a Python callback would cost ~0.3 us per I/O.
"""
from __future__ import annotations

import ctypes
import ctypes.util

from unicorn import UC_HOOK_CODE

from pvtranslate.catalog import Form

from .discover import SensitiveSite
from .rawhooks import CODE_CFUNC, add_raw_hook

PORT_FORMS = frozenset({Form.PORT_IMM8, Form.PORT_DX, Form.STRING_ONCE, Form.STRING_REP})


def _c_noop():
    """A C function to give Unicorn as a code hook that does nothing, or a Python one if there is none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        return ctypes.cast(libc.abs, CODE_CFUNC)
    except (OSError, AttributeError):
        return CODE_CFUNC(lambda *_args: None)


_NOOP = _c_noop()


class IoBoundaries:
    """A discovery listener: a no-op code hook on the instruction after each port I/O instruction."""

    def __init__(self, uc) -> None:
        self.uc = uc
        self._hooked: set[int] = set()

    def block_scanned(self, lo: int, hi: int, bits: int, sites: list[SensitiveSite]) -> bool:
        changed = False
        for site in sites:
            after = site.next_va
            # the last instruction of a block needs none: the next block starts with the check
            if site.entry.form in PORT_FORMS and after < hi and after not in self._hooked:
                add_raw_hook(self.uc, UC_HOOK_CODE, _NOOP, after, after)
                self._hooked.add(after)
                changed = True
        return changed


class Both:
    """Two discovery listeners as one."""

    def __init__(self, first, second) -> None:
        self.first, self.second = first, second

    def block_scanned(self, lo: int, hi: int, bits: int, sites: list[SensitiveSite]) -> bool:
        changed = self.first.block_scanned(lo, hi, bits, sites)
        return self.second.block_scanned(lo, hi, bits, sites) or changed
