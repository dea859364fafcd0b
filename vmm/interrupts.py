"""Delivery of exceptions and interrupts through the guest's IDT, as the CPU does it (32- and 64-bit)."""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from unicorn import x86_const as X

from .cpu import EFLAGS_IF, EFLAGS_NT, EFLAGS_RF, EFLAGS_TF, EFLAGS_VM, Cpu, descriptor_fields
from .errors import GuestError, TripleFault
from .memory import LinearMemory, PageFault

DE, DB, NMI, BP, OF, BR, UD, NM, DF, TS, NP, SS, GP, PF, MF, AC, MC = 0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18
VECTORS_WITH_ERROR_CODE = frozenset({DF, TS, NP, SS, GP, PF, AC, 21, 29, 30})
CONTRIBUTORY = frozenset({DE, TS, NP, SS, GP})
VECTOR_NAMES = {DE: "#DE", DB: "#DB", NMI: "NMI", BP: "#BP", OF: "#OF", BR: "#BR", UD: "#UD", NM: "#NM",
                DF: "#DF", TS: "#TS", NP: "#NP", SS: "#SS", GP: "#GP", PF: "#PF", MF: "#MF", AC: "#AC", MC: "#MC"}

GATE_INTERRUPT_32, GATE_TRAP_32, GATE_INTERRUPT_16, GATE_TRAP_16, GATE_TASK = 0xE, 0xF, 0x6, 0x7, 0x5


class EventKind(enum.Enum):
    EXCEPTION = "exception"      # a fault or trap raised by the CPU (error code where the vector has one)
    SOFTWARE = "software"        # INT n / INT3 / INTO: gate DPL is checked against CPL
    EXTERNAL = "external"        # an interrupt from the PIC or LAPIC


@dataclass(frozen=True)
class Event:
    vector: int
    kind: EventKind
    error_code: int | None = None
    insn_len: int = 0            # SOFTWARE: length of the INT instruction (its fault points back at it)

    def describe(self) -> str:
        name = VECTOR_NAMES.get(self.vector, f"vector {self.vector:#x}") if self.kind is not EventKind.EXTERNAL \
            else f"interrupt {self.vector:#x}"
        return name + (f"({self.error_code:#x})" if self.error_code is not None else "")


class _DeliveryFault(Exception):
    """Delivering one event raised another (bad gate, bad stack): the CPU's double-fault rules apply."""

    def __init__(self, event: Event) -> None:
        super().__init__(event.describe())
        self.event = event


def vector_name(vector: int) -> str:
    return VECTOR_NAMES.get(vector, f"vector {vector:#x}")


def deliver(cpu: Cpu, mem_factory, event: Event) -> None:
    """Deliver `event`, escalating to #DF and to a triple fault under the architecture's rules."""
    current, history = event, [event]
    while True:
        try:
            _deliver_once(cpu, mem_factory(), current)
            return
        except _DeliveryFault as exc:
            raised = exc.event
        history.append(raised)
        if current.vector == DF and current.kind is EventKind.EXCEPTION:
            chain = " raised ".join(e.describe() for e in history)
            raise TripleFault(f"triple fault: {chain}") from None
        if current.kind is EventKind.SOFTWARE:
            cpu.pc -= current.insn_len    # a fault raised by an INT n instruction is reported at the INT itself
        double = current.kind is not EventKind.SOFTWARE and (
            (current.vector in CONTRIBUTORY and raised.vector in CONTRIBUTORY)
            or (current.vector == PF and (raised.vector in CONTRIBUTORY or raised.vector == PF)))
        current = Event(DF, EventKind.EXCEPTION, 0) if double else raised


def _page_fault(cpu: Cpu, pf: PageFault) -> _DeliveryFault:
    """A not-present page met by the CPU's own (supervisor) accesses while delivering: CR2 and #PF."""
    cpu.uc.reg_write(X.UC_X86_REG_CR2, pf.va)
    return _DeliveryFault(Event(PF, EventKind.EXCEPTION, 0x2 if pf.write else 0x0))


def _ext(event: Event) -> int:
    return 0 if event.kind is EventKind.SOFTWARE else 1


def _read_descriptor(cpu: Cpu, mem: LinearMemory, selector: int, event: Event) -> tuple[int, int]:
    table = X.UC_X86_REG_LDTR if selector & 4 else X.UC_X86_REG_GDTR
    base, limit = cpu.table_register(table)
    index = selector & ~7
    if index + 7 > limit:
        raise _DeliveryFault(Event(GP, EventKind.EXCEPTION, (selector & 0xFFFC) | _ext(event)))
    try:
        low, high = struct.unpack("<II", mem.read(base + index, 8))
    except PageFault as pf:
        raise _page_fault(cpu, pf) from pf
    return low, high


