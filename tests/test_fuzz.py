"""The fuzzer: random guests are reproducible and really branch around their sites; the campaign runs them
in a local process pool and on Dask alike, catches a broken translation, and shrinks a failure to its core.

The generator (``pvtranslate.fuzzgen``) draws a program from a seed and builds it with guestgen; the
campaign (``pvtranslate.fuzz``) translates each guest, runs original (native) and translation (pv)
and compares consoles, exit status, escapes and the plan's sites. The real campaign (10,000 seeds)
is a tool run, ``tools/fuzz.py --seeds 0:10000 --jobs 2 --out DIR``; these tests keep to ~20 seeds.
The bugs it found are regression tests in test_fuzz_regressions.py.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pvtranslate import fuzzgen
from pvtranslate.fuzz import FuzzOptions, campaign, ddmin, minimize, run_seed
from pvtranslate.fuzzgen import FuzzProgram, landings, program

ROOT = Path(__file__).resolve().parents[1]
SMALL = list(range(20))          # the small campaign: every seed passes today


def _sha(seed: int) -> str:
    return hashlib.sha256(program(seed).build().elf).hexdigest()


# --------------------------------------------------------------------------- the generator


def test_same_seed_same_guest_bytes_in_any_process() -> None:
    here = {s: _sha(s) for s in (0, 1, 7)}
    assert here == {s: _sha(s) for s in (0, 1, 7)}
    code = ("import hashlib; from pvtranslate.fuzzgen import program; "
            "print(' '.join(hashlib.sha256(program(s).build().elf).hexdigest() for s in (0, 1, 7)))")
    for hash_seed in ("1", "2"):          # set iteration order must not leak into the program
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                             env={**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)})
        assert out.stdout.split() == [here[0], here[1], here[7]]


def test_different_seeds_give_different_guests() -> None:
    shas = {_sha(s) for s in range(12)}
    assert len(shas) == 12
    assert {program(s).bits for s in range(12)} == {32, 64}


def test_program_round_trips_through_json() -> None:
    p = program(3)
    assert FuzzProgram.from_json(p.to_json()) == p
    assert FuzzProgram.from_json(p.to_json()).build().elf == p.build().elf


@pytest.fixture(scope="module")
def built() -> list[tuple[FuzzProgram, object]]:
    return [(p, p.build()) for p in (program(s) for s in range(100, 130))]


def test_branches_land_on_before_and_after_sites_by_metadata_and_by_decoding(built) -> None:
    """The generator says where its jumps land; Capstone reading the ELF finds the same, and more."""
    claimed, decoded = Counter(), Counter()
    for prog, guest in built:
        found = landings(guest)
        for case, fc in zip(guest.cases, prog.cases):
            tags = fc.tags()
            for where in ("on", "after", "before"):
                if f"land:{where}" in tags:
                    claimed[where] += 1
                    assert where in found[case.index], \
                        f"seed {prog.seed}: {case.describe()} claims a landing {where} the ELF does not show"
            for where in found[case.index]:
                decoded[where] += 1
    for where in ("on", "after", "before"):
        assert claimed[where] >= 5 and decoded[where] >= claimed[where], (claimed, decoded)


def test_generated_code_covers_the_shapes(built) -> None:
    tags = fuzzgen.tag_counts(p for p, _g in built)
    for shape in ("near", "rip", "call", "filler-site", "stack", "rcx-branch", "backward", "flags-across",
                  "land:ret", "call-before", "call-after", "branch-before", "branch-after", "site-before",
                  "site-after", "kind:loop", "kind:diamond", "kind:loop-after"):
        assert tags[shape] > 0, f"no {shape!r} in 30 programs: {tags}"
    assert {p.bits for p, _g in built} == {32, 64}
    entries = {c.entry for p, _g in built for c in p.cases}
    assert len(entries) > 60, "the cases cover the catalog"
    lines = [line for p, _g in built for c in p.cases for piece in c.pieces
             for line in (*piece.before, *piece.after, *(x for _n, b, _s in piece.functions for x in b))]
    # bt* leaves flags undefined that Unicorn computes differently across translation blocks (fuzzgen.py)
    assert not any(line.split(" ", 1)[0] in fuzzgen._UNDEFINED_FLAGS for line in lines)


def test_woven_sites_are_the_ones_placed(built) -> None:
    """guestgen's own check: every sensitive instruction is one it placed (fillers included)."""
    prog, guest = built[0]
    assert len(guest.sites) > len(guest.cases) * 2


