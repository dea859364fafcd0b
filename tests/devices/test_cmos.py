"""CMOS/RTC: the bytes QEMU 7.2's pc machine shows (probe dump), clock registers, UIP, register C, IRQ8."""
import calendar

from vmm.devices.ata import guess_geometry
from vmm.devices.cmos import Cmos, DiskGeometry, gmtime, mktimegm, pc_cmos_bytes, pc_ram_split

MiB, GiB = 1 << 20, 1 << 30
NS = 1_000_000_000
# CMOS 0x00-0x3f under QEMU with -m 128M (default), a 256-sector IDE disk, RTC at 2026-11-26 14:37:00 UTC.
QEMU_DUMP = bytes.fromhex(
    "00 00 37 00 14 00 05 26 11 26 26 02 00 80 00 00 00 00 f0 00 06 80 02 ff ff 2f 00 02 00 10 ff ff"
    "c8 02 00 3f 00 00 00 00 00 00 00 00 00 00 00 00 ff ff 20 00 00 07 00 20 30 00 00 00 00 12 00 00")
PROBE_TIME = calendar.timegm((2026, 11, 26, 14, 37, 0))


def rd(cmos, index):
    cmos.write(0, 1, index)
    return cmos.read(1, 1)


def wr(cmos, index, value):
    cmos.write(0, 1, index)
    cmos.write(1, 1, value)


def test_matches_qemu_dump(clock):
    geometry = guess_geometry(bytes(512), 256)
    cmos = Cmos(clock, 128 * MiB, disk0=geometry, base_epoch_s=PROBE_TIME)
    assert bytes(rd(cmos, i) for i in range(64)) == QEMU_DUMP
    assert all(rd(cmos, i) == 0 for i in range(64, 128))


def test_memory_bytes_for_large_and_small_ram():
    b = pc_cmos_bytes(4 * GiB)
    assert pc_ram_split(4 * GiB) == (3 * GiB, GiB)
    assert (b[0x34], b[0x35]) == (0x00, 0xBF)           # (3 GiB - 16 MiB) / 64 KiB
    assert (b[0x5B], b[0x5C], b[0x5D]) == (0x00, 0x40, 0x00)
    b = pc_cmos_bytes(8 * MiB, cpus=4)
    assert (b[0x17], b[0x18], b[0x34], b[0x35], b[0x5F]) == (0x00, 0x1C, 0, 0, 3)
    assert pc_ram_split(0xDFFFF000) == (0xDFFFF000, 0)


def test_ports(clock):
    cmos = Cmos(clock, 128 * MiB)
    assert cmos.read(0, 1) == 0xFF                      # the index port reads as unassigned
    cmos.write(0, 1, 0x8A)                              # bit 7 is the NMI mask
    assert cmos.read(1, 1) == 0x26
    assert [rd(cmos, r) for r in (0x0B, 0x0C, 0x0D)] == [0x02, 0x00, 0x80]
    wr(cmos, 0x0D, 0)
    wr(cmos, 0x50, 0xA5)
    assert rd(cmos, 0x0D) == 0x80 and rd(cmos, 0x50) == 0xA5
    wr(cmos, 0x0A, 0xFF)
    assert rd(cmos, 0x0A) == 0x7F                       # UIP is read-only
    wr(cmos, 0x0A, 0x26)
    assert rd(cmos, 0x37) == rd(cmos, 0x32)             # the PS/2 century alias


def test_time_follows_the_guest_clock(clock):
    cmos = Cmos(clock, 128 * MiB, base_epoch_s=calendar.timegm((1999, 12, 31, 23, 59, 58)))
    assert [rd(cmos, r) for r in (0, 2, 4, 7, 8, 9, 0x32)] == [0x58, 0x59, 0x23, 0x31, 0x12, 0x99, 0x19]
    clock.advance(3 * NS)
    assert [rd(cmos, r) for r in (0, 2, 4, 6, 7, 8, 9, 0x32)] == [0x01, 0x00, 0x00, 0x07, 0x01, 0x01, 0x00, 0x20]


