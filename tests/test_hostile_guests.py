"""Hostile guests (tests/hostile_guests.py): the VMM stays up and says what happened, in every mode.

Wild hypercalls (every number, garbage registers, at a recorded ``int 0x82``), a guest's own ``int 0x82``
and ``int3`` (its IDT, not a hypercall), guests that overwrite their trampolines, site table, shared
page or a patched site, interrupt storms, runaway loops, accesses outside RAM (and at the host address
of guest RAM), and two machines in one process that must not see each other's memory. A run must end
in the guest's own status, a ``GuestError`` (status 4) or a limit (124) with a message; never a Python
exception out of ``vmm.run``, an internal error (status 70) or a run that outlives its limits.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hostile_guests as H
from guests import load_tool
from pvtranslate import abi
from pvtranslate.translate import TranslateOptions, translate
from vmm.elf import parse_elf
from vmm.errors import LimitExceeded, OutsideRam
from vmm.machine import Console, Machine, MachineConfig
from vmm.run import RunResult, run
from vmm.vcpu import Limits

ROOT = Path(__file__).resolve().parent.parent
HANG_S = 30                                   # an in-process run still going after this is a hang



em = load_tool("elf_mutants")                  # for its per-run alarm, time_limit

def _run(path: Path, limits: Limits, mode: str | None = None) -> tuple[RunResult, float]:
    started = time.perf_counter()
    with em.time_limit(HANG_S):
        result = run(path, limits=limits, mode=mode)
    return result, time.perf_counter() - started


def _check_clean(result: RunResult) -> None:
    """The run ended in the guest's own status, or a guest error or limit with a message."""
    if result.error is None:
        assert result.exit_status % 2 == 1 or result.exit_status == 0, result
    else:
        assert result.exit_status in (4, 124), result.error
        assert "internal error" not in result.error, result.error


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """(bits, name, body) -> (original path, translated path), built once per module."""
    cache: dict = {}
    directory = tmp_path_factory.mktemp("hostile")

    def get(bits: int, name: str, body: list[str], params: dict[int, int] | None = None) -> tuple[Path, Path]:
        key = (bits, name, tuple(sorted((params or {}).items())))
        if key not in cache:
            path = directory / f"{name}-{bits}-{len(cache)}.elf"
            path.write_bytes(H.with_params(H.build(bits, body).elf, params or {}))
            translated = path.with_suffix(".pv.elf")
            translate(path, TranslateOptions(output=translated))
            cache[key] = (path, translated)
        return cache[key]
    return get


def site_table(elf: bytes) -> tuple[abi.AbiDescriptor, abi.SiteTable, int]:
    """The PV descriptor, the parsed site table and its size, read from a translated ELF's bytes."""
    image = parse_elf(elf)
    desc = abi.unpack_descriptor(image.note("PVTR", abi.NoteType.ABI).desc)
    seg = next(s for s in image.segments if s.vaddr <= desc.site_table_va < s.vaddr + s.file_size)
    raw = elf[seg.file_off + desc.site_table_va - seg.vaddr:]
    return desc, abi.parse_site_table(raw), abi.site_table_size(raw[:abi.SITE_TABLE_HEADER.size])


# --------------------------------------------------------------------------- hypercalls

NUMBERS = list(range(0, max(abi.Hypercall) + 2)) + [0x7FFFFFFF, 0xDEADBEEF, 0xFFFFFFFF]
GARBAGE = (0, 1, 2, 4, 8, 0x80, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xDEADBEEF, 0xFFFFFFFF, 0x200000, 0x8000000,
           0xFFFFFFFFFFFFFFFF, 0x8000000000000000)