# --------------------------------------------------------------------------- the campaign


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    return campaign(SMALL, FuzzOptions(minimize=False, out=str(out)), jobs=2), out


def _verdicts(out: Path) -> dict[int, tuple]:
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return {r["seed"]: (r["bits"], r["verdict"], r["aspect"], r["cases"], r["sites"]) for r in rows}


def test_small_campaign_passes_on_the_local_pool(local_run) -> None:
    s, out = local_run
    assert s.finished and s.seeds == len(SMALL)
    assert s.verdicts["pass"] == len(SMALL), s.format()
    assert s.by_bits.keys() == {"32", "64"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passes"] == len(SMALL) and summary["divergences"] == 0 and summary["finished"]
    assert summary["seeds_per_s"] > 0


def test_dask_cluster_gives_the_same_verdicts(local_run, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    out = tmp_path / "dask"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) \
            as cluster:
        s = campaign(SMALL, FuzzOptions(minimize=False, out=str(out)), scheduler=cluster.scheduler_address)
    assert s.executor.startswith("dask ")
    assert _verdicts(out) == _verdicts(local_run[1])
    assert sorted(_verdicts(out)) == SMALL


def test_a_broken_translation_is_reported_divergent_and_minimized(tmp_path: Path) -> None:
    """ud2 over the patch of one case's instruction in the translation: the campaign must say diverge."""
    result = run_seed(SMALL[0], FuzzOptions(inject_bug=True, out=str(tmp_path), minimize_budget=60))
    assert result.verdict == "diverge" and result.aspect == "console" and result.blame == "translation"
    assert (tmp_path / f"seed-{SMALL[0]}" / "diff.txt").exists()
    assert result.reproducer and Path(result.reproducer).exists()
    cases, _pieces, _lines = result.minimized
    assert cases == 1, result


# --------------------------------------------------------------------------- the minimizer


def test_ddmin_finds_the_two_culprits() -> None:
    calls = []

    def fails(items):
        calls.append(list(items))
        return 13 in items and 42 in items
    assert ddmin(list(range(64)), fails) == [13, 42]
    assert len(calls) < 80


def test_ddmin_respects_its_budget() -> None:
    budget = [5]
    got = ddmin(list(range(64)), lambda items: 3 in items, budget)
    assert 3 in got and budget[0] == 0


def test_minimize_shrinks_an_injected_failure_to_its_cases_and_piece() -> None:
    """A stand-in bug: a program fails when it holds an lgdt case and, later, a case carrying a loop."""
    prog = program(5, cases=16)
    entries = [c.entry for c in prog.cases]
    first = next(i for i, c in enumerate(prog.cases) if any(p.kind == "loop" for p in c.pieces))
    prog = prog.replace_cases(prog.cases[:first] + (program(9, bits=prog.bits, cases=1).cases[0],) + prog.cases[first:])
    marker = prog.cases[first].entry
    looped = prog.cases[first + 1]

    def fails(p: FuzzProgram) -> bool:
        es = [c.entry for c in p.cases]
        return marker in es and any(c.entry == looped.entry and any(x.kind == "loop" for x in c.pieces)
                                    for c in p.cases[es.index(marker) + 1:])
    assert fails(prog) and len(entries) == 16
    small = minimize(prog, fails)
    assert [c.entry for c in small.cases] == [marker, looped.entry]
    assert [x.kind for x in small.cases[1].pieces] == ["loop"]
    assert not small.cases[0].pieces
    assert fails(small)
