"""I/O boundaries: owns the no-op code hooks that let an interrupt made deliverable by a port access be
taken right after the instruction that made it, in native, fullvirt and trap modes alike.

DESIGN.md ("Time and interrupts must not depend on the mode") places such a delivery at the I/O
event: pv mode takes it right after the hypercall (an ``int 0x82`` ends the engine's block). A port
hook runs inside the engine in the middle of a translated block, and its ``emu_stop`` takes effect
only where the generated code next checks for a stop request: at the start of the next block, or
right after a code-hook call. So, as discovery (vmm/discover.py) scans each new block, the
instruction that follows a port I/O instruction inside it gets a code hook (if it cannot fault: see
below), and a stop requested by the I/O is taken there, before that instruction runs. Without them native mode ran on to the end of
the block (irq32 and irq64 read the PIT twice more before their timer interrupt, pv did not).

The callback is C's ``abs`` (libc): Unicorn calls it with the hook's four arguments, it reads one
and returns, and nothing is done with its result; a Python callback would cost ~0.3 us per I/O.

A code hook has a price in Unicorn 2.1.4: an exception the hooked instruction raises is delivered
with stale arithmetic flags (vmm/fullvirt.py). So only an instruction that cannot raise one gets
the hook (``cannot_fault``: register operands only, from a list of ALU, move and branch mnemonics);
after any other, the interrupt waits for the end of the block as before (fuzz seed 370: ``out;
pop ds`` faulting with #GP showed flags 0x2 for 0x13).
"""
from __future__ import annotations

import ctypes
import ctypes.util

import capstone
import capstone.x86_const

from unicorn import UC_HOOK_CODE

from pvtranslate.catalog import Form

from .discover import SensitiveSite
from .errors import OutsideRam
from .memory import LinearMemory, PageFault
from .rawhooks import CODE_CFUNC, add_raw_hook

_SAFE = frozenset(
    "mov movzx movsx movsxd add adc sub sbb and or xor cmp test inc dec neg not shl sal shr sar rol ror rcl "
    "rcr shld shrd lea nop xchg bt bts btr btc bsf bsr bswap cbw cwde cdqe cwd cdq cqo clc stc cmc cld std "
    "jmp in out".split()) | frozenset(
    p + c for p in ("j", "set", "cmov") for c in "o no b ae e ne be a s ns p np l ge le g".split()) | frozenset(
    ("jcxz", "jecxz", "jrcxz"))
_SPECIAL = frozenset(capstone.x86_const.__dict__[f"X86_REG_{r}"] for r in
                     ["CS", "DS", "ES", "FS", "GS", "SS"] + [f"CR{n}" for n in range(16)] + [f"DR{n}" for n in range(16)])
_DECODERS = {bits: capstone.Cs(capstone.CS_ARCH_X86, mode) for bits, mode in
             ((16, capstone.CS_MODE_16), (32, capstone.CS_MODE_32), (64, capstone.CS_MODE_64))}
for _md in _DECODERS.values():
    _md.detail = True


def cannot_fault(code: bytes, va: int, bits: int) -> bool:
    """Whether the instruction at the start of ``code`` can raise no exception at CPL 0: an ALU, move or
    branch mnemonic of ``_SAFE`` with register and immediate operands only (no memory, no segment,
    control or debug register), or ``lea``."""
    insn = next(_DECODERS[bits].disasm(code, va, 1), None)
    if insn is None or insn.mnemonic not in _SAFE or insn.prefix[0] == 0xF0:    # lock without memory: #UD
        return False
    return insn.mnemonic == "lea" or all(op.type == capstone.x86_const.X86_OP_IMM
               or (op.type == capstone.x86_const.X86_OP_REG and op.reg not in _SPECIAL) for op in insn.operands)

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

    def __init__(self, cpu, ram) -> None:
        self.uc = cpu.uc
        self.cpu = cpu
        self.ram = ram
        self._hooked: set[int] = set()

    def block_scanned(self, lo: int, hi: int, bits: int, sites: list[SensitiveSite]) -> bool:
        changed = False
        for site in sites:
            after = site.next_va
            # the last instruction of a block needs none: the next block starts with the check
            if site.entry.form in PORT_FORMS and after < hi and after not in self._hooked:
                try:
                    code = LinearMemory(self.ram, self.cpu.paging()).read(after, min(15, hi - after))
                except (PageFault, OutsideRam):
                    continue
                if cannot_fault(code, after, bits):
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
