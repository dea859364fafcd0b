"""The canonical trace of one run: owns recording guest events and guest memory at exit, with pv-mode
addresses mapped back to the original code through the site table.

``run(guest, recorder=Recorder())`` makes the recorder the vCPU's trace sink (``vmm.vcpu.TraceSink``);
tracing costs only while a sink is set. Each event is six unsigned 64-bit numbers, ``NONE`` where a
field does not apply; two runs are equivalent on events when these rows are equal:

=================  ===================================================  ========  ==========  =====
kind               va (an address of the original code)                 a         b           c
=================  ===================================================  ========  ==========  =====
PIO_IN, PIO_OUT    the I/O instruction (pv: its site)                   port      size        value
MMIO_READ, _WRITE  NONE: Unicorn keeps the pc exact only at block ends  address   size        value
INTERRUPT          where the guest resumes (the frame's return address) vector    NONE        NONE
EXCEPTION          the frame's return address (fault: the instruction)  vector    error code  NONE
HLT                after the hlt                                        NONE      NONE        NONE
=================  ===================================================  ========  ==========  =====

plus ``t_ns``, the guest time of the event. In pv mode an address inside the translator's pages (a
trampoline) is mapped back through the site table's pc map (``AddressMap``): to the guest
instruction it carries out (I/O), or to the original address the guest resumes at (deliveries,
hlt). The raw address of every event and the stack pointer at every delivery are kept apart, for
reports and for the dead-stack rule of the comparison (``pvtranslate.verify``); they are not compared.

At exit (``at_exit``) the recorder keeps every non-zero page of guest RAM, the paging-structure
entries reachable from CR3 (whose accessed/dirty bits the CPU sets as a side effect of any access),
the stack pointers the TSS holds, and the final pc and stack pointer, mapped back likewise.
"""
from __future__ import annotations

import bisect
import enum
import struct
from array import array
from dataclasses import dataclass, field

from unicorn import x86_const as X

from .memory import CR0_PG, CR4_PAE, CR4_PSE, EFER_LMA, PAGE, LinearMemory, PageFault
from .errors import OutsideRam

NONE = (1 << 64) - 1          # a field that does not apply to the event's kind
WIDTH = 6                     # numbers per event: kind, t_ns, va, a, b, c
_ZERO_PAGE = bytes(PAGE)


class EventKind(enum.IntEnum):
    """The guest events of a canonical trace; the values name the vCPU's trace kinds."""

    PIO_IN = 0
    PIO_OUT = 1
    MMIO_READ = 2
    MMIO_WRITE = 3
    INTERRUPT = 4
    EXCEPTION = 5
    HLT = 6

    @property
    def trace_name(self) -> str:
        return self.name.lower()


_KIND_NUMBER = {k.trace_name: int(k) for k in EventKind}     # plain ints on the hot path
_PIO_OUT, _MMIO_WRITE, _HLT = int(EventKind.PIO_OUT), int(EventKind.MMIO_WRITE), int(EventKind.HLT)


@dataclass(frozen=True)
class Event:
    """One canonical event, decoded from its row (for reports; comparisons use the rows)."""

    index: int
    kind: EventKind
    t_ns: int
    va: int | None
    a: int | None
    b: int | None
    c: int | None
    raw_va: int | None                     # the address as executed (a trampoline address in pv mode)

    def describe(self) -> str:
        k = self.kind
        if k in (EventKind.PIO_IN, EventKind.PIO_OUT):
            what = f"{k.trace_name} port {self.a:#x} size {self.b} value {self.c:#x}"
        elif k in (EventKind.MMIO_READ, EventKind.MMIO_WRITE):
            what = f"{k.trace_name} {self.a:#x} size {self.b} value {self.c:#x}"
        elif k is EventKind.EXCEPTION:
            what = f"exception {self.a:#x}" + (f" error code {self.b:#x}" if self.b is not None else "")
        elif k is EventKind.INTERRUPT:
            what = f"interrupt {self.a:#x}"
        else:
            what = "hlt"
        return f"#{self.index} t={self.t_ns} ns {what}"


