"""16550 UART registers against QEMU 7.2 (values read by a probe guest under qemu-system-x86_64 -M pc)."""
from vmm.devices.uart import Uart16550

THR, IER, IIR, LCR, MCR, LSR, MSR, SCR = range(8)


def make(wire=None):
    out = bytearray()
    return Uart16550(sink=out.extend, irq=wire), out


def rd(u, reg):
    return u.read(reg, 1)


def wr(u, reg, value):
    u.write(reg, 1, value)


def test_reset_values_match_qemu():
    u, _ = make()
    assert [rd(u, r) for r in (IER, IIR, LCR, MCR, LSR, MSR, SCR)] == [0x00, 0x01, 0x00, 0x08, 0x60, 0xB0, 0x00]
    wr(u, LCR, 0x80)
    assert (rd(u, THR), rd(u, IER)) == (0x0C, 0x00)     # divisor 12: 9600 baud


def test_polling_guest_init_and_output():
    u, out = make()
    for reg, value in ((IER, 0), (LCR, 0x80), (THR, 1), (IER, 0), (LCR, 3), (IIR, 0xC7), (MCR, 3)):
        wr(u, reg, value)
    assert (rd(u, IIR), rd(u, LSR), rd(u, MSR), rd(u, MCR)) == (0xC1, 0x60, 0xB0, 0x03)   # as QEMU after init
    assert u.divisor == 1
    for ch in b"hi\n":
        assert rd(u, LSR) & 0x20
        wr(u, THR, ch)
    assert bytes(out) == b"hi\n"


def test_thr_empty_interrupt(wire):
    u, _ = make(wire)
    wr(u, IIR, 0xC7)
    wr(u, IER, 0x02)
    assert wire.high and rd(u, IIR) == 0xC2             # enabling THRI while THR is empty raises it
    assert rd(u, IIR) == 0xC1 and not wire.high         # reading IIR acknowledges it
    wr(u, THR, ord("x"))
    assert wire.high and rd(u, IIR) == 0xC2 and wire.rising_edges == 2
    wr(u, THR, ord("y"))                                # still pending: the line drops and rises again
    assert wire.rising_edges == 3
    wr(u, IER, 0)
    assert not wire.high and rd(u, IIR) == 0xC1


def test_ier_keeps_low_nibble():
    u, _ = make()
    wr(u, IER, 0xFF)
    assert rd(u, IER) == 0x0F


def test_receive_queue_and_interrupt(wire):
    u, _ = make(wire)
    wr(u, IER, 0x01)
    assert rd(u, LSR) & 0x01 == 0 and not wire.high
    u.feed(b"ab")
    assert rd(u, LSR) == 0x61 and wire.high and rd(u, IIR) == 0x04
    assert rd(u, THR) == ord("a") and rd(u, THR) == ord("b")
    assert rd(u, LSR) == 0x60 and not wire.high


def test_loopback():
    u, out = make()
    wr(u, MCR, 0x1F)
    assert rd(u, MSR) == 0xF0                           # DTR, RTS, OUT1, OUT2 looped to DSR, CTS, RI, DCD
    wr(u, THR, ord("A"))
    assert out == b"" and rd(u, LSR) == 0x61 and rd(u, THR) == ord("A")
    wr(u, MCR, 0x03)
    assert rd(u, MSR) == 0xB0


def test_fifo_control_and_scratch():
    u, _ = make()
    wr(u, IIR, 0xC7)
    assert rd(u, IIR) == 0xC1
    wr(u, IIR, 0x00)
    assert rd(u, IIR) == 0x01
    wr(u, SCR, 0x5A)
    assert rd(u, SCR) == 0x5A


def test_word_write_splits_into_bytes():
    u, out = make()
    u.write(THR, 2, 0x0F41)                             # THR = 'A', IER = 0x0f
    assert out == b"A" and rd(u, IER) == 0x0F
    assert u.read(LSR, 2) == 0xB060                     # LSR | MSR << 8