def _hypercall_case(bits: int, number: int, seed: int, build, tmp_path) -> RunResult:
    _orig, translated = build(bits, "hypercall", H.body_hypercall(bits))
    elf = translated.read_bytes()
    _desc, table, _size = site_table(elf)
    rng = random.Random(f"{bits}/{number}/{seed}")
    points = sorted(va for va, site in table.hypercalls.items() if va != site)   # in trampolines, not trap sites
    params = {slot: rng.choice(GARBAGE + (rng.getrandbits(64),)) for slot in range(14)}
    params[0] = number
    params[14] = H.STACK_TOP - 0x100 if seed % 4 else rng.choice(GARBAGE)     # a wild stack one time in four
    params[15] = points[seed % len(points)]
    guest = tmp_path / "guest.pv.elf"
    guest.write_bytes(H.with_params(elf, params))
    result, seconds = _run(guest, Limits(max_instructions=5_000, timeout_s=1))
    assert seconds < 1 + 2, f"the run outlived its limits: {seconds:.1f} s"
    return result


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("number", NUMBERS, ids=lambda n: f"hc{n:#x}")
def test_wild_hypercall(bits, number, build, tmp_path):
    """Garbage registers and stack at a recorded `int 0x82`, for every hypercall number and a few wild ones."""
    result = _hypercall_case(bits, number, number, build, tmp_path)
    _check_clean(result)
    if number not in abi.Hypercall._value2member_map_:
        assert result.exit_status == 4 and f"unknown hypercall number {number}" in result.error


# registers of body_hypercall's parameter slots; the hypercall's first two arguments in each convention
SLOTS = {name: slot for slot, name in enumerate(["ax", "cx", "dx", "bx", "bp", "si", "di"]
                                                 + [f"r{n}" for n in range(8, 15)])}
FIRST_ARGS = {64: ("di", "si"), 32: ("bx", "cx")}


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("number, index", [(abi.Hypercall.WRITE_CR, 5), (abi.Hypercall.WRITE_CR, 9),
                                           (abi.Hypercall.WRITE_CR, 1 << 20), (abi.Hypercall.WRITE_DR, 8),
                                           (abi.Hypercall.WRITE_DR, 0xFFFF), (abi.Hypercall.LOAD_SEGMENT, 1),
                                           (abi.Hypercall.LOAD_SEGMENT, 6), (abi.Hypercall.LOAD_SEGMENT, 0x80)],
                         ids=lambda v: f"{v.name}" if isinstance(v, abi.Hypercall) else f"{v:#x}")
def test_register_index_out_of_range_is_ud(bits, number, index, build, tmp_path):
    """A control, debug or segment register number no instruction encodes (or mov to cs): #UD into the
    guest at the site, as the instruction would raise, never an exception out of the handler."""
    _orig, translated = build(bits, "hypercall", H.body_hypercall(bits))
    elf = translated.read_bytes()
    _desc, table, _size = site_table(elf)
    point = min(va for va, site in table.hypercalls.items() if va != site)
    first, second = FIRST_ARGS[bits]
    params = {slot: 0 for slot in range(14)} | {0: int(number), SLOTS[first]: index, SLOTS[second]: 0x10,
                                                14: H.STACK_TOP - 0x100, 15: point}
    guest = tmp_path / "guest.pv.elf"
    guest.write_bytes(H.with_params(elf, params))
    result, _seconds = _run(guest, Limits(max_instructions=50_000, timeout_s=5))
    assert (result.exit_status, result.console, result.error) == (2 * 6 + 1, b"hostile guest\nvector 06\n", None)


@pytest.mark.slow
@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("seed", range(1, 4))
@pytest.mark.parametrize("number", [int(h) for h in abi.Hypercall], ids=lambda n: f"hc{n:#x}")
def test_wild_hypercall_more_registers(bits, number, seed, build, tmp_path):
    _check_clean(_hypercall_case(bits, number, seed * 7919 + number, build, tmp_path))


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("vector, status", [(0x82, 2 * 0x82 + 1), (3, 7)], ids=["int-0x82", "int3"])
def test_own_software_interrupt_goes_to_the_guest_idt(bits, vector, status, build):
    """`int 0x82` (or `int3`) the translator did not record is the guest's own: its IDT handler runs, in every mode."""
    orig, translated = build(bits, f"int{vector}", H.body_own_int(vector))
    expected = b"hostile guest\nvector %02X\n" % vector
    for path, mode in ((orig, "native"), (orig, "fullvirt"), (translated, "pv")):
        result, _s = _run(path, Limits(timeout_s=5), mode)
        assert (result.exit_status, result.console, result.error) == (status, expected, None), (mode, result)
        assert not result.hypercalls.get("TRAP", 0) or mode == "pv"