def test_binary_and_12_hour_modes(clock):
    cmos = Cmos(clock, 128 * MiB, base_epoch_s=PROBE_TIME + 24)
    wr(cmos, 0x0B, 0x06)
    assert (rd(cmos, 0), rd(cmos, 4)) == (24, 14)       # probe: "binary mode sec 18 hr 0e"
    wr(cmos, 0x0B, 0x00)
    assert rd(cmos, 4) == 0x82                          # 2 PM


def test_update_in_progress_window(clock):
    cmos = Cmos(clock, 128 * MiB)
    clock.advance_to(NS - 244141)
    assert not rd(cmos, 0x0A) & 0x80
    clock.advance_to(NS - 244140)
    assert rd(cmos, 0x0A) & 0x80
    clock.advance_to(NS)
    assert not rd(cmos, 0x0A) & 0x80


def test_update_flag_without_interrupts(clock, wire):
    cmos = Cmos(clock, 128 * MiB, wire)
    clock.advance(NS // 2)
    assert rd(cmos, 0x0C) == 0
    clock.advance(NS // 2)
    assert rd(cmos, 0x0C) == 0x10 and rd(cmos, 0x0C) == 0   # UF, cleared by the read
    assert wire.rising_edges == 0


def test_periodic_interrupt(clock, wire):
    cmos = Cmos(clock, 128 * MiB, wire)
    wr(cmos, 0x0B, 0x42)                                # PIE, 1024 Hz (rate 6: every 32 ticks of 32768 Hz)

    def tick_ns(k):                                     # first nanosecond of the k-th period
        return -(-k * 32 * NS // 32768)

    clock.advance_to(tick_ns(1) - 1)
    assert not wire.high
    clock.advance_to(tick_ns(1))
    assert wire.high
    assert rd(cmos, 0x0C) == 0xC0 and not wire.high
    ticks = 0
    for k in range(2, 22):
        clock.advance_to(tick_ns(k))
        if wire.high:
            ticks += 1
            rd(cmos, 0x0C)
    assert ticks == 20


def test_update_ended_interrupt(clock, wire):
    cmos = Cmos(clock, 128 * MiB, wire)
    wr(cmos, 0x0B, 0x12)                                # UIE
    clock.advance_to(NS - 1)
    assert not wire.high
    clock.advance_to(NS)
    assert wire.high and rd(cmos, 0x0C) == 0x90


def test_set_mode_sets_the_time(clock):
    cmos = Cmos(clock, 128 * MiB)
    wr(cmos, 0x0B, 0x82)                                # SET: the clock stops updating the registers
    for reg, value in ((0, 0x30), (2, 0x15), (4, 0x10), (7, 0x04), (8, 0x07), (9, 0x21), (0x32, 0x20)):
        wr(cmos, reg, value)
    clock.advance(5 * NS)
    assert rd(cmos, 0) == 0x30
    wr(cmos, 0x0B, 0x02)
    clock.advance(2 * NS)
    assert [rd(cmos, r) for r in (0, 2, 4, 6, 7, 8, 9)] == [0x32, 0x15, 0x10, 0x01, 0x04, 0x07, 0x21]


def test_disk_geometry_bytes():
    b = pc_cmos_bytes(128 * MiB, disk0=DiskGeometry(1024, 16, 63))
    assert b[0x12] == 0xF0 and b[0x19] == 47
    assert [b[0x1B + i] for i in range(9)] == [0x00, 0x04, 16, 0xFF, 0xFF, 0xC8, 0x00, 0x04, 63]


def test_garbage_clock_registers_do_not_raise(clock):
    cmos = Cmos(clock, 128 * MiB)
    for reg in (0, 2, 4, 7, 8, 9, 0x32):
        wr(cmos, reg, 0xFF)                             # invalid BCD everywhere, written while running
    wr(cmos, 8, 0x13)                                   # month 13
    clock.advance(NS)
    assert rd(cmos, 0x0C) & 0x10 and 0 <= rd(cmos, 0) <= 0x59


def test_calendar_helpers_agree_with_the_c_library():
    import time

    for t in (0, 951782400, 1_704_067_200, 4102444800, -86400, 253402300799):
        g = time.gmtime(t)
        assert gmtime(t) == (*g[:6], (g.tm_wday + 1) % 7)
        assert mktimegm(*g[:6]) == t
    assert mktimegm(2026, 13, 1, 0, 0, 0) == calendar.timegm((2027, 1, 1, 0, 0, 0))   # normalized like QEMU
