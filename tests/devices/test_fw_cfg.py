"""fw_cfg: item values as QEMU 7.2 reports them for -m 128M -smp 1 (probe), directory format, DMA."""
import struct

from vmm.devices.fw_cfg import FwCfg
from vmm.errors import OutsideRam

MiB = 1 << 20
# etc/e820 read through fw_cfg under QEMU 7.2 with 128 MiB: the AMD HT hole, then RAM below 4 GiB
QEMU_E820 = bytes.fromhex("00000000fd000000 0000000003000000 02000000 0000000000000000 0000000800000000 01000000")


class Ram:
    """A small guest RAM for DMA tests; accesses outside it fail like GuestRam's."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)

    def read(self, pa, length):
        if pa < 0 or pa + length > len(self.data):
            raise OutsideRam("outside")
        return bytes(self.data[pa:pa + length])

    def write(self, pa, data):
        if pa < 0 or pa + len(data) > len(self.data):
            raise OutsideRam("outside")
        self.data[pa:pa + len(data)] = data


def item(fw, key, n):
    fw.write(0, 2, key)
    return bytes(fw.read(1, 1) for _ in range(n))


def test_items_match_qemu():
    fw = FwCfg(128 * MiB, cpus=1, memory=Ram(4096))
    assert item(fw, 0x0000, 4) == b"QEMU"
    assert item(fw, 0x0001, 4) == b"\x03\x00\x00\x00"   # traditional interface + DMA
    assert item(fw, 0x0002, 16) == bytes(16)
    assert item(fw, 0x0003, 8) == struct.pack("<Q", 128 * MiB)
    assert item(fw, 0x0004, 2) == b"\x00\x00"
    assert item(fw, 0x0005, 2) == b"\x01\x00"
    assert item(fw, 0x000E, 2) == b"\x00\x00"
    assert item(fw, 0x000F, 2) == b"\x01\x00"
    assert item(fw, 0x8002, 4) == b"\x01\x00\x00\x00"   # IRQ0 override
    assert item(fw, 0x4000, 4) == b"QEMU"               # the write-channel bit is ignored


def test_without_dma_the_id_says_so():
    assert item(FwCfg(128 * MiB), 0x0001, 4) == b"\x01\x00\x00\x00"


def test_reads_past_the_end_and_unknown_items_are_zero():
    fw = FwCfg(128 * MiB)
    assert item(fw, 0x0000, 6) == b"QEMU\x00\x00"
    assert item(fw, 0x0013, 4) == bytes(4)
    assert item(fw, 0x3FFF, 4) == bytes(4)


def test_file_directory_and_e820():
    fw = FwCfg(128 * MiB, cpus=2)
    raw = item(fw, 0x0019, 4 + 64)
    count, (size, select, _reserved, name) = struct.unpack(">I", raw[:4])[0], struct.unpack(">IHH56s", raw[4:])
    assert count == 1 and size == 40 and select == 0x20 and name.rstrip(b"\0") == b"etc/e820"
    assert item(fw, select, size) == QEMU_E820


def test_files_are_sorted_by_name():
    fw = FwCfg(128 * MiB)
    fw.add_file("bootorder", b"x")
    assert fw.file_key("bootorder") == 0x20 and fw.file_key("etc/e820") == 0x21
    assert item(fw, 0x20, 1) == b"x"


def test_port_widths():
    fw = FwCfg(128 * MiB)
    fw.write(0, 2, 0)
    assert fw.read(1, 2) == 0                           # only byte reads return data
    assert fw.read(0, 1) == ord("Q")                    # a byte read at 0x510 reads data too
    fw.write(1, 1, 0x55)                                # data writes are ignored
    assert fw.read(1, 1) == ord("E")
    assert fw.read(4, 4) == 0x554D4551 and fw.read(8, 4) == 0x47464320     # "QEMU CFG", as inl sees it
    assert fw.read(2, 1) == 0xFF


def dma(fw, ram, control, length, address, at=0x100):
    ram.write(at, struct.pack(">IIQ", control, length, address))
    fw.write(4, 4, 0)                                   # high half (big-endian on the wire)
    fw.write(8, 4, int.from_bytes(at.to_bytes(4, "big"), "little"))
    return struct.unpack(">I", ram.read(at, 4))[0]


def test_dma_select_read_skip_and_errors():
    ram = Ram(4096)
    fw = FwCfg(128 * MiB, memory=ram)
    assert dma(fw, ram, (0x0000 << 16) | 0x08 | 0x02, 2, 0x800) == 0
    assert ram.read(0x800, 2) == b"QE"
    assert dma(fw, ram, 0x04, 1, 0) == 0                # skip one byte
    assert dma(fw, ram, 0x02, 4, 0x800) == 0            # then read on: "U" and zeros past the end
    assert ram.read(0x800, 4) == b"U\0\0\0"
    assert dma(fw, ram, (0x0003 << 16) | 0x08 | 0x02, 8, 0x900) == 0
    assert ram.read(0x900, 8) == struct.pack("<Q", 128 * MiB)
    assert dma(fw, ram, 0x08 | 0x10, 4, 0x900) == 0x01  # nothing is writable
    assert dma(fw, ram, (0x0000 << 16) | 0x08 | 0x02, 4, 0x10000) == 0x01   # outside RAM


def test_dma_64bit_address_write():
    ram = Ram(4096)
    fw = FwCfg(128 * MiB, memory=ram)
    ram.write(0x200, struct.pack(">IIQ", 0x08 | 0x02, 4, 0x300))
    fw.write(4, 8, int.from_bytes((0x200).to_bytes(8, "big"), "little"))
    assert ram.read(0x300, 4) == b"QEMU" and ram.read(0x200, 4) == bytes(4)