# --------------------------------------------------------------------------- overwriting the translator's pages

def _patched_range(original: bytes, translated: bytes, at_or_after: int) -> tuple[int, bytes]:
    """(va, original bytes) of 16 bytes from the first patched byte at or after ``at_or_after`` in .text
    (bytes the patch left alone are put back as they are)."""
    a, b = parse_elf(original), parse_elf(translated)
    seg_a = next(s for s in a.segments if s.flags & 1)
    seg_b = next(s for s in b.segments if s.vaddr == seg_a.vaddr)
    text_a = original[seg_a.file_off:seg_a.file_off + seg_a.file_size]
    text_b = translated[seg_b.file_off:seg_b.file_off + seg_b.file_size]
    start = next(i for i in range(at_or_after - seg_a.vaddr, len(text_a)) if text_a[i] != text_b[i])
    return seg_a.vaddr + start, text_a[start:start + 16]


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("target", ["trampolines", "site-table", "shared-page", "patched-site"])
def test_guest_overwrites_translator_pages(bits, target, build, tmp_path):
    orig, translated = build(bits, "overwrite", H.body_overwrite())
    elf = translated.read_bytes()
    desc, table, table_size = site_table(elf)
    source = 0
    if target == "trampolines":                  # everything between the shared page and the site table
        start, length, fill = desc.shared_page_va + abi.SHARED_PAGE_SIZE, 0, 0xCC
        length = desc.site_table_va - start
    elif target == "site-table":
        start, length, fill = desc.site_table_va, table_size, 0xFF
    elif target == "shared-page":
        start, length, fill = desc.shared_page_va, abi.SHARED_PAGE_SIZE, 0xFF
    else:                                        # the original instruction put back over puts' patch
        start, original = _patched_range(orig.read_bytes(), elf, H.build(bits, H.body_overwrite()).labels["puts"])
        length, fill, source = len(original), 0, H.PARAMS + 0x40
    params = {0: start, 1: length, 2: source, 3: fill}
    guest = tmp_path / "guest.pv.elf"
    data = H.with_params(elf, params)
    if source:
        off = H.params_offset(data) + 0x40
        data = data[:off] + original + data[off + len(original):]
    guest.write_bytes(data)
    result, seconds = _run(guest, Limits(max_instructions=50_000, timeout_s=5))
    _check_clean(result)
    assert result.mode == "pv"
    if target in ("site-table", "shared-page"):  # the VMM keeps its own copy of the table; the page is rewritten
        assert (result.exit_status, result.console) == (1, b"hostile guest\nafter\n"), result
    elif target == "patched-site":
        # the restored `out` either runs natively (an escape, reported) or, where a patch began before it,
        # is sent back into its trampoline by pv mode's resume hook; the guest prints the same either way
        assert (result.exit_status, result.console) == (1, b"hostile guest\nafter\n"), result
        assert all(start <= e.va < start + length for e in result.escapes), result.escapes
    else:                                        # the guest's own #BP handler prints through the trashed code
        assert result.console.startswith(b"hostile guest\n") and b"after" not in result.console


# --------------------------------------------------------------------------- interrupt storms and runaways

