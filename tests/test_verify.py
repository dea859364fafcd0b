"""`pvtranslate --verify`: each sample's translation is equivalent to it, and a corrupted site is caught and named."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from capstone import CS_ARCH_X86, CS_MODE_32, CS_MODE_64, Cs

from guests import KERNELS, make_disk
from pvtranslate import abi
from pvtranslate.translate import TranslateOptions, translate
from pvtranslate.verify import MemoryRules, VerifyOptions, verify, verify_translation
from vmm.elf import parse_elf
from vmm.loader import Module
from vmm.machine import MachineConfig
from vmm.run import run
from vmm.trace import AddressMap, EventKind, Recorder

ROOT = Path(__file__).resolve().parents[1]
# the default run's samples (test_qemu_differential.py): all but the full-size workloads
SHORT = [k for k in KERNELS if k.role == "sample"
         and not (k.name.startswith("workload_") and not k.name.endswith("_short"))]
# a few seconds or more to verify (three traced runs, one of them pv): --runslow
SLOW = {"exitloop", "io32", "io64", "irq32", "irq64", "workload_medium_short", "workload_dense_short",
        "workload_pio_short", "workload_stringio_short"}
# irq32/irq64 take an interrupt a PIT read made deliverable: every mode must take it right after that
# `in` (vmm/ioboundary.py; native used to run on to the end of the engine's translation block).


def _params():
    for k in SHORT:
        yield pytest.param(k, id=k.name, marks=[pytest.mark.slow] if k.name in SLOW else [])


def _config(kernel, tmp_path: Path) -> MachineConfig:
    disk = make_disk(kernel, tmp_path, "verify")
    return MachineConfig(ram_bytes=(kernel.mem_mib << 20) if kernel.mem_mib else MachineConfig.ram_bytes,
                         disk_image=str(disk) if disk else None, cmdline=kernel.append,
                         modules=tuple(Module(m) for m in kernel.modules))


@pytest.mark.parametrize("kernel", list(_params()))
def test_translation_is_equivalent(kernel, tmp_path, monkeypatch):
    monkeypatch.chdir(kernel.sample_dir)                 # module paths are relative to the sample
    verdict = verify(kernel.elf_path, VerifyOptions(config=_config(kernel, tmp_path)))
    assert verdict.equivalent, verdict.format()
    assert [r.mode for r in verdict.runs] == ["native", "fullvirt", "pv"]
    assert verdict.run("pv").events == verdict.run("native").events > 0


def test_cli_verify(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "pvtranslate", str(ROOT / "samples/hello/hello_mb32.elf"),
                           "-o", str(tmp_path / "hello.pv.elf"), "--verify"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "EQUIVALENT: pv = native = fullvirt" in proc.stdout
    assert all(f"\n  {mode} " in proc.stdout for mode in ("native", "fullvirt", "pv"))     # the measurements
    refused = subprocess.run([sys.executable, "-m", "pvtranslate", str(ROOT / "samples/hello/hello_mb32.elf"),
                              "--plan", "--verify"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert refused.returncode == 2 and "nothing to --verify" in refused.stderr


# --------------------------------------------------------------------------- corrupted translations


def _file_offset(elf, va: int) -> int:
    seg = next(s for s in elf.segments if s.vaddr <= va < s.vaddr + s.file_size)
    return seg.file_off + va - seg.vaddr


def _decode(data: bytes, va: int, bits: int):
    md = Cs(CS_ARCH_X86, CS_MODE_64 if bits == 64 else CS_MODE_32)
    md.detail = True
    return list(md.disasm(data, va))


def _translated(sample: str, tmp_path: Path):
    guest = ROOT / sample
    translation = translate(guest, TranslateOptions(output=tmp_path / "good.pv.elf"))
    native = Recorder()
    run(guest, recorder=native)
    executed = {native.event(i).va for i in range(len(native))}        # original addresses of I/O and deliveries
    return guest, translation, executed


def _write_corrupted(translation, tmp_path: Path, file_offset: int, value: bytes) -> Path:
    data = bytearray(translation.output_path.read_bytes())
    assert data[file_offset:file_offset + len(value)] != value
    data[file_offset:file_offset + len(value)] = value
    bad = tmp_path / "bad.pv.elf"
    bad.write_bytes(data)
    return bad


def _assert_caught_at(verdict, site_va: int) -> None:
    assert not verdict.equivalent
    for d in verdict.divergences:                       # against native and against fullvirt alike
        assert d.aspect == "events" and d.site_va == site_va, verdict.format()
        assert f"patched site {site_va:#x}" in d.format()


def test_wrong_lowering_is_caught_at_its_site(tmp_path):
    """(a) The port an `out imm8, al` trampoline passes to its hypercall is changed."""
    guest, translation, executed = _translated("samples/irq_window/irq_window32.elf", tmp_path)
    planned = {s.va: s for s in translation.plan.sites}
    elf = parse_elf(translation.output_path.read_bytes())
    for record in translation.emitted.sites:
        site = planned[record.va]
        if not (record.trampoline_range and site.text.startswith("out 0x") and record.va in executed):
            continue
        port = int(site.text.split()[1].rstrip(","), 16)
        lowering_end = next(e.trampoline_va for e in record.pc_map[1:])
        start = record.pc_map[0].trampoline_va
        code = translation.output_path.read_bytes()[_file_offset(elf, start):_file_offset(elf, lowering_end)]
        load = next(i for i in _decode(code, start, site.bits)          # load_arg(port): push or mov of it
                    if i.mnemonic in ("mov", "push") and i.op_str.split()[-1] == f"{port:#x}")
        imm = _file_offset(elf, load.address) + load.imm_offset           # its low byte
        bad = _write_corrupted(translation, tmp_path, imm, bytes([port ^ 1]))
        break
    else:
        pytest.fail("no executed `out imm8, al` trampoline in the sample")
    _assert_caught_at(verify_translation(guest, bad, translation), record.va)


def test_wrong_displaced_instruction_is_caught_at_its_site(tmp_path):
    """(b) A `mov edx, imm32` displaced into a trampoline (and replayed there) gets another immediate."""
    guest, translation, executed = _translated("samples/hello/hello_mb32.elf", tmp_path)
    planned = {s.va: s for s in translation.plan.sites}
    elf = parse_elf(translation.output_path.read_bytes())
    original = parse_elf(guest.read_bytes())
    for record in translation.emitted.sites:
        entries = list(record.pc_map)
        for k, entry in enumerate(entries[:-1]):
            later_sites = [e.original_va for e in entries[k + 1:] if e.kind.name == "SITE"]
            if entry.kind.name != "REPLAY" or not any(v in executed for v in later_sites):
                continue
            raw = original.data[_file_offset(original, entry.original_va):][:5]
            insn = _decode(raw, entry.original_va, planned[record.va].bits)[0]
            if insn.mnemonic == "mov" and insn.op_str.startswith("edx, 0x") and insn.size == 5:
                imm = int(insn.op_str.split()[1], 16)
                bad = _write_corrupted(translation, tmp_path, _file_offset(elf, entry.trampoline_va) + 1,
                                       (imm + 1).to_bytes(4, "little"))
                _assert_caught_at(verify_translation(guest, bad, translation), record.va)
                return
    pytest.fail("no executed trampoline replays a `mov edx, imm32` before a site")


# --------------------------------------------------------------------------- the rules, in isolation


def test_memory_rules_from_the_two_images(tmp_path):
    guest = ROOT / "samples/hello/hello_pvh64.elf"
    translation = translate(guest, TranslateOptions(output=tmp_path / "h.pv.elf"))
    rules = MemoryRules.of(parse_elf(guest.read_bytes()), parse_elf(translation.output_path.read_bytes()))
    shared = translation.emitted.shared_page_va            # identity-mapped sample: physical = virtual
    assert any(lo <= shared < hi for lo, hi in rules.excluded)          # rule 1: the translator's pages
    patched = {pa for r in translation.emitted.sites if r.patch_range for pa in range(*r.patch_range)}
    assert set(rules.patched) <= patched and rules.patched       # rule 2: exactly bytes the patches changed
    stack = rules.object_at(0x104ff8)                           # rule 4: a label's extent runs to the next symbol
    assert stack is not None and stack[2] == "stack_bottom"


def test_address_map_back_through_the_pc_map(tmp_path):
    translation = translate(ROOT / "samples/hello/hello_pvh64.elf", TranslateOptions(output=tmp_path / "h.pv.elf"))
    elf = parse_elf(translation.output_path.read_bytes())
    desc = abi.unpack_descriptor(elf.note(abi.NOTE_NAME.decode(), abi.NoteType.ABI).desc)
    at = _file_offset(elf, desc.site_table_va)
    table = abi.parse_site_table(elf.data[at:at + abi.site_table_size(elf.data[at:at + abi.SITE_TABLE_HEADER.size])])
    amap = AddressMap(table, (translation.emitted.shared_page_va, 1 << 48))
    record = next(r for r in translation.emitted.sites if len(r.pc_map) >= 3)
    first, second = record.pc_map[0], record.pc_map[1]
    inside = first.trampoline_va + 1
    assert amap.in_progress(inside) == first.original_va == amap.resume_at(first.trampoline_va)
    assert amap.resume_at(inside) == second.original_va                 # stopped inside: resumes after it
    assert amap.in_progress(record.va) == amap.resume_at(record.va) == record.va    # original code: itself
    for point in (h for r in translation.emitted.sites for h in r.hypercalls):
        pushed = () if getattr(point, "in_save_area", False) or getattr(point, "access", False) else point.saved
        assert amap.stack_pointer(point.va + 2, 0x1000, 8) == 0x1000 + 8 * len(pushed)   # the pushes popped


def test_recorder_keeps_every_event_and_memory():
    result = run(ROOT / "samples/hello/hello_pvh64.elf")
    recorder = Recorder()
    traced = run(ROOT / "samples/hello/hello_pvh64.elf", recorder=recorder)
    assert traced.console == result.console and len(recorder) == result.exits["pio"]
    assert {recorder.event(i).kind for i in range(len(recorder))} == {EventKind.PIO_IN, EventKind.PIO_OUT}
    assert recorder.memory is not None and recorder.memory.pages


# --------------------------------------------------------------------------- the measurement (tools/measure.py)


def test_measure_smoke(tmp_path):
    """The measurement's code paths on a tiny guest posing as a workload: counts, table, JSON, plot."""
    from pvtranslate.measure import MeasureOptions, format_table, measure, plot, save_json
    (tmp_path / "workload_hello_short.elf").write_bytes((ROOT / "samples/hello/hello_pvh64.elf").read_bytes())
    options = MeasureOptions(workloads=("hello",), short=True, runs=2, samples=tmp_path)
    (result,) = measure(options)
    assert set(result.modes) == {"native", "fullvirt", "pv"}
    assert all(m.status == 1 and len(m.wall_runs) == 2 and m.exits > 0 for m in result.modes.values())
    assert result.modes["pv"].counted_instructions > result.original_instructions > 0   # trampolines add some
    assert result.modes["fullvirt"].exits_by_class["sensitive PORT_IO_HALT"] == result.modes["native"].exits
    table = format_table((result,))
    assert table.count("\n") == 2 and "| hello |" in table
    save_json((result,), options, tmp_path / "m.json")
    plot((result,), tmp_path / "m.png")
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
