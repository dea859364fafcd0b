"""Generated guests, one per catalog entry and mode: the translation leaves the guest-visible state of the original.

Each guest (``pvtranslate.guestgen.entry_guest``) runs every operand form of one entry in four
placements (straight line; a jump target followed by another; the last instruction before a
function's ``ret``; the last instruction of a function symbol) and prints a digest per case: flags
as ``pushf`` shows them (the virtual IF in pv), stack pointer, a hash of all GPRs and selectors, a
checksum of the data buffer, GDT and live stack, and, for a fault, vector, error code and address.
Native and pv consoles must be byte-identical, the pv run must report no escapes, and every
sensitive instruction the generator placed must be a site of the translator's plan.

Reproduce one case by hand: ``python -m pvtranslate.guestgen ENTRY BITS --verbose -o g.elf``, then
``vmm run g.elf``, ``pvtranslate g.elf -o g.pv.elf``, ``vmm run g.pv.elf`` and compare.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from guests import QEMU, QEMU_ARGS
from pvtranslate.catalog import ENTRIES
from pvtranslate.guestgen import (PASS_MARKER, CaseSpec, Context, Guest, build_guest, entry_guest, parse_console,
                                  variants_for)
from pvtranslate.translate import TranslateOptions, Translation, translate
from vmm.run import RunResult, run

# Known differences between a translated guest and its original, by (entry, bits): each reason names
# the forms and placements that differ and why. strict: the test fails once one is fixed; drop it then.
# (Placements: plain, branch = jump target followed by one, func-ret = last before ret, func-end = last
# of a function symbol. The TRAP ones are whatever the planner could not give a trampoline.)
XFAIL: dict[tuple[str, int], str] = {}


def _params():
    for entry in ENTRIES:
        for bits in (32, 64):
            if not variants_for(entry.name, bits):
                continue   # the entry does not exist in this mode (pushfq in 32-bit code, push es in 64-bit, ...)
            reason = XFAIL.get((entry.name, bits))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            yield pytest.param(entry.name, bits, id=f"{entry.name}-{bits}", marks=marks)


def assert_ran_as_generated(guest: Guest, result: RunResult) -> None:
    """The original runs to its pass marker, every case printed once, and faults only where expected."""
    assert result.error is None and result.exit_status == 1, f"native run failed: {result.error}\n{result.console!r}"
    assert result.console.endswith(PASS_MARKER), result.console[-300:]
    lines = parse_console(result.console)
    for case in guest.cases:
        line = lines.get(case.index)
        assert line is not None, f"no output for {case.describe()}"
        vector = int(line[2:4], 16) if line.startswith(b" !") else None
        assert vector == case.expect, f"{case.describe()}: native {line!r}"


def case_differences(guest: Guest, native: RunResult, pv: RunResult) -> str:
    """The cases whose lines differ, each with both lines: what an assertion message should show."""
    a, b = parse_console(native.console), parse_console(pv.console)
    out = [f"{c.describe()}\n    native: {a.get(c.index)!r}\n    pv:     {b.get(c.index)!r}"
           for c in guest.cases if a.get(c.index) != b.get(c.index)]
    head = f"pv error: {pv.error}; exit status native {native.exit_status}, pv {pv.exit_status}\n"
    return head + "\n".join(out[:8]) + (f"\n... and {len(out) - 8} more" if len(out) > 8 else "")


def translate_and_run(guest: Guest, path: Path) -> tuple[RunResult, Translation, RunResult]:
    """Write the guest, run it, translate it, run the translation."""
    guest.write(path)
    native = run(path)
    translation = translate(path, TranslateOptions(output=path.with_suffix(".pv.elf")))
    return native, translation, run(path.with_suffix(".pv.elf"))


@pytest.mark.parametrize(("entry", "bits"), list(_params()))
def test_translation_keeps_guest_visible_state(entry: str, bits: int, tmp_path: Path) -> None:
    guest = entry_guest(entry, bits)
    native, translation, pv = translate_and_run(guest, tmp_path / f"{entry}-{bits}.elf")
    assert_ran_as_generated(guest, native)
    # every sensitive instruction placed (the cases' and the scaffolding's) is a site, and nothing else is
    planned = {s.va: s.entry_name for s in translation.plan.sites}
    assert planned == dict(guest.sites), "the plan's sites are not the instructions the generator placed"
    assert pv.mode == "pv"
    assert pv.escapes == (), "sensitive instructions ran natively:\n" + "\n".join(e.describe() for e in pv.escapes)
    assert (pv.console, pv.exit_status) == (native.console, native.exit_status), case_differences(guest, native, pv)


def test_sensitive_instruction_before_the_guest_has_a_stack(tmp_path: Path) -> None:
    """The PVH entry leaves esp undefined (this VMM: 0), and a guest's first instructions may be
    sensitive before it sets a stack (Linux's pvh_start_xen starts with lgdt): hypercall lowerings use no stack."""
    spec = CaseSpec("cli", variants_for("cli", 32)[0], Context.PLAIN)
    guest = build_guest([spec], 32, seed=1, stack_first=False)
    native, _translation, pv = translate_and_run(guest, tmp_path / "nostack.elf")
    assert_ran_as_generated(guest, native)
    assert (pv.console, pv.exit_status) == (native.console, native.exit_status), case_differences(guest, native, pv)


# A few generated guests against QEMU (the oracle for the native machine); each boots in ~0.1 s.
# (Run against every entry once, the native VMM answers as QEMU does.)
QEMU_GUESTS = [("cli", 32), ("popfq", 64), ("in16.dx", 32), ("rep.outsb", 64), ("lar", 64), ("mov.to.ss", 32),
               ("iret16", 32), ("iretq", 64), ("sysexit", 32), ("hlt", 64), ("wrmsr", 64), ("cpuid", 32),
               ("mov.to.dr4", 64), ("mov.to.dr5", 64)]


def _qemu_id(param) -> str:
    entry, bits = param.values if hasattr(param, "values") else param
    return f"{entry}-{bits}"


@pytest.mark.qemu
@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 not installed")
@pytest.mark.parametrize(("entry", "bits"), QEMU_GUESTS, ids=[_qemu_id(p) for p in QEMU_GUESTS])
def test_generated_guest_runs_as_under_qemu(entry: str, bits: int, tmp_path: Path) -> None:
    guest = entry_guest(entry, bits)
    path = tmp_path / f"{entry}-{bits}.elf"
    guest.write(path)
    reference = subprocess.run([QEMU, *QEMU_ARGS, "-kernel", str(path)], capture_output=True, timeout=60,
                               stdin=subprocess.DEVNULL)
    ours = run(path)
    assert reference.stdout.endswith(PASS_MARKER), reference.stdout[-300:]
    assert (ours.console, ours.exit_status) == (reference.stdout, reference.returncode)