STORMS = {"pit": {0: 2, 1: 0, 2: 3000}, "lapic": {0: 0, 1: 1, 2: 3000}, "both": {0: 1, 1: 1, 2: 3000}}


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("mode", ["native", "pv"])
@pytest.mark.parametrize("storm", sorted(STORMS))
def test_interrupt_storm(bits, mode, storm, build):
    """The PIT at 600 kHz and/or the local APIC timer at its fastest, IF on: the guest may never get
    through its loop (as on hardware), but the VMM delivers, stays responsive and stops at its limit."""
    orig, translated = build(bits, f"storm-{storm}", H.body_storm(), STORMS[storm])
    result, seconds = _run(translated if mode == "pv" else orig, Limits(timeout_s=0.25), mode)
    _check_clean(result)
    assert seconds < 0.25 + 1, seconds
    assert result.exits.get("interrupt", 0) >= 10, result
    if result.error is not None:
        assert "time limit of 0.25 s" in result.error


@pytest.mark.parametrize("bits", [32, 64])
def test_interrupts_do_not_depend_on_the_mode(bits, build):
    """A moderate timer (PIT divisor 0x40, ~18.6 kHz) over 300 port writes: the same count natively and in pv."""
    orig, translated = build(bits, "storm-moderate", H.body_storm(), {0: 0x40, 1: 0, 2: 300})
    native, _s = _run(orig, Limits(timeout_s=10), "native")
    pv, _s = _run(translated, Limits(timeout_s=10), "pv")
    assert native.exit_status == 1 and native.console.startswith(b"hostile guest\nirqs "), native
    assert (pv.exit_status, pv.console) == (native.exit_status, native.console)


RUNAWAYS = {"spin": Limits(max_instructions=5_000, timeout_s=5), "io": Limits(timeout_s=0.2),
            "hlt-storm": Limits(timeout_s=0.2), "rep-outs": Limits(timeout_s=0.2)}
REP_COUNT = 400_000        # rep outsb elements: more than the limit lets run, in every mode (pv: in rounds)


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("mode", ["native", "fullvirt", "pv"])
@pytest.mark.parametrize("kind", sorted(RUNAWAYS))
def test_runaway_guest_meets_its_limit(bits, mode, kind, build):
    limits = RUNAWAYS[kind]
    orig, translated = build(bits, f"runaway-{kind}", H.body_runaway(kind), {0: REP_COUNT})
    result, seconds = _run(translated if mode == "pv" else orig, limits, mode)
    _check_clean(result)
    assert result.exit_status == 124 and "limit" in result.error, result
    if limits.timeout_s and seconds > limits.timeout_s + 0.3:
        pytest.fail(f"{kind} in {mode}: {seconds:.1f} s against a {limits.timeout_s} s limit")


# --------------------------------------------------------------------------- memory outside RAM, host memory

@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("write", [False, True], ids=["read", "write"])
@pytest.mark.parametrize("mode", ["native", "pv"])
def test_access_outside_ram(bits, write, mode, build):
    orig, translated = build(bits, f"outside-{write}", H.body_access(write), {0: 0x90000000})
    result, _s = _run(translated if mode == "pv" else orig, Limits(timeout_s=5), mode)
    assert result.exit_status == 4 and "outside RAM" in result.error, result
    assert f"{'write' if write else 'read'} of 4 byte(s) at physical 0x90000000" in result.error


@pytest.mark.parametrize("write", [False, True], ids=["read", "write"])
def test_unclaimed_device_window_is_not_fatal(write, build):
    orig, _t = build(32, f"window-{write}", H.body_access(write), {0: 0xFE100000})
    result, _s = _run(orig, Limits(timeout_s=5), "native")
    assert (result.exit_status, result.console, result.error) == (1, b"hostile guest\nafter\n", None)


