"""The local APIC's xAPIC register page (4 KiB of MMIO), its timer and its interrupt state, as QEMU's apic.c."""
from __future__ import annotations

import logging
from typing import Callable

from .base import Clock

log = logging.getLogger("vmm.devices")

APIC_VERSION = 0x14
LVT_COUNT = 6
VERSION_REGISTER = APIC_VERSION | ((LVT_COUNT - 1) << 16)     # 0x50014, as QEMU reports
BUS_FREQUENCY_HZ = 1_000_000_000    # QEMU counts the timer in nanoseconds before the divider
NS_PER_S = 1_000_000_000

# IA32_APIC_BASE MSR
APIC_BASE_MSR = 0x1B
MSR_BSP = 1 << 8
MSR_ENABLE = 1 << 11
DEFAULT_BASE = 0xFEE00000

# Register indexes (offset >> 4)
REG_ID, REG_VERSION, REG_TPR, REG_APR, REG_PPR, REG_EOI = 0x02, 0x03, 0x08, 0x09, 0x0A, 0x0B
REG_LDR, REG_DFR, REG_SVR, REG_ISR0, REG_TMR0, REG_IRR0, REG_ESR = 0x0D, 0x0E, 0x0F, 0x10, 0x18, 0x20, 0x28
REG_ICR_LO, REG_ICR_HI, REG_LVT0 = 0x30, 0x31, 0x32
REG_TIMER_INITIAL, REG_TIMER_CURRENT, REG_TIMER_DIVIDE = 0x38, 0x39, 0x3E

# LVT slots in QEMU's order (register 0x320 + 0x10 * slot)
LVT_TIMER, LVT_THERMAL, LVT_PERF, LVT_LINT0, LVT_LINT1, LVT_ERROR = range(LVT_COUNT)
LVT_MASKED = 1 << 16
LVT_LEVEL_TRIGGER = 1 << 15
LVT_TIMER_PERIODIC = 1 << 17
LVT_TIMER_TSC_DEADLINE = 1 << 18
DM_FIXED, DM_SMI, DM_NMI, DM_INIT, DM_STARTUP, DM_EXTINT = 0, 2, 4, 5, 6, 7
RESET_LINT0_BSP = DM_EXTINT << 8    # 0x700: ExtINT, unmasked, so the 8259's INTR reaches the CPU

SVR_ENABLE = 1 << 8
SVR_EOI_BROADCAST_SUPPRESS = 1 << 12
SVR_MASK = 0x1FF
ESR_ILLEGAL_ADDRESS = 0x80
DIVIDE_MASK = 0x0B
SHORTHAND_NONE, SHORTHAND_SELF, SHORTHAND_ALL, SHORTHAND_OTHERS = 0, 1, 2, 3


def _highest_bit(words: list[int]) -> int:
    for i in range(7, -1, -1):
        if words[i]:
            return i * 32 + words[i].bit_length() - 1
    return -1


def _set_bit(words: list[int], vector: int, on: bool) -> None:
    if on:
        words[vector >> 5] |= 1 << (vector & 31)
    else:
        words[vector >> 5] &= ~(1 << (vector & 31))


