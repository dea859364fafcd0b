"""ATA PIO disk on the primary channel: IDENTIFY as QEMU 7.2 reports it, PIO reads/writes on a temp image,
errors, interrupts, reset and register quirks measured under QEMU (probe guests)."""
import os

import pytest

from vmm.devices.ata import AtaChannel, AtaDrive, guess_geometry
from vmm.devices.cmos import DiskGeometry

DATA, ERROR, NSECTOR, SECTOR, LCYL, HCYL, SELECT, STATUS = range(8)
COMMAND = STATUS
SECTORS = 256
# IDENTIFY DEVICE words from QEMU 7.2 for a 256-sector raw image on -drive if=ide,index=0
QEMU_IDENTIFY = [int(w, 16) for w in (
    "0040 0002 0000 0010 7e00 0200 003f 0000 0000 0000 514d 3030 3030 3120 2020 2020 "
    "2020 2020 2020 2020 0003 0200 0004 322e 352b 2020 2020 5145 4d55 2048 4152 4444 "
    "4953 4b20 2020 2020 2020 2020 2020 2020 2020 2020 2020 2020 2020 2020 2020 8010 "
    "0001 0b00 0000 0200 0200 0007 0002 0010 003f 07e0 0000 0110 0100 0000 0007 0007 "
    "0003 0078 0078 0078 0078 4000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 "
    "00f0 0016 4021 7400 4000 4021 3400 4000 203f 0000 0000 0000 0000 6001 0000 0000 "
    "0000 0000 0000 0000 0100 0000 0000 0000 0000 0000 6000 0000 0000 0000 0000 0000 "
    "0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 "
    "0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 "
    "0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 "
    "0000 0000 0000 0000 0000 0000 0000 0000 0000 0001 0000 0000 0000 0000 0000 0000 "
    "0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 "
    "0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 "
    "0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 "
    "0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 "
    "0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 0000 ").split()]


def pattern(lba: int) -> bytes:
    """The sample disk's contents (samples/disk.py's formula)."""
    return bytes((lba * 131 + j * 7 + (lba >> 8)) & 0xFF for j in range(512))


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(b"".join(pattern(i) for i in range(SECTORS)))
    return path


@pytest.fixture
def ata(image, wire):
    channel = AtaChannel(AtaDrive(image), wire)
    yield channel
    channel.close()


def issue(ata, cmd, lba=0, count=1, dev=0xE0):
    ata.write(SELECT, 1, dev | (lba >> 24 & 0x0F))
    ata.write(NSECTOR, 1, count & 0xFF)
    ata.write(SECTOR, 1, lba & 0xFF)
    ata.write(LCYL, 1, lba >> 8 & 0xFF)
    ata.write(HCYL, 1, lba >> 16 & 0xFF)
    ata.write(COMMAND, 1, cmd)


def read_words(ata, n):
    return b"".join(ata.read(DATA, 2).to_bytes(2, "little") for _ in range(n))


def test_identify_matches_qemu(ata, wire):
    issue(ata, 0xEC, dev=0xA0)
    assert wire.high and ata.control.read(0, 1) == 0x58
    assert ata.read(STATUS, 1) == 0x58 and not wire.high        # reading status acknowledges IRQ14
    words = [ata.read(DATA, 2) for _ in range(256)]
    assert words == QEMU_IDENTIFY
    assert ata.read(STATUS, 1) == 0x50 and ata.read(DATA, 2) == 0


def test_power_on_registers(ata):
    assert [ata.read(r, 1) for r in range(1, 8)] == [0x00, 0x01, 0x01, 0x00, 0x00, 0xA0, 0x50]


def test_absent_slave_reads_zero(ata):
    ata.write(SELECT, 1, 0xB0)
    assert (ata.read(ERROR, 1), ata.read(STATUS, 1), ata.control.read(0, 1), ata.read(DATA, 2)) == (0, 0, 0, 0)
    assert ata.read(SELECT, 1) == 0xB0
    assert (ata.read(LCYL, 1), ata.read(HCYL, 1)) == (0xFF, 0xFF)   # the missing device's signature
    ata.write(COMMAND, 1, 0xEC)                                     # ignored
    ata.write(SELECT, 1, 0xA0)
    assert ata.read(STATUS, 1) == 0x50


def test_multi_sector_read(ata, wire):
    issue(ata, 0x20, lba=8, count=3)
    got = b""
    for _ in range(3):
        assert wire.high and ata.read(STATUS, 1) == 0x58        # one interrupt per sector
        got += read_words(ata, 256)
    assert got == b"".join(pattern(8 + i) for i in range(3))
    assert ata.read(STATUS, 1) == 0x50 and not wire.high
    assert [ata.read(r, 1) for r in (NSECTOR, SECTOR, LCYL, HCYL, SELECT)] == [0, 11, 0, 0, 0xE0]


def test_count_zero_reads_256_sectors(ata):
    issue(ata, 0x20, lba=0, count=0)
    data = b"".join(read_words(ata, 256) for _ in range(256))
    assert data == b"".join(pattern(i) for i in range(256)) and ata.read(STATUS, 1) == 0x50


