"""Discovery: owns finding the sensitive instructions of guest code as Unicorn first translates it.

VMware-style, without a hook on every instruction or block. Unicorn 2.1.4 reports each newly
chained translation-block edge to UC_HOOK_EDGE_GENERATED with the new block as `cur` (pc, size),
before that block first runs: direct, indirect and fall-through successors alike, and the block
after a code hook moved RIP. It never reports the first block of an `emu_start`, so the vCPU loop
calls `slice_start` before each slice (every VMM-delivered event starts a new slice).

A block is decoded once per (pc, code mode), and again only when its bytes changed (the guest
rewrote code: Unicorn retranslates and reports it anew). Capstone decodes it without detail; only
instructions whose mnemonic may be sensitive are decoded again with detail and looked up in the
catalog. A listener gets every scanned block's sites; if it changes its code hooks there, the block
is dropped from Unicorn's cache (hooks apply only to blocks translated after them: FIELD-NOTES) and,
inside a slice, the slice ends before the block runs (`end_slice`), so the next one translates it
anew. (Moving RIP from the edge hook instead, which keeps the slice going, was tried: it left a
later exit with a stale RIP, and a port read was repeated.)
"""
from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass
from typing import Callable, Protocol

from capstone import CS_ARCH_X86, CS_MODE_16, CS_MODE_32, CS_MODE_64, Cs
from unicorn import UC_HOOK_EDGE_GENERATED, UcError
from unicorn import x86_const as X
from unicorn.unicorn_py3.unicorn import uc_tb

from pvtranslate.catalog import CANDIDATE_IDS, CatalogEntry, classify

from .cpu import Cpu
from .errors import OutsideRam
from .memory import PAGE, GuestRam, PageFault, PagingState, translate
from .rawhooks import add_raw_hook

EDGE_CFUNC = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(uc_tb), ctypes.POINTER(uc_tb), ctypes.c_void_p)
MAX_INSN = 15
_MODES = {16: CS_MODE_16, 32: CS_MODE_32, 64: CS_MODE_64}
_OPERAND_FORMS = frozenset({"mov", "push", "pop"})       # sensitive only with a segment/control/debug register
_NAMES = frozenset(Cs(CS_ARCH_X86, CS_MODE_64).insn_name(i) for i in CANDIDATE_IDS) - _OPERAND_FORMS
_SPECIAL_REG = re.compile(r"\b(?:[c-gs]s|cr\d+|dr\d+)\b")


@dataclass(frozen=True)
class SensitiveSite:
    """One sensitive instruction in guest code: linear and physical address, code mode, bytes, catalog entry."""

    va: int
    pa: int
    bits: int
    code: bytes
    text: str
    entry: CatalogEntry
    insn: object = None          # the Capstone instruction, decoded with detail (operands for emulation)

    @property
    def next_va(self) -> int:
        return self.va + len(self.code)


class SiteListener(Protocol):
    def block_scanned(self, lo: int, hi: int, bits: int, sites: list[SensitiveSite]) -> bool:
        """The sensitive sites of guest block [lo, hi) in `bits`-bit code; True if code hooks changed there."""


@dataclass
class _Known:
    """A block already scanned: where its bytes are in RAM, to see cheaply that they are unchanged."""

    chunks: tuple[tuple[int, int], ...]
    code: bytes


