"""The Unicorn engine as an x86 CPU: creation in 32-bit protected mode, register state, fault bookkeeping."""
from __future__ import annotations

import ctypes
import functools
import struct
from dataclasses import dataclass

from unicorn import UC_ARCH_X86, UC_HOOK_INTR, UC_MODE_32, UC_MODE_64, Uc
from unicorn import x86_const as X
from unicorn.unicorn_py3.unicorn import uclib

from .errors import VmmError

# uc_reg_read without the binding's argument conversions (plain ints in, int out): ~2x cheaper per call.
_uc_reg_read = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)(
    ctypes.cast(uclib.uc_reg_read, ctypes.c_void_p).value)
_uc_reg_write = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)(
    ctypes.cast(uclib.uc_reg_write, ctypes.c_void_p).value)
from .memory import PagingState

CR0_PE = 1 << 0
EFLAGS_IF = 1 << 9
EFLAGS_TF = 1 << 8
EFLAGS_NT = 1 << 14
EFLAGS_RF = 1 << 16
EFLAGS_VM = 1 << 17
EFER_LMA = 1 << 10

SEGMENT_REGS = {"cs": X.UC_X86_REG_CS, "ds": X.UC_X86_REG_DS, "es": X.UC_X86_REG_ES,
                "fs": X.UC_X86_REG_FS, "gs": X.UC_X86_REG_GS, "ss": X.UC_X86_REG_SS}


@dataclass(frozen=True)
class ExceptionFields:
    """Byte offsets, inside a Unicorn x86 context blob, of the CPU's pending-exception bookkeeping."""

    error_code: int
    is_int: int
    old_exception: int


@functools.cache
def exception_fields() -> ExceptionFields:
    """Find the fields by experiment: raise #GP(0x28), then `int 0x0d`, and see which words changed.

    Unicorn hands exceptions to a hook without the error code, and never marks a hooked fault as
    delivered, so the next contributory fault would turn into #DF (unicorn issue #1883). The VMM reads
    the error code and clears the stale fault from the context instead.
    """
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x2000)
    uc.mem_write(0x500, bytes(8) + bytes.fromhex("ffff0000009acf00ffff00000092cf00"))
    uc.reg_write(X.UC_X86_REG_GDTR, (0, 0x500, 0x17, 0))
    uc.mem_write(0x1000, bytes.fromhex("66b828008ed8cd0df4"))   # mov ax,0x28; mov ds,ax; int 0x0d; hlt
    uc.hook_add(UC_HOOK_INTR, lambda u, n, d: u.emu_stop())
    snaps = [_context_bytes(uc)]
    uc.emu_start(0x1000, 0x1009)
    snaps.append(_context_bytes(uc))
    uc.emu_start(0x1006, 0x1009)
    snaps.append(_context_bytes(uc))

    def find(expect: tuple[int, int, int]) -> int:
        hits = [off for off in range(0, len(snaps[0]) - 3, 4)
                if tuple(struct.unpack_from("<i", s, off)[0] for s in snaps) == expect]
        if len(hits) != 1:
            raise VmmError("this Unicorn build's exception bookkeeping is not recognised "
                           "(install unicorn==2.1.4, the version the VMM is tested with)")
        return hits[0]

    return ExceptionFields(error_code=find((0, 0x28, 0)), is_int=find((0, 0, 1)), old_exception=find((-1, 13, 13)))


@dataclass(frozen=True)
class SegmentLayout:
    """Byte offsets, inside a context blob, of the CPU's hidden flags and segment descriptor caches."""

    hflags: int
    segs: int          # segs[0] (ES); then CS, SS, DS, FS, GS, `stride` bytes apart
    stride: int


SEGMENT_INDEX = {"es": 0, "cs": 1, "ss": 2, "ds": 3, "fs": 4, "gs": 5}
HF_CPL_MASK, HF_INHIBIT_IRQ, HF_CS32, HF_SS32, HF_ADDSEG, HF_LMA, HF_CS64 = 3, 1 << 3, 1 << 4, 1 << 5, 1 << 6, 1 << 14, 1 << 15
DESC_B, DESC_L, DESC_G = 1 << 22, 1 << 21, 1 << 23