def test_write_round_trip_is_written_through(ata, image, wire):
    payload = bytes((i * 3) & 0xFF for i in range(1024))
    issue(ata, 0x30, lba=100, count=2)
    assert ata.read(STATUS, 1) == 0x58 and not wire.high    # no interrupt before the first sector
    for s in range(2):
        for i in range(0, 512, 2):
            ata.write(DATA, 2, int.from_bytes(payload[s * 512 + i:s * 512 + i + 2], "little"))
        assert wire.high
        assert ata.read(STATUS, 1) == (0x58 if s == 0 else 0x50)
    with open(image, "rb") as f:
        f.seek(100 * 512)
        assert f.read(1024) == payload
    issue(ata, 0x20, lba=100, count=2)
    assert read_words(ata, 512) == payload
    issue(ata, 0xE7)
    assert ata.read(STATUS, 1) == 0x50


def test_lba48_read_with_high_order_bytes(ata):
    ata.write(SELECT, 1, 0x40)
    for reg, high, low in ((NSECTOR, 0, 2), (SECTOR, 0, 0xFE), (LCYL, 0, 0), (HCYL, 0, 0)):
        ata.write(reg, 1, high)
        ata.write(reg, 1, low)
    ata.write(COMMAND, 1, 0x24)
    assert read_words(ata, 512) == pattern(254) + pattern(255)
    assert ata.read(STATUS, 1) == 0x50 and ata.read(SECTOR, 1) == 0x00 and ata.read(LCYL, 1) == 0x01


def test_out_of_range_read_aborts(ata, wire):
    issue(ata, 0x20, lba=SECTORS, count=1)
    assert wire.high
    assert (ata.read(STATUS, 1), ata.read(ERROR, 1)) == (0x41, 0x04)   # QEMU: ABRT, not IDNF
    issue(ata, 0x20, lba=SECTORS - 1, count=2)                          # crossing the end:
    assert ata.read(STATUS, 1) == 0x58                                  # the last sector reads,
    assert read_words(ata, 256) == pattern(SECTORS - 1)
    assert ata.read(STATUS, 1) == 0x41                                  # the next one aborts


def test_out_of_range_write_fails_after_the_data(ata):
    issue(ata, 0x30, lba=SECTORS, count=1)
    assert ata.read(STATUS, 1) == 0x58
    for _ in range(256):
        ata.write(DATA, 2, 0xFFFF)
    assert (ata.read(STATUS, 1), ata.read(ERROR, 1)) == (0x41, 0x04)


def test_chs_addressing(ata):
    ata.write(SELECT, 1, 0xA1)                          # CHS: head 1
    ata.write(LCYL, 1, 0)
    ata.write(HCYL, 1, 0)
    ata.write(SECTOR, 1, 1)
    ata.write(NSECTOR, 1, 1)
    ata.write(COMMAND, 1, 0x20)
    assert read_words(ata, 256)[:2] == pattern(63)[:2]  # head 1 of 16x63 is LBA 63 (0x443d under QEMU)
    assert (ata.read(SECTOR, 1), ata.read(SELECT, 1)) == (2, 0xA1)


def test_nien_suppresses_the_interrupt(ata, wire):
    ata.control.write(0, 1, 0x02)
    issue(ata, 0x20, lba=0, count=1)
    assert not wire.high and ata.read(STATUS, 1) == 0x58


def test_software_reset(ata, wire):
    issue(ata, 0x20, lba=5, count=4)
    ata.write(SELECT, 1, 0xB0)                          # the firmware leaves the slave selected
    ata.control.write(0, 1, 0x06)                       # SRST | nIEN
    ata.control.write(0, 1, 0x02)
    assert ata.read(STATUS, 1) == 0                     # the selection survives: still the slave
    ata.write(SELECT, 1, 0xA0)
    assert [ata.read(r, 1) for r in (STATUS, ERROR, NSECTOR, SECTOR, LCYL, HCYL)] == [0x50, 0x01, 1, 1, 0, 0]
    assert ata.read(DATA, 2) == 0 and not wire.high


