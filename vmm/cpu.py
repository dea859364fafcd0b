"""The Unicorn engine as an x86 CPU: creation in 32-bit protected mode, register state, fault bookkeeping."""
from __future__ import annotations

import ctypes
import functools
import os
import struct
import sys
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
_uc_context_save = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(
    ctypes.cast(uclib.uc_context_save, ctypes.c_void_p).value)
_uc_context_restore = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(
    ctypes.cast(uclib.uc_context_restore, ctypes.c_void_p).value)
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


# the 16 general registers in hardware order (rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8-r15)
GPRS = tuple(getattr(X, "UC_X86_REG_" + name) for name in
             ("RAX", "RCX", "RDX", "RBX", "RSP", "RBP", "RSI", "RDI", *(f"R{n}" for n in range(8, 16))))


@dataclass(frozen=True)
class RegisterLayout:
    """Byte offsets, inside a context blob, of the 16 general registers (hardware order) and RIP."""

    gpr: int
    rip: int


@functools.cache
def register_layout() -> RegisterLayout:
    """Find the registers by experiment: write telltale values and look for them in a context blob."""
    uc = open_engine()
    for n, reg in enumerate(GPRS):
        uc.reg_write(reg, 0x5EED_0000_0000_0000 + n)
    uc.reg_write(X.UC_X86_REG_RIP, 0x5EED_0000_0000_00AA)
    blob = _context_bytes(uc)
    hits = [o for o in range(0, len(blob) - 7, 8) if struct.unpack_from("<Q", blob, o)[0] == 0x5EED_0000_0000_0000]
    if len(hits) != 1:
        raise VmmError("this Unicorn build's register layout is not recognised (install unicorn==2.1.4)")
    gpr = hits[0]
    values = struct.unpack_from("<17Q", blob, gpr)
    if values != tuple(0x5EED_0000_0000_0000 + n for n in range(16)) + (0x5EED_0000_0000_00AA,):
        raise VmmError("this Unicorn build's register layout is not recognised (install unicorn==2.1.4)")
    return RegisterLayout(gpr=gpr, rip=gpr + 16 * 8)


_LIVE_HINTS: list[tuple[int, int]] = []     # (offset in uc_struct of a pointer, distance to the registers)


def live_registers(uc: Uc) -> int | None:
    """The address of the engine's own general registers (QEMU's ``env->regs``) in this process, or None.

    Found by experiment (Linux): telltale values in the registers, looked for behind the pointers the
    engine's uc_struct holds (read through /proc/self/mem, so a stale pointer cannot crash the VMM), and
    confirmed by writing registers both ways and by the blob layout around them. The registers are
    left as they were."""
    if not sys.platform.startswith("linux"):
        return None
    regs = list(GPRS)
    try:
        fd = os.open("/proc/self/mem", os.O_RDONLY)
    except OSError:
        return None
    before = [uc.reg_read(r) for r in regs] + [uc.reg_read(X.UC_X86_REG_RIP)]
    values = [int.from_bytes(os.urandom(8), "little") | 1 for _ in regs]
    for reg, value in zip(regs, values):
        uc.reg_write(reg, value)
    pattern = struct.pack("<16Q", *values)

    def read(addr: int, n: int) -> bytes:
        try:
            return os.pread(fd, n, addr)
        except (OSError, OverflowError, ValueError):
            return b""

    def pointer(addr: int) -> int:
        raw = read(addr, 8)
        return struct.unpack("<Q", raw)[0] if len(raw) == 8 else 0

    try:
        base = uc._uch.value
        for off, delta in list(_LIVE_HINTS):
            target = pointer(base + off) + delta
            if read(target, len(pattern)) == pattern and _confirm_live(uc, target):
                return target
        head = read(base, 0x10000)
        for off in range(0, len(head) - 7, 8):
            p = struct.unpack_from("<Q", head, off)[0]
            if not 0x10000 <= p < 1 << 47:
                continue
            k = read(p, 1 << 17).find(pattern)
            if k >= 0 and k % 8 == 0 and _confirm_live(uc, p + k):
                _LIVE_HINTS.append((off, k))
                return p + k
        return None
    finally:
        os.close(fd)
        for reg, value in zip(regs + [X.UC_X86_REG_RIP], before):
            uc.reg_write(reg, value)


def _confirm_live(uc: Uc, addr: int) -> bool:
    """Whether ``addr`` holds the engine's registers: they follow writes both ways, and the CPU state after
    them is laid out as in a context blob up to the hidden flags."""
    cells = (ctypes.c_uint64 * 17).from_address(addr)
    for _ in range(3):                         # read-only until the engine's own write shows up here
        mark = int.from_bytes(os.urandom(8), "little")
        uc.reg_write(X.UC_X86_REG_RAX, mark)
        if cells[0] != mark:
            return False
        cells[1] = mark ^ 0x5A5A
        if uc.reg_read(X.UC_X86_REG_RCX) != mark ^ 0x5A5A:
            return False
    uc.reg_write(X.UC_X86_REG_RIP, 0x1234_5678)
    if cells[16] != 0x1234_5678:
        return False
    regs, seg = register_layout(), segment_layout()
    blob = _context_bytes(uc)
    span = seg.hflags + 4 - regs.gpr
    return ctypes.string_at(addr, span) == blob[regs.gpr:regs.gpr + span]


class CpuView:
    """The general registers, RIP and hidden flags as ctypes cells, for the hottest exits.

    Live when the engine's own CPU state can be found (``live_registers``): a read or write is then a
    memory access, with nothing to load or store. Otherwise the cells are in a context blob: ``load``
    (one engine call, ~0.3 us) copies the CPU in, ``store`` (another) copies it back; store only what
    was loaded in the same hook, with nothing changing the CPU through the engine in between (the blob
    holds the whole CPU and Unicorn's longjmp buffer of the running emu_start). Either way, use the
    cells only where the engine is not executing guest code: in a hook's callback or between slices."""

    def __init__(self, uc: Uc) -> None:
        self._handle = uc._uch.value
        self._ctx = uc.context_save()          # owns the blob (freed with it)
        regs, seg = register_layout(), segment_layout()
        live = live_registers(uc)
        self.live = live is not None
        base = live - regs.gpr if live is not None else self._ctx.context.value
        self.gpr = (ctypes.c_uint64 * 16).from_address(base + regs.gpr)     # rax, rcx, ... r15
        self.rip_cell = ctypes.c_uint64.from_address(base + regs.rip)
        self.hflags_cell = ctypes.c_uint32.from_address(base + seg.hflags)  # CPL in bits 0-1, HF_CS32, HF_CS64
        addr = self._ctx.context.value
        self.load = None if self.live else (lambda: _uc_context_save(self._handle, addr))
        self.store = None if self.live else (lambda: _uc_context_restore(self._handle, addr))


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
    # Without an exit list, every emu_start probes its `until` address through the guest's page tables;
    # a failed probe overwrites CR2 (a `mov cr2` the guest ran in that slice is lost) and leaves a #PF
    # in the fault history. With the list on and empty, `until` is ignored and nothing is probed.
    uc.ctl_exits_enabled(True)
    uc.ctl_set_exits([])
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