@functools.cache
def segment_layout() -> SegmentLayout:
    """Find the segment caches by experiment: load ES and DS with descriptors of telltale bases.

    In a UC_MODE_64 engine Unicorn's reg_write of CS, SS, DS and ES sets only the selector, never
    the descriptor cache, and no host call can change the CPL; delivering an interrupt across
    privilege levels needs both, so the VMM writes the caches into the CPU context itself.
    """
    uc = open_engine()
    uc.mem_map(0, 0x2000)
    gdt = bytes(8) + _descriptor(0x00345600, 0xAB, 0x93, 0x4) + _descriptor(0x00789A00, 0xCD, 0x93, 0x4)
    uc.mem_write(0x500, gdt)
    uc.reg_write(X.UC_X86_REG_GDTR, (0, 0x500, len(gdt) - 1, 0))
    uc.mem_write(0x1000, bytes.fromhex("66b808008ec066b810008ed8f4"))  # mov es,0x08; mov ds,0x10; hlt
    uc.emu_start(0x1000, 0x100D)
    blob = _context_bytes(uc)

    def base_at(value: int) -> int:
        hits = [o for o in range(0, len(blob) - 7, 4) if struct.unpack_from("<Q", blob, o)[0] == value]
        if len(hits) != 1:
            raise VmmError("this Unicorn build's segment caches are not recognised "
                           "(install unicorn==2.1.4, the version the VMM is tested with)")
        return hits[0]

    es_base, ds_base = base_at(0x00345600), base_at(0x00789A00)
    stride = (ds_base - es_base) // 3
    layout = SegmentLayout(hflags=es_base - 8 - 8, segs=es_base - 8, stride=stride)
    es_selector, es_limit = struct.unpack_from("<I", blob, layout.segs)[0], struct.unpack_from("<I", blob, es_base + 8)[0]
    hflags = struct.unpack_from("<I", blob, layout.hflags)[0]
    if (es_selector, es_limit, hflags & (HF_CPL_MASK | HF_CS32)) != (0x08, 0xAB, HF_CS32):
        raise VmmError("this Unicorn build's CPU state layout is not recognised (install unicorn==2.1.4)")
    return layout


def _descriptor(base: int, limit: int, access: int, flags: int) -> bytes:
    return struct.pack("<HHBBBB", limit & 0xFFFF, base & 0xFFFF, (base >> 16) & 0xFF, access,
                       ((limit >> 16) & 0xF) | (flags << 4), base >> 24)


def descriptor_fields(low: int, high: int) -> tuple[int, int]:
    """(base, limit in bytes) of a code/data descriptor given as its two dwords."""
    base = (low >> 16) | ((high & 0xFF) << 16) | (high & 0xFF000000)
    limit = (low & 0xFFFF) | (high & 0xF0000)
    if high & DESC_G:
        limit = (limit << 12) | 0xFFF
    return base, limit


def _context_bytes(uc: Uc) -> bytes:
    ctx = uc.context_save()
    return ctypes.string_at(ctx.context.value, ctx.size)


def open_engine() -> Uc:
    """A 64-bit-capable engine whose CPU starts in flat 32-bit protected mode, CPL 0, paging off.

    Opened as UC_MODE_64 so that 64-bit registers stay readable after the guest enters long mode;
    the 32-bit starting state comes from a UC_MODE_32 engine's context (see FIELD-NOTES).
    """
    seed = Uc(UC_ARCH_X86, UC_MODE_32)
    seed.ctl_set_cpu_model(X.UC_CPU_X86_QEMU64)
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.ctl_set_cpu_model(X.UC_CPU_X86_QEMU64)
    uc.context_restore(seed.context_save())
    return uc


