"""8254 PIT: counts and outputs derived from guest time, IRQ0 edges, latches, read-back, port 0x61 (QEMU's model)."""
import logging

from vmm.devices.pit import Pit, tick_time_ns, ticks_between

CH0, CH1, CH2, CTRL = 0, 1, 2, 3


def program(pit, channel, mode, count, access=3):
    pit.write(CTRL, 1, (channel << 6) | (access << 4) | (mode << 1))
    if access in (1, 3):
        pit.write(channel, 1, count & 0xFF)
    if access in (2, 3):
        pit.write(channel, 1, count >> 8)


def latch(pit, channel):
    pit.write(CTRL, 1, channel << 6)
    return pit.read(channel, 1) | pit.read(channel, 1) << 8


def ns_for(ticks):
    return tick_time_ns(0, ticks)


def test_tick_conversion_is_exact():
    for t in (1, 2, 1000, 65536, 1193182, 10**7):
        assert ticks_between(0, tick_time_ns(0, t)) == t
        assert ticks_between(0, tick_time_ns(0, t) - 1) == t - 1


def test_reset_state_matches_qemu(clock, wire):
    pit = Pit(clock, wire)
    pit.write(CTRL, 1, 0xEE)                            # read-back: status of all three counters
    # QEMU at reset: mode 3, access 0, count 65536, output high in the first half period
    assert [pit.read(ch, 1) for ch in (CH0, CH1, CH2)] == [0x86, 0x86, 0x86]
    assert pit.read(CTRL, 1) == 0
    assert wire.levels == [True]


def test_mode2_counter_and_irq0_rate(clock, wire):
    pit = Pit(clock, wire)
    program(pit, CH0, 2, 1000)
    clock.advance_to(ns_for(250))
    assert latch(pit, CH0) == 750
    edges = wire.rising_edges
    clock.advance_to(ns_for(10 * 1000))
    assert wire.rising_edges - edges == 10              # one IRQ0 edge per period
    clock.advance_to(ns_for(10 * 1000 + 1))
    assert not wire.high                                # QEMU's mode-2 output is high for one tick
    assert latch(pit, CH0) == 999


def test_mode0_one_shot(clock, wire):
    pit = Pit(clock, wire)
    program(pit, CH0, 0, 500)
    assert not wire.high
    clock.advance_to(ns_for(499))
    assert not wire.high and latch(pit, CH0) == 1
    clock.advance_to(ns_for(500))
    assert wire.high
    edges = wire.rising_edges
    clock.advance_to(ns_for(100000))
    assert wire.rising_edges == edges and wire.high
    assert latch(pit, CH0) == (500 - 100000) & 0xFFFF   # the counter wraps on


def test_mode3_square_wave(clock, wire):
    pit = Pit(clock, wire)
    program(pit, CH0, 3, 100)
    clock.advance_to(ns_for(25))
    assert wire.high and latch(pit, CH0) == 50          # QEMU counts down by two in mode 3
    clock.advance_to(ns_for(49))
    assert wire.high
    clock.advance_to(ns_for(50))
    assert not wire.high
    clock.advance_to(ns_for(100))
    assert wire.high
    edges = wire.rising_edges
    clock.advance_to(ns_for(100 + 10 * 100))
    assert wire.rising_edges - edges == 10


def test_count_zero_means_65536_and_lobyte_hibyte_access(clock, wire):
    pit = Pit(clock, wire)
    program(pit, CH2, 0, 0)
    assert pit.channels[2].count == 0x10000
    program(pit, CH1, 2, 0x34, access=1)                # low byte only
    assert pit.channels[1].count == 0x34
    program(pit, CH1, 2, 0x1200, access=2)              # high byte only
    assert pit.channels[1].count == 0x1200
    clock.advance_to(ns_for(0x100))
    assert pit.read(CH1, 1) == (0x1200 - 0x100) >> 8    # reads follow the access mode too


def test_latch_holds_until_read_and_second_latch_is_ignored(clock, wire):
    pit = Pit(clock, wire)
    program(pit, CH0, 2, 60000)
    clock.advance_to(ns_for(100))
    pit.write(CTRL, 1, 0x00)
    clock.advance_to(ns_for(200))
    pit.write(CTRL, 1, 0x00)                            # ignored: the first latch was not read yet
    assert pit.read(CH0, 1) | pit.read(CH0, 1) << 8 == 59900
    assert latch(pit, CH0) == 59800


def test_read_back_status_then_count(clock, wire):
    pit = Pit(clock, wire)
    program(pit, CH2, 0, 1000)
    clock.advance_to(ns_for(10))
    pit.write(CTRL, 1, 0xC8)                            # read-back, latch count and status of counter 2
    assert pit.read(CH2, 1) == 0x30                     # out low, access lo/hi, mode 0, binary
    assert pit.read(CH2, 1) | pit.read(CH2, 1) << 8 == 990


def test_unlatched_word_reads_alternate_bytes(clock, wire):
    pit = Pit(clock, wire)
    program(pit, CH0, 0, 0x1234)
    assert pit.read(CH0, 1) == 0x34 and pit.read(CH0, 1) == 0x12


def test_bcd_is_logged_and_counts_in_binary(clock, wire, caplog):
    pit = Pit(clock, wire)
    with caplog.at_level(logging.INFO, logger="vmm.devices"):
        pit.write(CTRL, 1, 0x35)
    assert "BCD" in caplog.text
    pit.write(CH0, 1, 0x10)
    pit.write(CH0, 1, 0x00)
    assert pit.channels[0].count == 0x10


def test_speaker_port_gate_out2_and_refresh(clock, wire):
    pit = Pit(clock, wire)
    port = pit.speaker_port
    first, second = port.read(0, 1), port.read(0, 1)
    assert (first ^ second) == 0x10                     # the refresh bit toggles on every read
    assert first & 0x01 == 0                            # gate 2 low at reset
    port.write(0, 1, 0x01)
    program(pit, CH2, 0, 1000)                          # the calibration loop guests use
    assert port.read(0, 1) & 0x21 == 0x01
    clock.advance_to(ns_for(1000))
    assert port.read(0, 1) & 0x21 == 0x21


def test_rising_gate_restarts_mode2(clock, wire):
    pit = Pit(clock, wire)
    program(pit, CH2, 2, 100)
    clock.advance_to(ns_for(30))
    pit.set_gate(2, False)
    pit.set_gate(2, True)
    assert latch(pit, CH2) == 100
