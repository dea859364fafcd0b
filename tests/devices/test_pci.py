"""PCI configuration mechanism #1: the address and data ports, bus 0 of the pc machine and its write masks.

Unless noted otherwise, the expected values were observed in QEMU 7.2 (qemu-system-x86_64 -accel tcg
-nodefaults -kernel probe.elf, pc machine, after SeaBIOS) with probe guests doing the same port accesses.
"""
import pytest

from vmm.devices.pci import PciFunction, PciHost, config_bytes, default_wmask

HOST, ISA, IDE, ACPI = 0x80000000, 0x80000800, 0x80000900, 0x80000B00    # enable bit | devfn << 8
FUNCTION_IDS = ["00.0-i440fx", "01.0-piix3-isa", "01.1-piix3-ide", "01.3-piix4-acpi"]

# First 64 bytes of each function as QEMU 7.2 with -nodefaults reports them (dwords 0x00-0x3C)
QEMU_HEADERS = {
    HOST: [0x12378086, 0x00000103, 0x06000002, 0, 0, 0, 0, 0, 0, 0, 0, 0x11001AF4, 0, 0, 0, 0],
    ISA: [0x70008086, 0x02000103, 0x06010000, 0x00800000, 0, 0, 0, 0, 0, 0, 0, 0x11001AF4, 0, 0, 0, 0],
    IDE: [0x70108086, 0x02800103, 0x01018000, 0, 0, 0, 0, 0, 0x0000C001, 0, 0, 0x11001AF4, 0, 0, 0, 0],
    ACPI: [0x71138086, 0x02800103, 0x06800003, 0, 0, 0, 0, 0, 0, 0, 0, 0x11001AF4, 0, 0, 0, 0x00000109],
}
# Device-specific dwords QEMU reported (a sample; the model holds the full 256 bytes)
QEMU_EXTRA = {
    (HOST, 0x58): 0x11111000, (HOST, 0x5C): 0x33111111, (HOST, 0x70): 0x000A0000,
    (ISA, 0x60): 0x0B0B0A0A, (ISA, 0x4C): 0x0003004D, (IDE, 0x40): 0x80008000,
    (ACPI, 0x40): 0x00000601, (ACPI, 0x80): 0x00000001, (ACPI, 0x90): 0x00000701, (ACPI, 0xD0): 0x00090000,
}
# Header bytes whose bits QEMU lets the guest change (byte-wise write 00 / write ff probe); every byte
# from 0x40 to 0xFF was fully writable in all four functions.
QEMU_HEADER_WMASK = {0x04: 0x07, 0x05: 0x05, 0x0C: 0xFF, 0x3C: 0xFF}
QEMU_IDE_BAR4_WMASK = {0x20: 0xF0, 0x21: 0xFF, 0x22: 0xFF, 0x23: 0xFF}


@pytest.fixture
def pci() -> PciHost:
    return PciHost()


def cfg_read(pci: PciHost, address: int, register: int, size: int = 4) -> int:
    pci.address_port.write(0, 4, address | (register & 0xFC))
    return pci.data_port.read(register & 3, size)


def cfg_write(pci: PciHost, address: int, register: int, size: int, value: int) -> None:
    pci.address_port.write(0, 4, address | (register & 0xFC))
    pci.data_port.write(register & 3, size, value)


# -- enumeration and contents --------------------------------------------------------------------

def test_bus0_holds_exactly_the_four_pc_functions(pci):
    present = []
    for bus in range(2):
        for devfn in range(256):
            if cfg_read(pci, 0x80000000 | bus << 16 | devfn << 8, 0) != 0xFFFFFFFF:
                present.append((bus, devfn >> 3, devfn & 7))
    assert present == [(0, 0, 0), (0, 1, 0), (0, 1, 1), (0, 1, 3)]     # no VGA, NIC or USB with -nodefaults