class AddressMap:
    """pv mode: a raw guest address back to the original code (site table pc map); identity otherwise.

    A trampoline is a run of pc-map boundaries, each starting the lowering of a site, a replayed
    displaced instruction or the jump back. The guest stops in a trampoline only right after a
    hypercall (``int 0x82``), which is a site's effect: the instruction *in progress* there is the
    one whose range holds the ``int 0x82`` (the byte before the stop), and the guest *resumes* at
    the original address of the boundary it stopped at, or of the next one if it stopped inside a
    range (the lowering's remaining steps only restore registers)."""

    def __init__(self, table=None, own_range: tuple[int, int] = (0, 0)) -> None:
        self.own_range = own_range
        self._entries = tuple(table.pc_map) if table is not None else ()
        self._vas = [e.trampoline_va for e in self._entries]
        # trampoline starts: the boundary of a site whose own trampoline begins there
        self._starts = frozenset(s.trampoline_va for s in table.sites.values()) if table is not None else frozenset()
        # int 0x82 address -> the registers the trampoline pushed there (not those kept in the save area)
        points = getattr(table, "points", None) if table is not None else None
        self._pushed = ({va: p.pushed for va, p in points.items() if not p.access} if points
                        else dict(table.unwind) if table is not None else {})

    def inside(self, va: int) -> bool:
        return self.own_range[0] <= va < self.own_range[1]

    def _index(self, va: int) -> int | None:
        if not self._entries or not self.inside(va):
            return None
        k = bisect.bisect_right(self._vas, va) - 1
        return k if k >= 0 else None

    def in_progress(self, va: int) -> int:
        """The original instruction that did what the guest did just before stopping at ``va``."""
        if not self.inside(va):
            return va
        k = self._index(va - 1)
        return va if k is None else self._entries[k].original_va

    def resume_at(self, va: int) -> int:
        """The original address the guest, stopped at ``va``, goes on from."""
        k = self._index(va)
        if k is None:
            return va
        entry = self._entries[k]
        if entry.trampoline_va == va:
            return entry.original_va
        if k + 1 < len(self._entries) and self._vas[k + 1] not in self._starts:
            return self._entries[k + 1].original_va
        return va                            # past a trampoline's last boundary: nothing to map to

    def stack_pointer(self, pc: int, sp: int, word: int) -> int:
        """The guest's own stack pointer when stopped at ``pc`` right after a recorded hypercall: the
        registers the trampoline pushed there are popped (the site table's unwind record)."""
        saved = self._pushed.get(pc - 2) if self.inside(pc) else None
        return sp + word * len(saved) if saved else sp


@dataclass
class MemoryImage:
    """Guest RAM at exit: non-zero pages, paging entries, stack pointers, final pc and stack pointer."""

    pages: dict[int, bytes]                           # page-aligned guest-physical address -> 4 KiB
    ram_bytes: int
    paging_entries: frozenset[int] = frozenset()      # guest-physical addresses of paging-structure entries
    tss_stack_pointers: tuple[int, ...] = ()          # RSP0-2 and IST1-7 (ESP0-2), guest-virtual
    pc: int = 0                                       # mapped back to the original code
    sp: int = 0
    raw_pc: int = 0
    raw_sp: int = 0
    word: int = 8                                     # stack slot size of the code running at exit


