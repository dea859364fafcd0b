"""The VMM's modes: fullvirt runs every sample as native does, trap mode shows Popek-Goldberg, pv reports escapes."""
from __future__ import annotations

from pathlib import Path

import pytest
from unicorn import UC_HOOK_CODE

import vmm
from guests import KERNELS, make_disk
from pvtranslate.translate import TranslateOptions, translate
from vmm.cli import main as vmm_main
from vmm.deprivileged import HOST
from vmm.elf import parse_elf
from vmm.escapes import Escape
from vmm.loader import Module
from vmm.machine import Console, Machine, MachineConfig
from vmm.rawhooks import CODE_CFUNC, add_raw_hook

ROOT = Path(__file__).resolve().parents[1]
PF_X = 1
# the default run's samples (test_qemu_differential.py): all but the full-size workloads
SHORT = [k for k in KERNELS if k.role == "sample"
         and not (k.name.startswith("workload_") and not k.name.endswith("_short"))]
PORT_NAMES = ("in8.", "in16.", "in32.", "out8.", "out16.", "out32.")


def _config(kernel, tmp_path: Path, tag: str) -> MachineConfig:
    disk = make_disk(kernel, tmp_path, tag)
    return MachineConfig(ram_bytes=(kernel.mem_mib << 20) if kernel.mem_mib else MachineConfig.ram_bytes,
                         disk_image=str(disk) if disk else None, cmdline=kernel.append,
                         modules=tuple(Module(m) for m in kernel.modules))


@pytest.fixture(scope="module")
def fullvirt_runs(tmp_path_factory):
    """Each short sample under fullvirt, run once for all the tests that look at it."""
    runs = {}

    def get(kernel, monkeypatch):
        if kernel.name not in runs:
            monkeypatch.chdir(kernel.sample_dir)           # module paths are relative to the sample
            config = _config(kernel, tmp_path_factory.mktemp(kernel.name), "fullvirt")
            runs[kernel.name] = vmm.run(kernel.elf_path, config=config, mode="fullvirt")
        return runs[kernel.name]
    return get


@pytest.mark.parametrize("kernel", SHORT, ids=lambda k: k.name)
def test_fullvirt_runs_as_native(kernel, tmp_path, monkeypatch, fullvirt_runs):
    full = fullvirt_runs(kernel, monkeypatch)
    monkeypatch.chdir(kernel.sample_dir)
    native = vmm.run(kernel.elf_path, config=_config(kernel, tmp_path, "native"))
    assert native.mode == "native" and full.mode == "fullvirt"
    assert native.error is None and full.error is None, full.error
    assert full.console == native.console
    assert full.exit_status == native.exit_status
    assert full.exits == native.exits                     # same port, MMIO, hlt, interrupt, exception counts
    assert not native.sensitive_exits and full.sensitive_exits and not full.deprivileged
    by_name = full.sensitive_exits_by_name
    # every port access native made is an in/out or a string element: one exit each
    port_exits = sum(n for name, n in by_name.items() if name.startswith(PORT_NAMES))
    port_exits += full.sensitive_exits.get("STRING_IO", 0)
    if native.exits.get("exception", 0):
        assert port_exits >= native.exits.get("pio", 0)   # denied (#GP) accesses are exits, not port accesses
    else:
        assert port_exits == native.exits.get("pio", 0)
    assert by_name.get("cpuid", 0) == native.exits.get("cpuid", 0)
    assert by_name.get("hlt", 0) >= native.exits.get("hlt", 0)


def _byte_sites(elf: Path, opcode: int) -> list[int]:
    """Every address in the executable segments holding `opcode`: a one-byte instruction starts at some of
    them (a code hook fires only where an instruction starts, so the others never count)."""
    image = parse_elf(elf.read_bytes(), str(elf))
    found = []
    for seg in image.segments:
        if seg.flags & PF_X:
            code = image.data[seg.file_off:seg.file_off + seg.file_size]
            found += [seg.vaddr + i for i, byte in enumerate(code) if byte == opcode]
    return found


def test_fullvirt_exits_match_cli_sti_executed_natively(monkeypatch, fullvirt_runs):
    """workload_cli_short: the cli and sti exits are exactly the cli and sti a native run executes."""
    kernel = next(k for k in SHORT if k.name == "workload_cli_short")
    elf = kernel.elf_path
    executed = {"cli": 0, "sti": 0}
    sites = {va: m for m, op in (("cli", 0xFA), ("sti", 0xFB)) for va in _byte_sites(elf, op)}
    machine = Machine(MachineConfig(), Console())
    try:
        machine.boot(elf)

        def count(_handle, address, _size, _ud):
            executed[sites[address]] += 1
        counter = CODE_CFUNC(count)
        for va in sites:
            add_raw_hook(machine.uc, UC_HOOK_CODE, counter, va, va)
        machine.run()
        assert machine.vcpu.exit_status == 1
    finally:
        machine.close()
    full = fullvirt_runs(kernel, monkeypatch)
    assert full.passed
    assert executed["cli"] >= 2_400_000 and executed["sti"] >= 1_200_000     # what the guest reports it ran
    assert full.sensitive_exits_by_name["cli"] == executed["cli"]
    assert full.sensitive_exits_by_name["sti"] == executed["sti"]
    assert full.sensitive_exits["INTERRUPT_FLAG"] == executed["cli"] + executed["sti"]


