"""`vmm.run` as a library: what it reports, and that a run repeats event for event."""
from __future__ import annotations

import pytest

import vmm
from guests import SAMPLES


def test_run_reports_console_status_and_exit_counts():
    result = vmm.run(SAMPLES / "irq" / "irq64.elf")
    assert result.passed, result.error
    assert result.console.endswith(b"PASS\n")
    assert result.exit_status == 1
    # irq64 provokes 1,015 exceptions and software interrupts and waits for 1,010 timer interrupts
    assert result.exits["exception"] >= 1000
    assert result.exits["interrupt"] >= 1000
    assert result.exits["pio"] > 0 and result.exits["mmio"] > 0 and result.exits["hlt"] > 0
    assert result.guest_time_ns > 1_000_000_000      # 500 ticks at 1 kHz plus 500 LAPIC ticks of 1 ms


def test_same_guest_same_run_event_for_event(tmp_path):
    traces = []
    for i in range(2):
        path = tmp_path / f"run{i}.jsonl"
        result = vmm.run(SAMPLES / "irq" / "irq32.elf", trace_path=path)
        assert result.passed, result.error
        traces.append(path.read_bytes())
    assert traces[0] == traces[1]
    assert traces[0].count(b'"event": "interrupt"') >= 1000


def test_guest_crash_is_reported_in_the_result():
    result = vmm.run(SAMPLES / "faulty" / "faulty_triple.elf")
    assert not result.passed
    assert "triple fault" in result.error
    assert result.console == b"misdeed 1\n"


def test_bad_image_raises_a_load_error(tmp_path):
    bogus = tmp_path / "bogus.elf"
    bogus.write_bytes(b"MZ" + bytes(100))
    with pytest.raises(vmm.LoadError, match="not an ELF file"):
        vmm.run(bogus)


def test_ram_size_reaches_the_guest():
    small = vmm.run(SAMPLES / "boot_state" / "boot_state32.elf", config=vmm.MachineConfig(ram_bytes=64 << 20))
    default = vmm.run(SAMPLES / "boot_state" / "boot_state32.elf")
    assert small.passed and default.passed
    # CMOS 0x34/0x35: RAM above 16 MiB in 64 KiB units (0x0300 for 64 MiB, 0x0700 for 128 MiB)
    assert b"above 16M 0300" in small.console and b"above 16M 0700" in default.console
