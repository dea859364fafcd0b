"""Bugs the fuzzer found, each as the minimized reproducer the campaign wrote (tests/fuzz_regressions/seed_*.py).

A reproducer is self-contained: the guest ELF is embedded, ``check(workdir)`` translates it, runs the
original (native) and the translation (pv) and returns what differs (None when equal). A known bug
keeps ``XFAIL_REASON`` (the file and the fix); strict, so the test fails once the bug is fixed:
then set it to None. Add one with ``tools/fuzz.py --seeds N --out DIR`` and copy ``DIR/seed-N/repro.py``
here as ``seed_N.py``.

Below them, two bugs (fixed) the fuzzer's triage showed outside the native-vs-pv comparison: fullvirt mode
against native, and ``pvtranslate --verify``'s memory rules against a guestgen guest.
"""
from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import pytest

from pvtranslate.guestgen import CaseSpec, Context, Weave, build_guest, entry_guest, variants_for
from pvtranslate.verify import VerifyOptions, verify
from vmm.run import run

REPRODUCERS = sorted((Path(__file__).parent / "fuzz_regressions").glob("seed_*.py"))


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"fuzz_repro_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _params():
    for path in REPRODUCERS:
        module = _load(path)
        marks = [pytest.mark.xfail(strict=True, reason=module.XFAIL_REASON)] if module.XFAIL_REASON else []
        yield pytest.param(path, id=path.stem, marks=marks)


@pytest.mark.parametrize("path", list(_params()))
def test_fuzz_reproducer_runs_as_its_original(path: Path, tmp_path: Path) -> None:
    problem = _load(path).check(tmp_path)
    assert problem is None, problem


FULLVIRT_FLAGS = [  # (entry, bits, variant index, what)
    ("rep.outsw", 32, 0, "rep outsw completes"), ("rep.outsw", 64, 0, "rep outsw completes"),
    ("mov.from.dr4", 32, 3, "#UD at the site (CR4.DE=1)"), ("mov.from.dr4", 64, 4, "#UD at the site (CR4.DE=1)"),
    ("smsw", 64, 6, "#PF at the site (unmapped m16)"),
]


@pytest.mark.parametrize(("entry", "bits", "index", "what"), FULLVIRT_FLAGS,
                         ids=[f"{e}-{b}" for e, b, _i, _w in FULLVIRT_FLAGS])
def test_fullvirt_sites_keep_the_arithmetic_flags(entry: str, bits: int, index: int, what: str,
                                                  tmp_path: Path) -> None:
    """cmp 5, 0xb sets AF|CF|SF|PF right before the site (found triaging seeds 4934, 6668, 6995, 7592, 20080).

    Under Unicorn's code hook a rep string instruction lost AF after its first element (0x87 for 0x97)
    and a fault raised by the site was delivered with stale flags (vmm/fullvirt.py's docstring)."""
    spec = CaseSpec(entry, variants_for(entry, bits)[index], Context.PLAIN,
                    Weave(before=("mov eax, 5", "cmp eax, 0xb")))
    path = tmp_path / "flags.elf"
    build_guest([spec], bits, 3).write(path)
    native, fullvirt = run(path, mode="native"), run(path, mode="fullvirt")
    assert native.exit_status == 1 and b" f=97 " in native.console, (what, native.console)
    assert fullvirt.console == native.console, what


def test_verify_accepts_the_iret16_guest() -> None:
    """Memory rule 4 leaves out the low stack iret16 returns to, where the pushfq lowering saves below
    the stack pointer (0x4774 differed): no final, TSS or delivery stack pointer is in it, only the
    one after the IRET hypercall's exit."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "iret16-64.elf"
        entry_guest("iret16", 64).write(path)
        verdict = verify(path, VerifyOptions(references=("native",)))
    assert verdict.equivalent, verdict.format()