def _deliver_once(cpu: Cpu, mem: LinearMemory, event: Event) -> None:
    if not cpu.protected_mode():
        raise GuestError(f"{event.describe()} in real mode: the VMM delivers interrupts in protected and long mode only")
    long_mode = cpu.long_mode()
    entry_size = 16 if long_mode else 8
    idt_base, idt_limit = cpu.table_register(X.UC_X86_REG_IDTR)
    gate_error = event.vector * 8 + 2 + _ext(event)
    if event.vector * entry_size + entry_size - 1 > idt_limit:
        raise _DeliveryFault(Event(GP, EventKind.EXCEPTION, gate_error))
    try:
        raw = mem.read(idt_base + event.vector * entry_size, entry_size)
    except PageFault as pf:
        raise _page_fault(cpu, pf) from pf
    off_lo, selector, ist, type_attr, off_mid = struct.unpack_from("<HHBBH", raw)
    gate_type, gate_dpl, present = type_attr & 0xF, (type_attr >> 5) & 3, type_attr >> 7
    target = off_lo | (off_mid << 16)
    if long_mode:
        target |= struct.unpack_from("<I", raw, 8)[0] << 32
        valid_types = (GATE_INTERRUPT_32, GATE_TRAP_32)
    else:
        ist = 0
        valid_types = (GATE_INTERRUPT_32, GATE_TRAP_32, GATE_INTERRUPT_16, GATE_TRAP_16)
        if gate_type == GATE_TASK:
            raise GuestError(f"{event.describe()}: task gates are not supported by the VMM")
    cpl = cpu.cpl()
    if gate_type not in valid_types:
        raise _DeliveryFault(Event(GP, EventKind.EXCEPTION, gate_error))
    if event.kind is EventKind.SOFTWARE and gate_dpl < cpl:
        raise _DeliveryFault(Event(GP, EventKind.EXCEPTION, gate_error))
    if not present:
        raise _DeliveryFault(Event(NP, EventKind.EXCEPTION, gate_error))

    cs_low, cs_high = _read_descriptor(cpu, mem, selector, event)
    new_cpl = (cs_high >> 13) & 3
    if not (cs_high >> 11) & 1 or not (cs_high >> 12) & 1 or new_cpl > cpl:
        raise _DeliveryFault(Event(GP, EventKind.EXCEPTION, (selector & 0xFFFC) | _ext(event)))
    if not (cs_high >> 15) & 1:
        raise _DeliveryFault(Event(NP, EventKind.EXCEPTION, (selector & 0xFFFC) | _ext(event)))
    if (cs_high >> 10) & 1:       # conforming code runs at the caller's privilege
        new_cpl = cpl
    if long_mode and not (cs_high >> 21) & 1:
        raise _DeliveryFault(Event(GP, EventKind.EXCEPTION, (selector & 0xFFFC) | _ext(event)))

    old_ss = cpu.uc.reg_read(X.UC_X86_REG_SS)
    old_sp = cpu.sp
    old_cs = cpu.uc.reg_read(X.UC_X86_REG_CS)
    old_flags = cpu.eflags
    old_ip = cpu.pc
    has_error = event.kind is EventKind.EXCEPTION and event.vector in VECTORS_WITH_ERROR_CODE
    error = event.error_code or 0
    tss_base, tss_limit = cpu.table_register(X.UC_X86_REG_TR)

    def tss_read(offset: int, size: int) -> int:
        if offset + size - 1 > tss_limit:
            raise _DeliveryFault(Event(TS, EventKind.EXCEPTION, cpu.uc.reg_read(X.UC_X86_REG_TR) & 0xFFFC))
        try:
            return int.from_bytes(mem.read(tss_base + offset, size), "little")
        except PageFault as pf:
            raise _page_fault(cpu, pf) from pf

    if long_mode:
        if ist:
            new_sp = tss_read(0x24 + 8 * (ist - 1), 8)
        elif new_cpl < cpl:
            new_sp = tss_read(4 + 8 * new_cpl, 8)
        else:
            new_sp = old_sp
        new_sp &= ~0xF
        frame = [old_ss, old_sp, old_flags, old_cs, old_ip] + ([error] if has_error else [])
        blob = b"".join(struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF) for v in reversed(frame))
        new_ss = new_cpl if new_cpl < cpl else old_ss
    else:
        wide = gate_type in (GATE_INTERRUPT_32, GATE_TRAP_32)
        size, fmt = (4, "<I") if wide else (2, "<H")
        loads = {}
        if new_cpl < cpl:
            new_sp = tss_read(4 + 8 * new_cpl, 4)
            new_ss = tss_read(8 + 8 * new_cpl, 2)
            ss_low, ss_high = _read_descriptor(cpu, mem, new_ss, event)
            writable_data = (ss_high >> 9) & 0x7 in (1, 3) and (ss_high >> 12) & 1 and not (ss_high >> 11) & 1
            if (new_ss & 3) != new_cpl or (ss_high >> 13) & 3 != new_cpl or not writable_data:
                raise _DeliveryFault(Event(TS, EventKind.EXCEPTION, (new_ss & 0xFFFC) | _ext(event)))
            if not (ss_high >> 15) & 1:
                raise _DeliveryFault(Event(SS, EventKind.EXCEPTION, (new_ss & 0xFFFC) | _ext(event)))
            loads["ss"] = (new_ss, ss_low, ss_high)
            ss_base = descriptor_fields(ss_low, ss_high)[0]
            frame = [old_ss, old_sp, old_flags, old_cs, old_ip]
        else:
            new_sp, new_ss = old_sp & 0xFFFFFFFF, old_ss
            ss_base = cpu.segment_base("ss")
            frame = [old_flags, old_cs, old_ip]
        frame += [error] if has_error else []
        blob = b"".join(struct.pack(fmt, v & ((1 << (8 * size)) - 1)) for v in reversed(frame))
    new_sp -= len(blob)
    try:
        mem.write(new_sp if long_mode else (ss_base + new_sp) & 0xFFFFFFFF, blob)
    except PageFault as pf:
        raise _page_fault(cpu, PageFault(pf.va, True)) from pf

    if long_mode:
        loads = {"ss": (new_cpl, 0, new_cpl << 13)} if new_cpl < cpl else {}   # a null SS carrying the new CPL
    loads["cs"] = ((selector & 0xFFFC) | new_cpl, cs_low, cs_high)
    cpu.load_segment_caches(loads)
    cpu.sp = new_sp
    flags = old_flags & ~(EFLAGS_TF | EFLAGS_NT | EFLAGS_RF | EFLAGS_VM)
    if gate_type in (GATE_INTERRUPT_32, GATE_INTERRUPT_16):
        flags &= ~EFLAGS_IF
    cpu.eflags = flags
    cpu.pc = target