@pytest.mark.parametrize("address", [HOST, ISA, IDE, ACPI], ids=FUNCTION_IDS)
def test_header_matches_qemu(pci, address):
    assert [cfg_read(pci, address, reg) for reg in range(0, 64, 4)] == QEMU_HEADERS[address]


def test_multifunction_bit_only_on_the_isa_bridge(pci):
    assert [cfg_read(pci, a, 0x0E, 1) for a in (HOST, ISA, IDE, ACPI)] == [0x00, 0x80, 0x00, 0x00]


@pytest.mark.parametrize("key", sorted(QEMU_EXTRA))
def test_device_specific_registers_match_qemu(pci, key):
    address, register = key
    assert cfg_read(pci, address, register) == QEMU_EXTRA[key]


def test_initial_config_address_is_what_seabios_left():
    assert PciHost().address_port.read(0, 4) == 0x8000005C


# -- the address port (0xCF8-0xCFB) and 0xCF9 ----------------------------------------------------

@pytest.mark.parametrize("value", [0x80000003, 0x7F123456, 0x00000000])
def test_dword_write_latches_all_32_bits(pci, value):
    pci.address_port.write(0, 4, value)
    assert pci.address_port.read(0, 4) == value


def test_narrow_address_reads_return_the_low_bytes_whatever_the_offset(pci):
    pci.address_port.write(0, 4, 0x81234568)
    # 0xCF9 is the PIIX3 reset control register
    assert [pci.address_port.read(off, 1) for off in range(4)] == [0x68, 0x00, 0x68, 0x68]
    assert pci.address_port.read(0, 2) == 0x4568
    assert pci.address_port.read(2, 2) == 0x4568
    assert pci.address_port.read(1, 2) == 0x0000
    assert pci.address_port.read(1, 4) == 0
    assert pci.address_port.read(2, 4) == 0         # unaligned: QEMU returns 0


@pytest.mark.parametrize("offset,size,value",
                         [(0, 1, 0x11), (0, 2, 0x2222), (2, 1, 0x33), (2, 2, 0x4444), (3, 1, 0x55)])
def test_narrow_address_writes_are_dropped(pci, offset, size, value):
    pci.address_port.write(0, 4, 0x81234568)
    pci.address_port.write(offset, size, value)
    assert pci.address_port.read(0, 4) == 0x81234568


def test_reset_control_register_at_0xcf9(pci):
    pci.address_port.write(0, 4, 0x81234568)
    pci.address_port.write(1, 1, 0x02)
    assert pci.address_port.read(1, 1) == 0x02
    assert pci.address_port.read(1, 2) == 0x0202
    assert pci.address_port.read(1, 4) == 0x02020202
    assert pci.address_port.read(0, 4) == 0x81234568     # the latched address is untouched
    assert pci.address_port.read(0, 1) == 0x68
    pci.address_port.write(1, 1, 0xFB)                  # only SYS_RST is kept
    assert pci.address_port.read(1, 1) == 0x02
    pci.address_port.write(1, 2, 0x0002)                # split into bytes, lowest first: the 0x00 wins
    assert pci.address_port.read(1, 1) == 0x00
    pci.address_port.write(1, 2, 0x0200)
    assert pci.address_port.read(1, 1) == 0x02
    pci.address_port.write(1, 4, 0x02000000)
    assert pci.address_port.read(1, 1) == 0x02
    assert pci.address_port.read(0, 4) == 0x81234568


def test_rst_cpu_requests_a_reset_instead_of_being_stored():
    # From QEMU's piix3 rcr_write (not run in the probe: it would reset the machine).
    resets = []
    pci = PciHost(on_reset=lambda: resets.append(True))
    pci.address_port.write(1, 1, 0x06)
    assert resets == [True]
    assert pci.address_port.read(1, 1) == 0x00
    PciHost().address_port.write(1, 1, 0x04)           # without a handler it is logged, not raised


# -- the data port (0xCFC-0xCFF) -----------------------------------------------------------------