class Lapic:
    """One CPU's local APIC at register offsets 0x000-0xff0 (32-bit accesses; narrower ones read 0, write nothing).

    CPU side: `accept_irq` (fixed interrupts from the I/O APIC or an IPI), `pending_vector`,
    `acknowledge` (IRR -> ISR), `eoi`, `extint_enabled` (the 8259's INTR passes through), and the
    IA32_APIC_BASE MSR through `apic_base_msr` / `write_apic_base_msr`. Power-on state is QEMU's
    BSP reset: software-disabled (SVR 0xff), LVTs masked except LINT0 = ExtINT.
    """

    def __init__(self, clock: Clock, apic_id: int = 0, bsp: bool = True,
                 bus_frequency_hz: int = BUS_FREQUENCY_HZ,
                 on_eoi_broadcast: Callable[[int], None] | None = None) -> None:
        self._clock = clock
        self._bus_frequency_hz = bus_frequency_hz
        self.on_eoi_broadcast = on_eoi_broadcast     # level-triggered EOIs go here (IoApic.eoi)
        self.apic_base_msr = DEFAULT_BASE | MSR_ENABLE | (MSR_BSP if bsp else 0)
        self.id = apic_id
        self.tpr = 0
        self.ldr = 0
        self.dfr_model = 0xF
        self.svr = 0xFF
        self.isr = [0] * 8
        self.tmr = [0] * 8
        self.irr = [0] * 8
        self.esr = 0
        self.icr = [0, 0]
        self.lvt = [LVT_MASKED] * LVT_COUNT
        if bsp:
            self.lvt[LVT_LINT0] = RESET_LINT0_BSP
        self.divide_config = 0
        self._count_shift = 1               # divide by 2 at reset
        self.initial_count = 0
        self._load_ns = clock.now_ns
        self._next_ns = 0
        self._timer: object | None = None

    # -- MSR -------------------------------------------------------------------------------------
    @property
    def hardware_enabled(self) -> bool:
        return bool(self.apic_base_msr & MSR_ENABLE)

    def write_apic_base_msr(self, value: int) -> None:
        """As QEMU: the base moves, BSP is read-only, and once disabled the APIC cannot be re-enabled."""
        self.apic_base_msr = (value & 0xFFFFF000) | (self.apic_base_msr & (MSR_BSP | MSR_ENABLE))
        if not value & MSR_ENABLE:
            self.apic_base_msr &= ~MSR_ENABLE
            self.svr &= ~SVR_ENABLE
        if self.apic_base_msr & ~0xFFF != DEFAULT_BASE:
            log.warning("lapic: base moved to %#x; the bus mapping is not moved", self.apic_base_msr & ~0xFFF)

    # -- CPU interface ---------------------------------------------------------------------------
    def accept_irq(self, vector: int, level_triggered: bool = False) -> None:
        """A fixed interrupt arrives (I/O APIC, IPI, local LVT): set IRR, and TMR for level-triggered ones."""
        _set_bit(self.irr, vector, True)
        _set_bit(self.tmr, vector, level_triggered)

    def pending_vector(self) -> int | None:
        """The highest requested vector whose priority class is above PPR, if the APIC is enabled."""
        if not self.svr & SVR_ENABLE or not self.hardware_enabled:
            return None
        vector = _highest_bit(self.irr)
        if vector < 0:
            return None
        ppr = self.ppr()
        if ppr and (vector & 0xF0) <= (ppr & 0xF0):
            return None
        return vector

    def acknowledge(self) -> int:
        """The CPU takes the pending vector: IRR -> ISR. Returns the spurious vector if none is deliverable."""
        vector = self.pending_vector()
        if vector is None:
            return self.svr & 0xFF
        _set_bit(self.irr, vector, False)
        _set_bit(self.isr, vector, True)
        return vector

    def eoi(self) -> None:
        vector = _highest_bit(self.isr)
        if vector < 0:
            return
        _set_bit(self.isr, vector, False)
        if not self.svr & SVR_EOI_BROADCAST_SUPPRESS and self.tmr[vector >> 5] & (1 << (vector & 31)):
            if self.on_eoi_broadcast is not None:
                self.on_eoi_broadcast(vector)

    def extint_enabled(self) -> bool:
        """Whether the 8259's INTR reaches the CPU: APIC hardware-disabled, or LINT0 unmasked (QEMU's rule)."""
        return not self.hardware_enabled or not self.lvt[LVT_LINT0] & LVT_MASKED

    def ppr(self) -> int:
        isrv = max(_highest_bit(self.isr), 0)
        return self.tpr if (self.tpr >> 4) >= (isrv >> 4) else isrv & 0xF0

    # -- registers -------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if size < 4:
            return 0
        index = (offset >> 4) & 0xFF
        if index == REG_ID:
            return self.id << 24
        if index == REG_VERSION:
            return VERSION_REGISTER
        if index == REG_TPR:
            return self.tpr
        if index in (REG_APR, REG_EOI):
            return 0
        if index == REG_PPR:
            return self.ppr()
        if index == REG_LDR:
            return self.ldr << 24
        if index == REG_DFR:
            return (self.dfr_model << 28) | 0x0FFFFFFF
        if index == REG_SVR:
            return self.svr
        if REG_ISR0 <= index < REG_ISR0 + 8:
            return self.isr[index & 7]
        if REG_TMR0 <= index < REG_TMR0 + 8:
            return self.tmr[index & 7]
        if REG_IRR0 <= index < REG_IRR0 + 8:
            return self.irr[index & 7]
        if index == REG_ESR:
            return self.esr
        if index in (REG_ICR_LO, REG_ICR_HI):
            return self.icr[index & 1]
        if REG_LVT0 <= index < REG_LVT0 + LVT_COUNT:
            return self.lvt[index - REG_LVT0]
        if index == REG_TIMER_INITIAL:
            return self.initial_count
        if index == REG_TIMER_CURRENT:
            return self.current_count()
        if index == REG_TIMER_DIVIDE:
            return self.divide_config
        self.esr |= ESR_ILLEGAL_ADDRESS
        log.debug("lapic: read of unimplemented register %#x", offset)
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if size < 4:
            return
        value &= 0xFFFFFFFF
        index = (offset >> 4) & 0xFF
        if index == REG_ID:
            self.id = value >> 24
        elif index == REG_TPR:
            self.tpr = value & 0xFF
        elif index == REG_EOI:
            self.eoi()
        elif index == REG_LDR:
            self.ldr = value >> 24
        elif index == REG_DFR:
            self.dfr_model = value >> 28
        elif index == REG_SVR:
            self.svr = value & SVR_MASK
        elif index == REG_ICR_LO:
            self.icr[0] = value
            self._send_ipi()
        elif index == REG_ICR_HI:
            self.icr[1] = value
        elif REG_LVT0 <= index < REG_LVT0 + LVT_COUNT:
            slot = index - REG_LVT0
            self.lvt[slot] = value
            if slot == LVT_TIMER:
                if value & LVT_TIMER_TSC_DEADLINE:
                    log.warning("lapic: TSC-deadline timer mode is not modelled")
                self._rearm_timer(self._clock.now_ns)
        elif index == REG_TIMER_INITIAL:
            self.initial_count = value
            self._load_ns = self._clock.now_ns
            self._rearm_timer(self._load_ns)
        elif index == REG_TIMER_DIVIDE:
            self.divide_config = value & DIVIDE_MASK
            code = (self.divide_config & 3) | ((self.divide_config >> 1) & 4)
            self._count_shift = (code + 1) & 7
        elif index in (REG_VERSION, REG_APR, REG_PPR, REG_ESR, REG_TIMER_CURRENT) or \
                REG_ISR0 <= index < REG_IRR0 + 8:
            pass                            # read-only (QEMU ignores ESR writes too)
        elif index == 0:
            log.info("lapic: write %#x at offset %#x (an MSI in QEMU) ignored", value, offset)
        else:
            self.esr |= ESR_ILLEGAL_ADDRESS
            log.debug("lapic: write %#x to unimplemented register %#x", value, offset)

    # -- IPIs ------------------------------------------------------------------------------------
    def _send_ipi(self) -> None:
        low = self.icr[0]
        vector, mode, shorthand = low & 0xFF, (low >> 8) & 7, (low >> 18) & 3
        if mode == DM_FIXED and shorthand in (SHORTHAND_SELF, SHORTHAND_ALL):
            self.accept_irq(vector)
        elif mode == DM_FIXED and shorthand == SHORTHAND_NONE and (self.icr[1] >> 24) in (self.id, 0xFF):
            self.accept_irq(vector)
        else:
            log.info("lapic: IPI icr=%#010x:%08x has no other CPU to reach; ignored", self.icr[1], low)

    # -- timer -----------------------------------------------------------------------------------
    def _ticks_since_load(self, now_ns: int) -> int:
        ticks = (now_ns - self._load_ns) * self._bus_frequency_hz // NS_PER_S
        return ticks >> self._count_shift

    def _ns_for_ticks(self, ticks: int) -> int:
        bus_ticks = ticks << self._count_shift
        return self._load_ns + -(-bus_ticks * NS_PER_S // self._bus_frequency_hz)

    def current_count(self) -> int:
        d = self._ticks_since_load(self._clock.now_ns)
        if self.lvt[LVT_TIMER] & LVT_TIMER_PERIODIC:
            return self.initial_count - d % (self.initial_count + 1)
        return 0 if d >= self.initial_count else self.initial_count - d

    def _rearm_timer(self, now_ns: int) -> None:
        if self._timer is not None:
            self._clock.cancel(self._timer)
            self._timer = None
        lvt = self.lvt[LVT_TIMER]
        if lvt & LVT_MASKED:
            return
        d = self._ticks_since_load(now_ns)
        period = self.initial_count + 1
        if lvt & LVT_TIMER_PERIODIC:
            if not self.initial_count:
                return
            expiry = (d // period + 1) * period
        else:
            if d >= self.initial_count:
                return
            expiry = period
        self._next_ns = self._ns_for_ticks(expiry)
        self._timer = self._clock.schedule(self._next_ns, self._on_timer)

    def _on_timer(self, _now_ns: int) -> None:
        self._timer = None
        self._local_deliver(LVT_TIMER)
        self._rearm_timer(self._next_ns)

    def _local_deliver(self, slot: int) -> None:
        lvt = self.lvt[slot]
        if lvt & LVT_MASKED:
            return
        mode = (lvt >> 8) & 7
        if mode == DM_FIXED:
            level = slot in (LVT_LINT0, LVT_LINT1) and bool(lvt & LVT_LEVEL_TRIGGER)
            self.accept_irq(lvt & 0xFF, level)
        else:
            log.info("lapic: LVT %d delivery mode %d not modelled for local sources", slot, mode)
