"""Local APIC: QEMU's reset state and register behaviour (probe-verified), interrupt flow, timer on the guest clock."""
from vmm.devices.lapic import Lapic

ID, VER, TPR, PPR, EOI, LDR, DFR, SVR = 0x20, 0x30, 0x80, 0xA0, 0xB0, 0xD0, 0xE0, 0xF0
ISR, TMR, IRR, ESR, ICR_LO, ICR_HI = 0x100, 0x180, 0x200, 0x280, 0x300, 0x310
LVT_TIMER, LVT_LINT0, LVT_LINT1, LVT_ERROR = 0x320, 0x350, 0x360, 0x370
TIMER_INITIAL, TIMER_CURRENT, TIMER_DIVIDE = 0x380, 0x390, 0x3E0


def enabled(clock, **kw):
    apic = Lapic(clock, **kw)
    apic.write(SVR, 4, 0x1FF)
    return apic


def test_reset_state(clock):
    apic = Lapic(clock)
    assert apic.apic_base_msr == 0xFEE00900
    assert apic.read(VER, 4) == 0x00050014
    assert apic.read(SVR, 4) == 0xFF and apic.read(DFR, 4) == 0xFFFFFFFF
    assert [apic.read(0x320 + 0x10 * i, 4) for i in range(6)] == [0x10000, 0x10000, 0x10000, 0x700, 0x10000, 0x10000]
    assert apic.extint_enabled()


def test_register_write_semantics_match_qemu(clock):
    apic = Lapic(clock)
    cases = ((TPR, 0x1FF, 0xFF), (ID, 0xFFFFFFFF, 0xFF000000), (LDR, 0xFFFFFFFF, 0xFF000000),
             (DFR, 0, 0x0FFFFFFF), (LVT_ERROR, 0xFFFFFFFF, 0xFFFFFFFF), (SVR, 0xFFFFFFFF, 0x1FF),
             (TIMER_DIVIDE, 0xFFFFFFFF, 0xB), (ICR_HI, 0xFF000000, 0xFF000000))
    for reg, value, expected in cases:
        apic.write(reg, 4, value)
        assert apic.read(reg, 4) == expected, hex(reg)


def test_narrow_accesses_and_sub_register_offsets(clock):
    apic = Lapic(clock)
    apic.write(TPR, 4, 0x50)
    assert apic.read(VER, 1) == 0
    apic.write(TPR, 1, 0x30)
    assert apic.read(TPR, 4) == 0x50
    apic.write(TPR + 4, 4, 0x20)                        # the low 4 address bits are ignored
    assert apic.read(TPR, 4) == 0x20


def test_unknown_register_sets_esr(clock):
    apic = Lapic(clock)
    assert apic.read(ESR, 4) == 0
    assert apic.read(0x3F0, 4) == 0
    assert apic.read(ESR, 4) == 0x80


def test_extint_passthrough_rule(clock):
    apic = Lapic(clock)
    apic.write(LVT_LINT0, 4, 0x10700)
    assert not apic.extint_enabled()
    apic.write_apic_base_msr(0xFEE00000)                # hardware disable: the PIC goes straight to the CPU
    assert apic.extint_enabled() and not apic.hardware_enabled
    apic.write_apic_base_msr(0xFEE00800)
    assert not apic.hardware_enabled                    # QEMU: cannot be re-enabled


def test_accept_acknowledge_eoi_and_priorities(clock):
    apic = enabled(clock)
    apic.accept_irq(0x41)
    apic.accept_irq(0x31)
    assert apic.pending_vector() == 0x41
    assert apic.acknowledge() == 0x41
    assert apic.read(ISR + 0x20, 4) == 0x2 and apic.read(PPR, 4) == 0x40
    assert apic.pending_vector() is None                # 0x31 is below the in-service class
    apic.write(EOI, 4, 0)
    assert apic.pending_vector() == 0x31
    apic.write(TPR, 4, 0x50)
    assert apic.pending_vector() is None and apic.read(PPR, 4) == 0x50


def test_software_disabled_delivers_nothing(clock):
    apic = Lapic(clock)
    apic.accept_irq(0x40)
    assert apic.pending_vector() is None
    assert apic.acknowledge() == 0xFF                   # the spurious vector


def test_self_ipi(clock):
    apic = enabled(clock)
    apic.write(ICR_LO, 4, 0x40041)                      # fixed, shorthand self, vector 0x41
    assert apic.read(ICR_LO, 4) == 0x40041 and apic.read(IRR + 0x20, 4) == 0x2


def test_level_triggered_eoi_is_broadcast(clock):
    seen = []
    apic = enabled(clock, on_eoi_broadcast=seen.append)
    apic.accept_irq(0x50, level_triggered=True)
    apic.accept_irq(0x60)
    apic.acknowledge()
    apic.write(EOI, 4, 0)                               # 0x60: edge, nothing to broadcast
    apic.acknowledge()
    apic.write(EOI, 4, 0)
    assert seen == [0x50]


def test_one_shot_timer(clock):
    apic = enabled(clock)
    apic.write(TIMER_DIVIDE, 4, 0xB)                    # divide by 1: one tick per ns (QEMU's 1 GHz)
    apic.write(LVT_TIMER, 4, 0x30)
    apic.write(TIMER_INITIAL, 4, 1000)
    clock.advance_to(400)
    assert apic.read(TIMER_CURRENT, 4) == 600 and apic.pending_vector() is None
    clock.advance_to(1000)
    assert apic.pending_vector() is None
    clock.advance_to(1001)                              # QEMU fires at (initial + 1) ticks
    assert apic.pending_vector() == 0x30 and apic.read(TIMER_CURRENT, 4) == 0
    apic.acknowledge()
    apic.write(EOI, 4, 0)
    clock.advance(10**6)
    assert apic.pending_vector() is None


def test_periodic_timer_fires_n_times(clock):
    apic = enabled(clock)
    apic.write(TIMER_DIVIDE, 4, 0x3)                    # divide by 16
    apic.write(LVT_TIMER, 4, 0x20000 | 0x40)
    apic.write(TIMER_INITIAL, 4, 99)
    period = 100 * 16
    fired = 0
    for k in range(1, 11):
        clock.advance_to(k * period - 1)
        assert apic.pending_vector() is None
        clock.advance_to(k * period)
        if apic.pending_vector() == 0x40:
            fired += 1
            apic.acknowledge()
            apic.write(EOI, 4, 0)
    assert fired == 10
    clock.advance_to(10 * period + 50 * 16)
    assert apic.read(TIMER_CURRENT, 4) == 99 - 50


def test_masked_timer_does_not_fire(clock):
    apic = enabled(clock)
    apic.write(TIMER_DIVIDE, 4, 0xB)
    apic.write(LVT_TIMER, 4, 0x10030)
    apic.write(TIMER_INITIAL, 4, 10)
    clock.advance(1000)
    assert apic.pending_vector() is None and apic.read(IRR + 0x10, 4) == 0


def test_bus_frequency_is_a_parameter(clock):
    apic = enabled(clock, bus_frequency_hz=100_000_000)     # 10 ns per tick
    apic.write(TIMER_DIVIDE, 4, 0xB)
    apic.write(LVT_TIMER, 4, 0x30)
    apic.write(TIMER_INITIAL, 4, 100)
    clock.advance_to(500)
    assert apic.read(TIMER_CURRENT, 4) == 50
    clock.advance_to(1010)
    assert apic.pending_vector() == 0x30