def test_enable_bit_clear_reads_all_ones_and_drops_writes(pci):
    pci.address_port.write(0, 4, 0x00000000)
    assert (pci.data_port.read(0, 4), pci.data_port.read(2, 2), pci.data_port.read(1, 1)) == (0xFFFFFFFF, 0xFFFF, 0xFF)
    pci.address_port.write(0, 4, IDE & ~0x80000000 | 0x3C)
    pci.data_port.write(0, 1, 0x0E)
    assert cfg_read(pci, IDE, 0x3C) == 0


def test_aligned_sub_dword_reads_and_unaligned_reads(pci):
    pci.address_port.write(0, 4, HOST)
    assert pci.data_port.read(0, 4) == 0x12378086
    assert pci.data_port.read(0, 2) == 0x8086
    assert pci.data_port.read(2, 2) == 0x1237
    assert pci.data_port.read(1, 1) == 0x80
    assert pci.data_port.read(3, 1) == 0x12
    assert [pci.data_port.read(1, 2), pci.data_port.read(3, 2),
            pci.data_port.read(1, 4), pci.data_port.read(2, 4), pci.data_port.read(3, 4)] == [0, 0, 0, 0, 0]


def test_register_low_bits_are_ored_with_the_port_offset(pci):
    pci.address_port.write(0, 4, HOST | 0x03)
    assert pci.data_port.read(0, 4) == 0x00010312        # four bytes from config offset 3
    assert pci.data_port.read(0, 1) == 0x12
    assert pci.data_port.read(1, 1) == 0x12              # 3 | 1 == 3
    assert pci.data_port.read(0, 2) == 0x0312
    pci.address_port.write(0, 4, HOST | 0x01)
    assert pci.data_port.read(0, 4) == 0x03123780
    assert pci.data_port.read(0, 1) == 0x80
    assert pci.data_port.read(2, 1) == 0x12
    assert pci.data_port.read(2, 2) == 0x0312


def test_writes_at_ored_register_addresses(pci):
    pci.address_port.write(0, 4, ISA | 0x61)
    pci.data_port.write(2, 1, 0x05)                     # lands on 0x63
    assert cfg_read(pci, ISA, 0x60) == 0x050B0A0A
    cfg_write(pci, ISA, 0x60, 4, 0x0B0B0A0A)
    pci.address_port.write(0, 4, ISA | 0x61)
    pci.data_port.write(0, 4, 0x0C0D0E0F)               # bytes 0x61-0x64
    assert cfg_read(pci, ISA, 0x60) == 0x0D0E0F0A
    assert cfg_read(pci, ISA, 0x64) == 0x0000000C


def test_reserved_address_bits_are_ignored(pci):
    pci.address_port.write(0, 4, 0xFF000008)
    assert pci.data_port.read(0, 4) == 0x06000002


def test_absent_device_and_bus_read_all_ones(pci):
    pci.address_port.write(0, 4, 0x80001000)            # 00:02.0
    assert (pci.data_port.read(0, 4), pci.data_port.read(2, 2), pci.data_port.read(1, 1)) == (0xFFFFFFFF, 0xFFFF, 0xFF)
    pci.address_port.write(0, 4, 0x80010000)            # 01:00.0
    assert pci.data_port.read(0, 4) == 0xFFFFFFFF
    pci.data_port.write(0, 4, 0)                        # dropped without error


def test_reads_are_clipped_at_the_end_of_config_space(pci):
    assert cfg_read(pci, ISA, 0xFC) == 0
    cfg_write(pci, ISA, 0xFF, 1, 0xAB)
    pci.address_port.write(0, 4, ISA | 0xFF)
    # QEMU (pci_host_config_read_common) reads only the one remaining byte; the upper ones are zero.
    assert pci.data_port.read(0, 4) == 0xAB
    pci.data_port.write(0, 4, 0x11223344)               # only 0x44 reaches offset 0xFF
    assert cfg_read(pci, ISA, 0xFC) == 0x44000000