def test_commands_qemu_accepts_or_aborts(ata):
    def run(cmd, feature=0, count=0):
        ata.write(ERROR, 1, feature)
        ata.write(NSECTOR, 1, count)
        ata.write(COMMAND, 1, cmd)
        return ata.read(STATUS, 1), ata.read(ERROR, 1)

    ata.write(SELECT, 1, 0xA0)
    assert run(0x55) == (0x41, 0x04)                    # unknown
    assert run(0x00) == (0x41, 0x04)                    # NOP is not implemented for disks
    assert run(0x08) == (0x41, 0x04)                    # DEVICE RESET is ATAPI-only
    assert run(0xEF, 0x03, 0x0C) == (0x50, 0x00)        # SET FEATURES: transfer mode PIO 4
    assert run(0xEF, 0x77) == (0x41, 0x04)
    assert run(0xC6, count=3) == (0x41, 0x04)           # SET MULTIPLE: not a power of two
    assert run(0xC6, count=8) == (0x50, 0x00)
    assert run(0xE0)[0] == 0x40 and run(0x70)[0] == 0x50 and run(0x40)[0] == 0x50
    assert run(0xE5) == (0x50, 0x00) and ata.read(NSECTOR, 1) == 0xFF
    assert run(0x90) == (0x50, 0x01) and ata.read(SELECT, 1) == 0xA0
    assert run(0x91, count=3) == (0x50, 0x00)           # INITIALIZE DEVICE PARAMETERS: 1 head, 3 sectors
    assert run(0xF8) == (0x50, 0x00)
    assert [ata.read(r, 1) for r in (SECTOR, LCYL, HCYL, SELECT)] == [0x01, 0x55, 0x00, 0xA0]   # as QEMU
    issue(ata, 0xEC, dev=0xA0)
    words = [ata.read(DATA, 2) for _ in range(256)]
    assert (words[59], words[62], words[63], words[88]) == (0x0110, 0x0007, 0x0007, 0x003F)


def test_read_multiple_blocks(ata, wire):
    ata.write(SELECT, 1, 0xE0)
    ata.write(NSECTOR, 1, 4)
    ata.write(COMMAND, 1, 0xC6)
    ata.read(STATUS, 1)
    edges = wire.rising_edges
    issue(ata, 0xC4, lba=0, count=10)
    data = b""
    for block in (4, 4, 2):                             # DRQ blocks of the multiple count, one IRQ each
        assert wire.high and ata.read(STATUS, 1) == 0x58 and not wire.high
        data += read_words(ata, 256 * block)
    assert data == b"".join(pattern(i) for i in range(10))
    assert ata.read(STATUS, 1) == 0x50 and wire.rising_edges - edges == 3


def test_data_port_widths(ata):
    issue(ata, 0xEC, dev=0xA0)
    assert ata.read(DATA, 1) == 0x40 and ata.read(DATA, 1) == 0x02      # a byte read consumes a word
    assert ata.read(DATA, 4) == 0x00100000                              # words 2 and 3
    assert ata.read(NSECTOR, 2) == 0x0001 and ata.read(STATUS, 2) == 0xFF58
    assert ata.read(LCYL, 4) == 0xFFFFFFFF
    ata.write(NSECTOR, 2, 0x3412)
    assert (ata.read(NSECTOR, 1), ata.read(SECTOR, 1)) == (0x12, 0x34)


def test_byte_writes_to_the_data_port_are_dropped(ata):
    issue(ata, 0x30, lba=3, count=1)
    ata.write(DATA, 1, 0xAA)
    for _ in range(256):
        ata.write(DATA, 2, 0x1111)
    assert ata.read(STATUS, 1) == 0x50
    issue(ata, 0x20, lba=3, count=1)
    assert read_words(ata, 256) == b"\x11" * 512


def test_hob_reads_previous_values(ata):
    for reg, value in ((NSECTOR, 0x12), (SECTOR, 0x34), (LCYL, 0x56), (HCYL, 0x78)):
        ata.write(reg, 1, value)
    ata.control.write(0, 1, 0x80)
    assert [ata.read(r, 1) for r in (NSECTOR, SECTOR, LCYL, HCYL)] == [0x01, 0x01, 0, 0]
    ata.write(NSECTOR, 1, 0x01)                         # any task-file write clears HOB
    assert ata.read(SECTOR, 1) == 0x34


def test_channel_without_a_drive_reads_zero(wire):
    empty = AtaChannel(None, wire)
    assert [empty.read(r, 1) for r in range(8)] == [0] * 8 and empty.control.read(0, 1) == 0


def test_geometry_guess():
    assert guess_geometry(bytes(512), 256) == DiskGeometry(2, 16, 63, 0)
    assert guess_geometry(bytes(512), 16 * 63 * 2000) == DiskGeometry(2000, 16, 63, 1)
    mbr = bytearray(512)
    mbr[510:512] = b"\x55\xaa"
    mbr[0x1BE + 5], mbr[0x1BE + 6], mbr[0x1BE + 12] = 3, 32, 0x80      # ends at head 3, sector 32
    assert guess_geometry(bytes(mbr), 4 * 32 * 100) == DiskGeometry(100, 4, 32, 0)


def test_image_size_not_a_sector_multiple(tmp_path):
    path = tmp_path / "odd.img"
    path.write_bytes(b"\x01" * 700)
    drive = AtaDrive(path)
    assert drive.total_sectors == 2 and drive.read(1, 1) == b"\x01" * 188 + bytes(324)
    drive.close()
    assert os.path.getsize(path) == 700


def test_chs_sector_zero_is_out_of_range(ata):
    ata.write(SELECT, 1, 0xA0)
    for reg in (SECTOR, LCYL, HCYL):
        ata.write(reg, 1, 0)
    ata.write(NSECTOR, 1, 1)
    ata.write(COMMAND, 1, 0x20)                         # cylinder 0, head 0, sector 0: LBA -1
    assert (ata.read(STATUS, 1), ata.read(ERROR, 1)) == (0x41, 0x04)