@pytest.mark.parametrize("name", ["zoo32", "zoo64"])
def test_trap_mode_diverges_where_popek_goldberg_says(name):
    elf = ROOT / f"samples/zoo/{name}.elf"
    native = vmm.run(elf)
    trap = vmm.run(elf, mode="trap")
    assert native.passed and trap.mode == "trap"
    assert trap.console != native.console and trap.exit_status != native.exit_status
    # the sensitive-unprivileged instructions ran without an exit, deprivileged
    assert {"FLAGS", "PRIVILEGED_READ", "UNPRIVILEGED_SENSITIVE_OTHER"} <= trap.deprivileged.keys()
    assert "FLAGS" not in trap.sensitive_exits
    assert trap.sensitive_exits["INTERRUPT_FLAG"] > 0 and trap.sensitive_exits["PORT_IO_HALT"] > 0
    # pushf shows the real IF (a hypervisor keeps it set); cli/sti still trap, so IF itself follows them
    assert b"cli: IF=0; sti: IF=1" in native.console and b"cli: IF=1; sti: IF=1" in trap.console
    # sgdt reveals the hypervisor's own table
    base = HOST.gdt_base_64 if name == "zoo64" else HOST.gdt_base_32
    assert f"limit {HOST.gdt_limit:04x} base {base:0{16 if name == 'zoo64' else 8}x}".encode() in trap.console


def _translated(sample: str, tmp_path: Path):
    out = tmp_path / (Path(sample).stem + ".pv.elf")
    return translate(ROOT / sample, TranslateOptions(output=out)), out


def test_translated_guest_has_no_escapes(tmp_path):
    _tr, out = _translated("samples/irq_window/irq_window32.elf", tmp_path)
    result = vmm.run(out)
    assert result.mode == "pv" and result.passed
    assert result.escapes == ()


def _file_offset(image, va: int) -> int:
    seg = next(s for s in image.segments if s.vaddr <= va < s.vaddr + s.file_size)
    return seg.file_off + va - seg.vaddr


def test_an_unpatched_site_is_reported_as_an_escape(tmp_path):
    """Put back the native cli over one site's patch: the run goes on, and reports that one escape."""
    original = ROOT / "samples/hello/hello_pvh64.elf"
    tr, out = _translated("samples/hello/hello_pvh64.elf", tmp_path)
    site = next(s for s in tr.emitted.sites if s.raw == b"\xfa" and s.patch_range)
    start, end = site.patch_range
    source, data = parse_elf(original.read_bytes()), bytearray(out.read_bytes())
    patched = parse_elf(bytes(data))
    at = _file_offset(patched, start)
    assert data[at:at + end - start] == site.patch_bytes
    data[at:at + end - start] = source.data[_file_offset(source, start):_file_offset(source, end)]
    broken = tmp_path / "hello_pvh64.broken.pv.elf"
    broken.write_bytes(bytes(data))
    good, bad = vmm.run(out), vmm.run(broken)
    assert good.escapes == ()
    assert bad.mode == "pv" and bad.console == good.console and bad.exit_status == good.exit_status
    assert bad.escapes == (Escape(start, b"\xfa", "cli", "INTERRUPT_FLAG"),)


def test_mode_must_fit_the_guest(tmp_path, capsys):
    plain = ROOT / "samples/hello/hello_pvh64.elf"
    _tr, out = _translated("samples/hello/hello_pvh64.elf", tmp_path)
    with pytest.raises(vmm.ConfigError, match="no PV note"):
        vmm.run(plain, mode="pv")
    for mode in ("native", "fullvirt", "trap"):
        with pytest.raises(vmm.ConfigError, match="runs only in pv mode"):
            vmm.run(out, mode=mode)
    assert vmm_main(["run", "--mode", "pv", str(plain)]) == 2
    assert "no PV note" in capsys.readouterr().err
    assert vmm_main(["run", "--mode", "trap", str(out)]) == 2
    err = capsys.readouterr().err
    assert "runs only in pv mode" in err and "Traceback" not in err


def test_stats_print_sensitive_exits(capsys):
    status = vmm_main(["run", "--mode", "fullvirt", "--stats", str(ROOT / "samples/hello/hello_mb32.elf")])
    err = capsys.readouterr().err
    assert status == 1
    assert "fullvirt mode; sensitive exits:" in err and "PORT_IO_HALT" in err and "out8.dx" in err
