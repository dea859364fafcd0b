"""The timer paths of the irq sample, at device level: PIT -> PIC -> CPU and LAPIC timer -> CPU, on guest time."""
from vmm.devices.ioapic import IoApic
from vmm.devices.irq import IrqFanout, isa_irq_to_gsi
from vmm.devices.lapic import Lapic
from vmm.devices.pic import PicPair
from vmm.devices.pit import Pit, tick_time_ns


class Board:
    """The wiring QEMU's pc machine has: ISA IRQs to the PIC and the I/O APIC, PIC INTR through LINT0."""

    def __init__(self, clock):
        self.clock = clock
        self.pic = PicPair()
        self.lapic = Lapic(clock)
        self.ioapic = IoApic(deliver=self.lapic.accept_irq)
        self.lapic.on_eoi_broadcast = self.ioapic.eoi
        self.pit = Pit(clock, IrqFanout(self.pic.irq_line(0), self.ioapic.irq_line(isa_irq_to_gsi(0))))

    def next_interrupt(self):
        """QEMU's order (cpu_get_pic_interrupt/apic_check_pic): the 8259 first when it passes through LINT0."""
        if self.lapic.extint_enabled() and self.pic.pending():
            return self.pic.acknowledge()
        if self.lapic.pending_vector() is not None:
            return self.lapic.acknowledge()
        return None

    def hlt(self):
        """Sleep until an interrupt is pending: advance guest time to the next timer deadline."""
        while (vector := self.next_interrupt()) is None:
            self.clock.advance_to(self.clock.next_deadline_ns())
        return vector


def test_pit_ticks_through_the_pic(clock):
    board = Board(clock)
    for port, words in ((board.pic.master, (0x11, 0x20, 0x04, 0x01)), (board.pic.slave, (0x11, 0x28, 0x02, 0x01))):
        port.write(0, 1, words[0])
        for w in words[1:]:
            port.write(1, 1, w)
    board.pic.master.write(1, 1, 0xFE)
    board.pic.slave.write(1, 1, 0xFF)
    board.pit.write(3, 1, 0x34)
    board.pit.write(0, 1, 1193 & 0xFF)
    board.pit.write(0, 1, 1193 >> 8)
    times = []
    for _ in range(500):
        assert board.hlt() == 0x20
        times.append(clock.now_ns)
        board.pic.master.write(0, 1, 0x20)
    assert times[0] == tick_time_ns(0, 1193) and times[-1] == tick_time_ns(0, 500 * 1193)


def test_lapic_periodic_ticks(clock):
    board = Board(clock)
    board.pic.master.write(1, 1, 0xFF)                  # PIC masked, as the sample does
    board.lapic.write(0xF0, 4, 0x1FF)
    board.lapic.write(0x3E0, 4, 0x3)
    board.lapic.write(0x320, 4, 0x20040)
    board.lapic.write(0x380, 4, 62500)
    for k in range(1, 501):
        assert board.hlt() == 0x40
        assert clock.now_ns == k * 62501 * 16
        board.lapic.write(0xB0, 4, 0)


def test_pit_through_the_ioapic_with_the_pic_masked(clock):
    board = Board(clock)
    board.pic.master.write(1, 1, 0xFF)
    board.lapic.write(0xF0, 4, 0x1FF)
    board.lapic.write(0x350, 4, 0x10700)                # LINT0 masked: no ExtINT
    board.ioapic.write(0, 4, 0x14)                      # pin 2 (ISA IRQ0), vector 0x30, edge
    board.ioapic.write(0x10, 4, 0x30)
    board.pit.write(3, 1, 0x34)
    board.pit.write(0, 1, 0xE8)
    board.pit.write(0, 1, 0x03)
    for _ in range(5):
        assert board.hlt() == 0x30
        board.lapic.write(0xB0, 4, 0)