def test_unaligned_data_writes_are_dropped(pci):
    pci.address_port.write(0, 4, IDE | 0x04)
    pci.data_port.write(1, 2, 0xFFFF)
    assert cfg_read(pci, IDE, 0x04) == 0x02800103
    pci.address_port.write(0, 4, IDE | 0x3C)
    pci.data_port.write(1, 4, 0xAABBCCDD)
    assert cfg_read(pci, IDE, 0x3C) == 0


# -- write masks and BAR probing -----------------------------------------------------------------

@pytest.mark.parametrize("address", [HOST, ISA, IDE, ACPI], ids=FUNCTION_IDS)
def test_bytewise_write_masks_match_qemu(pci, address):
    expected = {**QEMU_HEADER_WMASK, **(QEMU_IDE_BAR4_WMASK if address == IDE else {})}
    for register in range(256):
        original = cfg_read(pci, address, register, 1)
        cfg_write(pci, address, register, 1, 0x00)
        zeros = cfg_read(pci, address, register, 1)
        cfg_write(pci, address, register, 1, 0xFF)
        ones = cfg_read(pci, address, register, 1)
        cfg_write(pci, address, register, 1, original)
        mask = 0xFF if register >= 0x40 else expected.get(register, 0)
        assert (zeros, ones) == (original & ~mask, original | mask), hex(register)
        assert cfg_read(pci, address, register, 1) == original


@pytest.mark.parametrize("address", [HOST, ISA, IDE, ACPI], ids=FUNCTION_IDS)
def test_bar_probing(pci, address):
    for bar in (0x10, 0x14, 0x18, 0x1C, 0x20, 0x24, 0x30):
        original = cfg_read(pci, address, bar)
        cfg_write(pci, address, bar, 4, 0xFFFFFFFF)
        probed = cfg_read(pci, address, bar)
        cfg_write(pci, address, bar, 4, 0)
        cleared = cfg_read(pci, address, bar)
        cfg_write(pci, address, bar, 4, original)
        if address == IDE and bar == 0x20:
            assert (original, probed, cleared) == (0x0000C001, 0xFFFFFFF1, 0x00000001)   # BMIBA: 16 I/O ports
        else:
            assert (original, probed, cleared) == (0, 0, 0)     # the ACPI function has no BARs
        assert cfg_read(pci, address, bar) == original


def test_bar4_word_probe(pci):
    cfg_write(pci, IDE, 0x20, 2, 0xFFFF)
    assert cfg_read(pci, IDE, 0x20) == 0x0000FFF1


def test_command_register_writable_bits(pci):
    cfg_write(pci, IDE, 0x04, 4, 0xFFFFFFFF)
    assert cfg_read(pci, IDE, 0x04) == 0x02800507       # status unchanged, SERR/INTx-disable/IO/MEM/MASTER set
    cfg_write(pci, HOST, 0x04, 4, 0xFFFFFFFF)
    assert cfg_read(pci, HOST, 0x04) == 0x00000507
    cfg_write(pci, HOST, 0x04, 4, 0)
    assert cfg_read(pci, HOST, 0x04) == 0


def test_smram_register_is_fully_writable(pci):
    for value in (0x00, 0x6F, 0x02, 0xFF, 0x00):
        cfg_write(pci, HOST, 0x72, 1, value)
        assert cfg_read(pci, HOST, 0x72, 1) == value


# -- building blocks ------------------------------------------------------------------------------

def test_custom_function_table():
    function = PciFunction(config_bytes({0x00: 0xABCD1234}), default_wmask({0x10: 0xFFFFF000}))
    pci = PciHost(functions={(3, 0): function})
    assert cfg_read(pci, 0x80001800, 0) == 0xABCD1234
    cfg_write(pci, 0x80001800, 0x10, 4, 0xFFFFFFFF)
    assert cfg_read(pci, 0x80001800, 0x10) == 0xFFFFF000
    assert cfg_read(pci, HOST, 0) == 0xFFFFFFFF


def test_config_space_must_be_256_bytes():
    with pytest.raises(ValueError):
        PciFunction(bytes(64), bytes(256))