@pytest.mark.parametrize("write", [False, True], ids=["read", "write"])
@pytest.mark.parametrize("target", ["host-address", "64-GiB"])
def test_guest_cannot_reach_host_memory(write, target, build):
    """A 64-bit guest maps a 2 MiB page at a physical address and touches it. At its RAM's host address
    (above qemu64's 40 physical address bits) the page-table entry has reserved bits set: #PF, delivered
    to the guest (vector 0E). At 64 GiB: an access outside RAM, reported. Guest RAM is untouched."""
    orig, _t = build(64, f"host-{write}", H.body_access64_mapped(write))
    machine = Machine(MachineConfig(), Console())
    try:
        machine.boot(orig, "native")
        phys = machine.ram.host_address if target == "host-address" else 64 << 30
        machine.ram.write(H.PARAMS, (phys & 0x1FFFFF).to_bytes(8, "little") + (phys & ~0x1FFFFF).to_bytes(8, "little"))
        before = machine.ram.read(0, 0x1000)
        with em.time_limit(HANG_S):
            if target == "host-address":
                machine.run(Limits(timeout_s=5))
                assert (machine.vcpu.exit_status, bytes(machine.console.data)) == (2 * 0xE + 1,
                                                                                   b"hostile guest\nvector 0E\n")
            else:
                with pytest.raises(OutsideRam, match=f"{'write' if write else 'read'} of 4 byte.s. at physical "
                                                     f"{phys:#x}, outside RAM"):
                    machine.run(Limits(timeout_s=5))
        assert machine.ram.read(0, 0x1000) == before
    finally:
        machine.close()


# --------------------------------------------------------------------------- two machines in one process

@pytest.mark.parametrize("bits", [32, 64])
def test_two_machines_cannot_see_each_other(bits, build):
    """Two VMs alive at once, run alternately: each finds the scratch page empty, fills it with its own
    pattern and watches it; neither sees the other's, and host-side each RAM holds only its own."""
    a_path, _ = build(bits, "fill-a", H.body_fill_and_watch(0xAAAA5555))
    b_path, _ = build(bits, "fill-b", H.body_fill_and_watch(0x1234ABCD))
    machines = {"a": Machine(MachineConfig(), Console()), "b": Machine(MachineConfig(), Console())}
    try:
        for name, path in (("a", a_path), ("b", b_path)):
            machines[name].boot(path, "native")
        for _round in range(3):
            for name in ("a", "b"):
                with em.time_limit(HANG_S), pytest.raises(LimitExceeded):
                    machines[name].run(Limits(timeout_s=0.05))
        for name, value in (("a", 0xAAAA5555), ("b", 0x1234ABCD)):
            m = machines[name]
            assert bytes(m.console.data) == b"hostile guest\nclean\n", (name, bytes(m.console.data))
            assert m.ram.read(H.SCRATCH, 4096) == value.to_bytes(4, "little") * 1024
        assert machines["a"].ram.host_address != machines["b"].ram.host_address
    finally:
        for m in machines.values():
            m.close()


# --------------------------------------------------------------------------- the command line and the aftermath

def test_vmm_command_reports_hostile_guests(build, tmp_path):
    """Through `vmm run` in a subprocess: a message, the right status, never a traceback."""
    _o, translated = build(32, "hypercall", H.body_hypercall(32))
    elf = translated.read_bytes()
    _desc, table, _size = site_table(elf)
    point = min(va for va, site in table.hypercalls.items() if va != site)
    cases = [({0: 0xDEADBEEF, 14: H.STACK_TOP - 0x100, 15: point}, 4, "unknown hypercall number"),
             ({0: int(abi.Hypercall.LOAD_GDT), 14: H.STACK_TOP - 0x100, 15: point,
               2: 0x90000000, 3: 0x90000000}, 4, "outside RAM")]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for params, status, message in cases:
        guest = tmp_path / "guest.pv.elf"
        guest.write_bytes(H.with_params(elf, params))
        proc = subprocess.run([sys.executable, "-m", "vmm", "run", str(guest), "--timeout", "5"], capture_output=True,
                              text=True, env=env, timeout=60)
        assert proc.returncode == status and message in proc.stderr, proc.stderr
        assert proc.stderr.startswith("vmm: error: ") and "Traceback" not in proc.stderr


def test_vmm_stays_up_after_hostile_guests():
    """After every crash above, in the same process, a well-behaved guest still runs to its end."""
    result = run(ROOT / "samples" / "hello" / "hello_pvh64.elf", limits=Limits(timeout_s=10))
    assert result.passed and result.console.endswith(b"PASS\n")