class Cpu:
    """Register-level access to the vCPU that the loop, the interrupt logic and the devices share."""

    def __init__(self, uc: Uc) -> None:
        self.uc = uc
        self._fields = exception_fields()
        self._segments = segment_layout()
        self._handle = uc._uch.value
        self._scratch = ctypes.c_uint64()
        self._scratch_addr = ctypes.addressof(self._scratch)
        self._scratch_w = ctypes.c_uint64()
        self._scratch_w_addr = ctypes.addressof(self._scratch_w)

    # --- state queries -------------------------------------------------------------------------
    def paging(self) -> PagingState:
        r = self.uc.reg_read
        return PagingState(r(X.UC_X86_REG_CR0), r(X.UC_X86_REG_CR3), r(X.UC_X86_REG_CR4), self.efer())

    def efer(self) -> int:
        return self.uc.reg_read(X.UC_X86_REG_MSR, 0xC0000080)

    def long_mode(self) -> bool:
        return bool(self.efer() & EFER_LMA)

    def protected_mode(self) -> bool:
        return bool(self.uc.reg_read(X.UC_X86_REG_CR0) & CR0_PE)

    def _hidden(self, offset: int, fmt: str) -> int:
        """A field of CPU state Unicorn has no register for, read from a context snapshot."""
        ctx = self.uc.context_save()
        return struct.unpack(fmt, ctypes.string_at(ctx.context.value + offset, struct.calcsize(fmt)))[0]

    def segment_base(self, name: str) -> int:
        """The base address held in a segment register's descriptor cache."""
        return self._hidden(self._segments.segs + SEGMENT_INDEX[name] * self._segments.stride + 8, "<Q")

    def interrupt_shadow(self) -> bool:
        """True right after STI or MOV SS: the CPU takes no interrupt before the next instruction."""
        return bool(self._hidden(self._segments.hflags, "<I") & HF_INHIBIT_IRQ)

    def code_bits(self) -> int:
        """16, 32 or 64: the operand-size default of the code segment the CPU is executing."""
        hflags = self._hidden(self._segments.hflags, "<I")
        return 64 if hflags & HF_CS64 else 32 if hflags & HF_CS32 else 16

    def cpl(self) -> int:
        return self.uc.reg_read(X.UC_X86_REG_CS) & 3

    @property
    def pc(self) -> int:
        return self.uc.reg_read(X.UC_X86_REG_RIP)

    @pc.setter
    def pc(self, value: int) -> None:
        self.uc.reg_write(X.UC_X86_REG_RIP, value)

    @property
    def sp(self) -> int:
        return self.uc.reg_read(X.UC_X86_REG_RSP)

    @sp.setter
    def sp(self, value: int) -> None:
        self.uc.reg_write(X.UC_X86_REG_RSP, value)

    @property
    def eflags(self) -> int:
        return self.uc.reg_read(X.UC_X86_REG_EFLAGS)

    @eflags.setter
    def eflags(self, value: int) -> None:
        self.uc.reg_write(X.UC_X86_REG_EFLAGS, value)

    def interrupts_enabled(self) -> bool:
        return bool(self._fast_read(X.UC_X86_REG_EFLAGS) & EFLAGS_IF)

    def _fast_read(self, reg: int) -> int:
        """One register through Unicorn's C API directly: the binding's generic path costs ~5 us per call."""
        if _uc_reg_read(self._handle, reg, self._scratch_addr) != 0:
            return self.uc.reg_read(reg)
        return self._scratch.value

    def _fast_write(self, reg: int, value: int) -> None:
        """One register through Unicorn's C API directly (from a code hook, a RIP write skips the instruction)."""
        self._scratch_w.value = value & 0xFFFFFFFFFFFFFFFF
        if _uc_reg_write(self._handle, reg, self._scratch_w_addr) != 0:
            self.uc.reg_write(reg, value)

    def table_register(self, reg: int) -> tuple[int, int]:
        """(base, limit) of GDTR/IDTR, or of the descriptor cache of TR/LDTR."""
        _sel, base, limit, _flags = self.uc.reg_read(reg)
        return base, limit

    # --- exception bookkeeping -------------------------------------------------------------------
    def pending_exception(self) -> tuple[int, bool]:
        """(error code, raised by an INT n instruction) of the exception the hook is reporting."""
        blob = _context_bytes(self.uc)
        code = struct.unpack_from("<i", blob, self._fields.error_code)[0]
        is_int = struct.unpack_from("<i", blob, self._fields.is_int)[0]
        return code & 0xFFFFFFFF, bool(is_int)

    def clear_fault_history(self) -> None:
        """Mark the last hooked fault as delivered so the next one is not escalated to #DF."""
        ctx = self.uc.context_save()
        ctypes.memmove(ctx.context.value + self._fields.old_exception, struct.pack("<i", -1), 4)
        self.uc.context_restore(ctx)

    def load_segment_caches(self, loads: dict[str, tuple[int, int, int]]) -> None:
        """Load segment registers as the CPU does, from (selector, descriptor low, descriptor high).

        Writes selector, base, limit and flags into the CPU context and recomputes the hidden flags
        the way QEMU's cpu_x86_load_seg_cache does: CPL from SS.DPL, 16/32/64-bit code and stack.
        A null SS in 64-bit mode is (selector, 0, DPL << 13).
        """
        lay = self._segments
        ctx = self.uc.context_save()
        blob = (ctypes.c_char * ctx.size).from_address(ctx.context.value)
        hflags = struct.unpack_from("<I", blob, lay.hflags)[0]
        for name, (selector, low, high) in loads.items():
            base, limit = descriptor_fields(low, high)
            off = lay.segs + SEGMENT_INDEX[name] * lay.stride
            struct.pack_into("<IIQII", blob, off, selector, 0, base, limit, high)
            if name == "cs":
                if hflags & HF_LMA and high & DESC_L:
                    hflags |= HF_CS32 | HF_SS32 | HF_CS64
                else:
                    hflags = (hflags & ~(HF_CS32 | HF_CS64)) | (HF_CS32 if high & DESC_B else 0)
            elif name == "ss":
                hflags = (hflags & ~HF_CPL_MASK) | ((high >> 13) & 3)
        seg = lambda n, field: struct.unpack_from("<Q" if field == 8 else "<I", blob,  # noqa: E731
                                                  lay.segs + SEGMENT_INDEX[n] * lay.stride + field)[0]
        new = HF_SS32 if seg("ss", 20) & DESC_B else 0
        if not hflags & HF_CS64:
            if not self.protected_mode() or not hflags & HF_CS32:
                new |= HF_ADDSEG
            elif seg("ds", 8) | seg("es", 8) | seg("ss", 8):
                new |= HF_ADDSEG
        hflags = (hflags & ~(HF_SS32 | HF_ADDSEG)) | new
        struct.pack_into("<I", blob, lay.hflags, hflags)
        self.uc.context_restore(ctx)