class Discovery:
    """Scans guest blocks as they are translated and hands their sensitive sites to a listener."""

    def __init__(self, cpu: Cpu, ram: GuestRam, listener: SiteListener, fail: Callable[[BaseException], None],
                 end_slice: Callable[[], None], ignore_step: Callable[[int], bool] | None = None) -> None:
        self.cpu = cpu
        self.uc = cpu.uc
        self.ram = ram
        self.listener = listener
        self.fail = fail                          # an exception must not unwind through the engine
        self.end_slice = end_slice                # stop the slice before the block about to run
        self.ignore_step = ignore_step            # single steps of VMM-written code (pv's trap sites)
        self.blocks_scanned = 0
        self._ignored_pc: int | None = None       # the block of the current single step, if ignored
        self._blocks: dict[tuple[int, int], bytes] = {}
        self._known: dict[tuple[int, int], _Known] = {}    # (pc, CS selector) -> bytes last scanned
        self._lite = {bits: Cs(CS_ARCH_X86, mode) for bits, mode in _MODES.items()}
        self._detail = {bits: Cs(CS_ARCH_X86, mode) for bits, mode in _MODES.items()}
        for decoder in self._detail.values():
            decoder.detail = True
        self._edge_cb = EDGE_CFUNC(self._on_edge)

    def install(self) -> None:
        add_raw_hook(self.uc, UC_HOOK_EDGE_GENERATED, self._edge_cb)

    # --- the two entry points ------------------------------------------------------------------------
    def _on_edge(self, _handle, cur, _prev, _ud) -> None:
        try:
            tb = cur.contents
            if tb.pc == self._ignored_pc:
                return                            # Unicorn may report a stepped block as a new edge too
            if tb.size and self._scan(tb.pc, tb.size):
                self._drop(tb.pc, tb.pc + tb.size)
                self.end_slice()
        except BaseException as exc:              # noqa: BLE001 - recorded, re-raised by the vCPU loop
            self.fail(exc)

    def slice_start(self, pc: int, count: int = 0) -> None:
        """Before `emu_start(pc, count=count)`: scan the block it starts with, which no edge reports."""
        self._ignored_pc = None
        if count:
            # A single step: the caller has dropped the block at pc so the count applies; scanning must
            # not translate it again. pv mode's own steps of VMM-written code are not guest code.
            if self.ignore_step is not None and self.ignore_step(pc):
                self._ignored_pc = pc
                return
            self._scan_step(pc)
            return
        if self._unchanged(pc):
            return
        paging = self._paging()
        try:
            translate(self.ram, paging, pc)       # Unicorn would fault on the fetch: nothing to scan yet
            size = self.uc.ctl_request_cache(pc)[2]
        except (PageFault, OutsideRam, UcError):
            return
        if size and self._scan(pc, size, paging):
            self._drop(pc, pc + size, paging)

    # --- scanning --------------------------------------------------------------------------------------
    def _unchanged(self, pc: int, size: int | None = None) -> bool:
        """Whether the block at pc (under the same code selector) still holds the bytes last scanned there.

        Compared in RAM where they were found, without walking the page tables again: a block is
        reported anew whenever Unicorn retranslates it (the page cache is flushed often in pv mode)."""
        known = self._known.get((pc, self.cpu._fast_read(X.UC_X86_REG_CS) & 0xFFFF))
        return (known is not None and (size is None or size == len(known.code))
                and b"".join(self.ram.view[pa:pa + n] for pa, n in known.chunks) == known.code)

    def _scan(self, lo: int, size: int, paging: PagingState | None = None, remember: bool = True) -> bool:
        """Decode block [lo, lo+size) unless unchanged since its last scan; True if the listener re-hooked it.

        `remember`: record it as the block at lo (not for a single step's one instruction)."""
        if self._unchanged(lo, size):
            return False
        paging = paging or self._paging()
        bits = self.cpu.code_bits()
        try:
            chunks, code = self._read(lo, size, paging)
        except (PageFault, OutsideRam):
            return False
        if remember:
            self._known[(lo, self.cpu._fast_read(X.UC_X86_REG_CS) & 0xFFFF)] = _Known(chunks, code)
        if self._blocks.get((lo, bits)) == code:
            return False
        self._blocks[(lo, bits)] = code
        self.blocks_scanned += 1
        return self.listener.block_scanned(lo, lo + size, bits, self.decode(lo, code, bits, paging))

    def _scan_step(self, pc: int) -> None:
        paging = self._paging()
        try:
            code = self._read(pc, MAX_INSN, paging)[1]
        except (PageFault, OutsideRam):
            try:                                   # the instruction may end right before a missing page
                code = self._read(pc, PAGE - (pc & (PAGE - 1)), paging)[1]
            except (PageFault, OutsideRam):
                return
        bits = self.cpu.code_bits()
        first = next(self._lite[bits].disasm_lite(code, pc, 1), None)
        if first is not None:
            self._scan(pc, first[1], paging, remember=False)    # the caller has dropped the block already

    def decode(self, lo: int, code: bytes, bits: int, paging: PagingState) -> list[SensitiveSite]:
        """The sensitive instructions of `code` (at linear `lo`, `bits`-bit code), by the catalog."""
        sites = []
        for va, size, mnemonic, op_str in self._lite[bits].disasm_lite(code, lo):
            name = mnemonic.rpartition(" ")[2]
            if name not in _NAMES and not (name in _OPERAND_FORMS and _SPECIAL_REG.search(op_str)):
                continue
            raw = code[va - lo:va - lo + size]
            insn = next(self._detail[bits].disasm(raw, va, 1), None)
            entry = classify(insn) if insn is not None else None
            if entry is not None:
                sites.append(SensitiveSite(va, translate(self.ram, paging, va), bits, raw,
                                           f"{insn.mnemonic} {insn.op_str}".strip(), entry, insn))
        return sites

    # --- guest memory and the translation cache --------------------------------------------------------
    def _paging(self) -> PagingState:
        read = self.cpu._fast_read
        return PagingState(read(X.UC_X86_REG_CR0), read(X.UC_X86_REG_CR3), read(X.UC_X86_REG_CR4), self.cpu.efer())

    def _read(self, va: int, size: int, paging: PagingState) -> tuple[tuple[tuple[int, int], ...], bytes]:
        chunks = []
        while size:
            n = min(size, PAGE - (va & (PAGE - 1)))
            pa = translate(self.ram, paging, va)
            if pa + n > self.ram.size:
                raise OutsideRam(f"code at {va:#x} is outside RAM")
            chunks.append((pa, n))
            va, size = va + n, size - n
        return tuple(chunks), b"".join(self.ram.view[pa:pa + n] for pa, n in chunks)

    def _drop(self, lo: int, hi: int, paging: PagingState | None = None) -> None:
        """Remove every translated block over [lo, hi) (page by page: Unicorn maps only the start to physical)."""
        while lo < hi:
            end = min(hi, (lo | (PAGE - 1)) + 1)
            self.uc.ctl_remove_cache(lo, end)
            lo = end
