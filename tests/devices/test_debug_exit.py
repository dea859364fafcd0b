"""isa-debug-exit: the status QEMU exits with, and its reads (0 under QEMU 7.2, measured)."""
from vmm.devices.debug_exit import DebugExit, exit_status


def test_write_stops_with_shifted_status():
    seen = []
    dev = DebugExit(on_exit=seen.append)
    dev.write(0, 4, 0)
    dev.write(0, 4, 1)
    dev.write(2, 1, 0x7F)
    dev.write(0, 4, 0x12345678)
    assert seen == [1, 3, 0xFF, (0x12345678 << 1) | 1]
    assert exit_status(0) == 1 and exit_status(1) == 3


def test_reads_are_zero_and_do_not_exit():
    seen = []
    dev = DebugExit(on_exit=seen.append)
    assert [dev.read(off, size) for off, size in ((0, 1), (0, 2), (0, 4), (1, 1), (3, 1))] == [0] * 5
    assert seen == []