@dataclass
class Recorder:
    """The canonical trace of one run (a vCPU trace sink); call ``start`` after boot, ``at_exit`` at the end."""

    events: array = field(default_factory=lambda: array("Q"))    # WIDTH numbers per event
    raw_pc: array = field(default_factory=lambda: array("Q"))    # one per event; NONE if unknown
    # event index -> (the guest's stack pointer when the delivery began, its slot size: 8 in long mode)
    delivery_sp: dict[int, tuple[int, int]] = field(default_factory=dict)
    # the guest's stack pointer after each slice and its exit, one per 4 KiB page
    slice_sp: dict[int, int] = field(default_factory=dict)
    memory: MemoryImage | None = None
    mode: str = ""
    address_map: AddressMap = field(default_factory=AddressMap)

    def start(self, machine) -> None:
        self._in_progress: dict[int | None, int] = {}
        self._clock = machine.clock
        self._cpu = machine.cpu
        self.mode = machine.mode
        pv = getattr(machine, "pv", None)
        if pv is not None:
            self.address_map = AddressMap(pv.table, pv.own_range)
        machine.vcpu.stack_watch = self._stack_seen

    def _stack_seen(self, pc: int, sp: int) -> None:
        sp = self.address_map.stack_pointer(pc, sp, self._word())
        self.slice_sp.setdefault((sp - 1) >> 12, sp)          # rule 4 leaves out the page below sp

    def __len__(self) -> int:
        return len(self.events) // WIDTH

    def __bool__(self) -> bool:              # the vCPU tests its sink for truth (`if self.trace:`)
        return True

    def __call__(self, kind: str, rip: int | None = None, port: int = 0, size: int = 0, value: int = 0,
                 addr: int = 0, vector: int = 0, error_code: int | None = None, rsp: int | None = None) -> None:
        k = _KIND_NUMBER[kind]
        if k <= _PIO_OUT:                            # the hot path: a dict lookup and two appends
            va = self._in_progress.get(rip)
            if va is None:
                va = self._in_progress[rip] = NONE if rip is None else self.address_map.in_progress(rip)
            self.events.extend((k, self._clock.now_ns, va, port, size, value))
            self.raw_pc.append(NONE if rip is None else rip)
            return
        now = self._clock.now_ns
        if k <= _MMIO_WRITE:
            self.events.extend((k, now, NONE, addr, size, value))
        elif k == _HLT:
            self.events.extend((k, now, self.address_map.resume_at(rip), NONE, NONE, NONE))
        else:
            if rsp is not None:
                word = self._word()
                self.delivery_sp[len(self)] = (self.address_map.stack_pointer(rip, rsp, word), word)
            self.events.extend((k, now, self.address_map.resume_at(rip), vector,
                                NONE if error_code is None else error_code, NONE))
        self.raw_pc.append(NONE if rip is None else rip)

    def _word(self) -> int:
        return 8 if self._cpu.code_bits() == 64 else 4

    def event(self, index: int) -> Event:
        row = self.events[index * WIDTH:(index + 1) * WIDTH]
        opt = [None if v == NONE else v for v in row]
        raw = self.raw_pc[index]
        return Event(index, EventKind(row[0]), row[1], *opt[2:], None if raw == NONE else raw)

    def at_exit(self, machine) -> None:
        """Keep guest memory as the run left it (call before the machine closes)."""
        cpu, ram = machine.cpu, machine.ram
        raw_pc, raw_sp = cpu.pc, cpu.sp
        word = self._word() if hasattr(self, "_cpu") else 8
        m = self.address_map
        view = ram.view
        pages = {}
        for pa in range(0, ram.size, PAGE):
            data = view[pa:pa + PAGE].tobytes()
            if data != _ZERO_PAGE:
                pages[pa] = data
        paging = cpu.paging()
        self.memory = MemoryImage(pages, ram.size, paging_entries(ram, paging), tss_stack_pointers(cpu, ram),
                                  m.resume_at(raw_pc), m.stack_pointer(raw_pc, raw_sp, word), raw_pc, raw_sp, word)


def paging_entries(ram, paging) -> frozenset[int]:
    """Guest-physical addresses of every present entry of the paging structures CR3 points to."""
    out: set[int] = set()
    if not paging.cr0 & CR0_PG:
        return frozenset()
    mask = 0x000FFFFFFFFFF000

    def table(base: int, n: int, size: int, levels_left: int, large_ok: bool) -> None:
        for i in range(n):
            pa = base + i * size
            if pa + size > ram.size:
                return
            ent = int.from_bytes(ram.view[pa:pa + size], "little")
            if not ent & 1:
                continue
            out.add(pa)
            if levels_left and not (large_ok and ent & 0x80):
                table(ent & (mask if size == 8 else 0xFFFFF000), 512 if size == 8 else 1024, size,
                      levels_left - 1, True)

    if paging.efer & EFER_LMA:
        table(paging.cr3 & mask, 512, 8, 3, False)
    elif paging.cr4 & CR4_PAE:
        pdpt = paging.cr3 & 0xFFFFFFE0
        for i in range(4):
            ent = int.from_bytes(ram.view[pdpt + 8 * i:pdpt + 8 * i + 8], "little")
            if ent & 1:
                out.add(pdpt + 8 * i)
                table(ent & mask, 512, 8, 1, True)
    else:
        table(paging.cr3 & 0xFFFFF000, 1024, 4, 1, bool(paging.cr4 & CR4_PSE))
    return frozenset(out)


def tss_stack_pointers(cpu, ram) -> tuple[int, ...]:
    """The non-zero stack pointers of the loaded TSS (ring 0-2 and, in long mode, IST1-7)."""
    base, limit = cpu.table_register(X.UC_X86_REG_TR)
    if limit < 0x67:
        return ()
    try:
        raw = LinearMemory(ram, cpu.paging()).read(base, 0x68)
    except (PageFault, OutsideRam):
        return ()
    if cpu.long_mode():
        values = [struct.unpack_from("<Q", raw, off)[0] for off in (4, 12, 20)]
        values += [struct.unpack_from("<Q", raw, 0x24 + 8 * i)[0] for i in range(7)]
    else:
        values = [struct.unpack_from("<I", raw, off)[0] for off in (4, 12, 20)]
    return tuple(v for v in values if v)
