"""I/O APIC: QEMU 7.2's registers (probe-verified: version 0x170020, masks, RO bits) and edge/level delivery."""
import logging

from vmm.devices.ioapic import IoApic

IOREGSEL, IOWIN, EOI = 0x00, 0x10, 0x40


def make():
    seen = []
    return IoApic(deliver=lambda vector, level: seen.append((vector, level))), seen


def reg_read(io, reg):
    io.write(IOREGSEL, 4, reg)
    return io.read(IOWIN, 4)


def reg_write(io, reg, value):
    io.write(IOREGSEL, 4, reg)
    io.write(IOWIN, 4, value)


def route(io, pin, low, high=0):
    reg_write(io, 0x11 + 2 * pin, high)
    reg_write(io, 0x10 + 2 * pin, low)


def test_identification_and_reset_state():
    io, _ = make()
    assert (reg_read(io, 0), reg_read(io, 1), reg_read(io, 2)) == (0, 0x00170020, 0)
    assert all(reg_read(io, 0x10 + 2 * p) == 0x10000 and reg_read(io, 0x11 + 2 * p) == 0 for p in range(24))
    assert reg_read(io, 0x40) == 0                      # past the table
    io.write(IOREGSEL, 4, 0x1FF)
    assert io.read(IOREGSEL, 4) == 0xFF
    io.write(IOREGSEL, 4, 1)
    assert io.read(IOWIN, 1) == 0 and io.read(0x20, 4) == 0


def test_write_masks_match_qemu():
    io, _ = make()
    reg_write(io, 0, 0xFFFFFFFF)
    assert reg_read(io, 0) == 0x0F000000
    reg_write(io, 0x12, 0xFFFFFFFF)
    assert reg_read(io, 0x12) == 0xFFFFAFFF             # delivery status and remote IRR are read-only
    reg_write(io, 0x13, 0xFFFFFFFF)
    assert reg_read(io, 0x13) == 0xFFFFFFFF


def test_edge_delivery_and_masked_edges_are_lost():
    io, seen = make()
    line = io.irq_line(2)
    line.set_level(True)
    line.set_level(False)
    route(io, 2, 0x30)
    assert seen == []                                   # the edge came while masked
    line.set_level(True)
    line.set_level(False)
    assert seen == [(0x30, False)]


def test_level_remote_irr_and_eoi():
    io, seen = make()
    route(io, 11, 0x8041)                               # level-triggered, vector 0x41
    line = io.irq_line(11)
    line.set_level(True)
    assert seen == [(0x41, True)] and reg_read(io, 0x10 + 22) & 0x4000
    line.set_level(True)
    assert len(seen) == 1                               # remote IRR holds further deliveries
    io.eoi(0x41)
    assert len(seen) == 2                               # still asserted: delivered again
    line.set_level(False)
    io.write(EOI, 4, 0x41)                              # the version-0x20 EOI register
    assert len(seen) == 2 and not reg_read(io, 0x10 + 22) & 0x4000


def test_unmasking_a_pending_level_request_delivers():
    io, seen = make()
    route(io, 9, 0x18051)                               # level, masked
    io.irq_line(9).set_level(True)
    assert seen == []
    route(io, 9, 0x8051)
    assert seen == [(0x51, True)]


def test_non_fixed_modes_are_logged_not_delivered(caplog):
    caplog.set_level(logging.INFO, logger="vmm.devices")
    io, seen = make()
    route(io, 3, 0x0400 | 0x22)                         # NMI
    io.irq_line(3).set_level(True)
    assert seen == [] and "delivery mode 4" in caplog.text
