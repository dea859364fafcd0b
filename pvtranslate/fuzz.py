"""fuzz: owns the fuzz campaign: per seed a random guest, its translation, both runs and their comparison, in
parallel (local processes or a Dask cluster), with failures saved, minimized and written as reproducers.

``python tools/fuzz.py --seeds 0:10000 --jobs 2 --out DIR`` (or ``pvtranslate fuzz ...``). For each
seed, ``pvtranslate.fuzzgen.program(seed)`` draws a guest (the same bytes for the same seed, in
any process), ``translate`` paravirtualizes it, the original runs in the VMM's native mode and the
translation in pv mode, and the seed's verdict is:

``pass``
    The original ran as generated (exit status 1, the pass marker, every case printed and faulting
    exactly where its variant says), the translator planned exactly the sensitive instructions
    the generator placed, the pv run had no translation escape, and its console and exit status
    are the original's byte for byte.
``diverge``
    The translation does not behave as the original (``aspect``: ``console``, ``exit``,
    ``escapes`` or ``plan``). For a console or exit divergence the original also runs in fullvirt
    mode, a third opinion that says where the bug is (``blame``): ``translation`` when fullvirt
    agrees with native (the translator, or the VMM's pv mode), ``native-vmm`` when it agrees with
    pv (the native reference itself is wrong), ``unclear`` when all three differ.
``error``
    The translator failed on a valid guest (``aspect`` ``translate``): a translator bug.
``invalid``
    The original did not run as generated: a generator bug (or a native-mode VMM bug), not the
    translation's; such seeds are reported apart and never minimized.

A failing seed (``diverge`` or ``error``) gets a directory ``DIR/seed-<n>/`` with the guest, its
translation, both consoles and their diff, and the program's listing; then it is minimized by delta
debugging (``ddmin``: cases, then each case's woven pieces, then their lines) to the smallest
program that still fails the same way, written as a self-contained Python file ``repro.py`` (the
guest ELF embedded; ``python repro.py`` exits 1 while the bug is there; ``check(workdir)`` is what
a regression test calls). ``DIR/results.jsonl`` holds one line per seed, ``DIR/summary.json`` the
totals (seeds, passes, divergences, errors, invalid, wall time, seeds per second), rewritten as
the campaign goes so that an interrupted campaign still says how far it got.

``--scheduler ADDRESS`` sends the seeds to a Dask distributed cluster instead of local processes
(``pip install 'pvtranslate[fuzz]'``); verdicts do not depend on where a seed ran.
``--inject-bug`` breaks one patched site of every translation (the campaign's self-test: every seed
must then diverge).
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import dataclasses
import difflib
import json
import math
import os
import pprint
import shutil
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

from .fuzzgen import FuzzProgram, Piece, program
from .guestgen import PASS_MARKER, Context, Guest, GuestGenError, parse_console

__all__ = ["FuzzOptions", "Outcome", "SeedResult", "Summary", "check_program", "check_reproducer", "run_seed", "ddmin", "minimize",
           "reproducer_source", "campaign", "parse_seeds", "main"]

VERDICTS = ("pass", "diverge", "error", "invalid")
FAILURES = ("diverge", "error")


@dataclass(frozen=True)
class FuzzOptions:
    """How each seed is checked; one frozen record (STYLE), picklable for process pools and Dask."""

    timeout_s: float = 30.0            # per VMM run, host seconds (a runaway guest is a failure, not a hang)
    out: str | None = None             # where failing seeds, results and the summary go (None: nowhere)
    minimize: bool = True              # delta-debug failing seeds to a reproducer
    minimize_budget: int = 400         # at most this many candidate programs per failing seed
    inject_bug: bool = False           # self-test: break one patched site in every translation
    bits: int | None = None            # force 32 or 64 (default: the seed draws it)
    cases: int | None = None           # force the number of cases per guest


@dataclass(frozen=True)
class Outcome:
    """What checking one program found."""

    verdict: str                       # pass | diverge | error | invalid
    aspect: str = ""                   # console | exit | escapes | plan | translate | native | build
    detail: str = ""
    blame: str = ""                    # diverge: translation | native-vmm | unclear
    cases: int = 0
    sites: int = 0
    native_console: bytes = b""
    pv_console: bytes = b""

    @property
    def signature(self) -> tuple[str, str, str]:
        """What a minimized program must keep failing with: the same verdict, aspect and blame."""
        return self.verdict, self.aspect, self.blame


@dataclass(frozen=True)
class SeedResult:
    seed: int
    bits: int
    verdict: str
    aspect: str = ""
    detail: str = ""
    blame: str = ""
    cases: int = 0
    sites: int = 0
    seconds: float = 0.0
    minimized: tuple[int, int, int] | None = None     # (cases, pieces, lines) of the reproducer
    minimized_entries: tuple[str, ...] = ()           # its cases' catalog entries (groups duplicates)
    reproducer: str | None = None

    @property
    def group(self) -> str:
        """Failures with the same group are most likely one bug ("" for a seed that did not fail)."""
        if self.verdict not in FAILURES:
            return ""
        return f"{self.verdict}/{self.aspect}/{self.blame}: {' '.join(self.minimized_entries) or '?'}"

    def to_json(self) -> dict:
        return dataclasses.asdict(self) | {"group": self.group}


# --------------------------------------------------------------------------- one program


def ran_as_generated(guest: Guest, status: int | None, error: str | None, console: bytes) -> str | None:
    """Why the original did not run as the generator meant (None if it did)."""
    if error is not None or status != 1:
        return f"native run: status {status}, error {error}"
    if not console.endswith(PASS_MARKER):
        return f"native console does not end with the pass marker: {console[-120:]!r}"
    if any(b != 10 and not 32 <= b < 127 for b in console):
        return "native console holds bytes no case prints (the guest ran astray)"
    lines = parse_console(console)
    for case in guest.cases:
        line = lines.get(case.index)
        if line is None:
            return f"no output for {case.describe()}"
        vector = int(line[2:4], 16) if line.startswith(b" !") else None
        if vector != case.expect:
            return f"{case.describe()}: native printed {line!r}"
    return None


def _corrupt(pv_path: Path, guest: Guest, translation) -> None:
    """Overwrite the start of the patch covering the first completing case's instruction with ud2 (the
    guest's own #UD handler then prints a fault the original never had): the pv run must differ."""
    records = translation.emitted.sites if translation.emitted else ()
    data = bytearray(pv_path.read_bytes())
    for case in guest.cases:
        if case.expect is not None:
            continue
        patch = next((r.patch_range for r in records if r.patch_range
                      and r.patch_range[0] <= case.insn_va < r.patch_range[1]), None)
        if patch is None:
            continue
        off = _file_offset(bytes(data), patch[0])
        data[off:off + 2] = b"\x0f\x0b"
        pv_path.write_bytes(bytes(data))
        return


def _file_offset(elf: bytes, va: int) -> int:
    from vmm.elf import parse_elf
    image = parse_elf(elf)
    for seg in image.segments:
        if seg.vaddr <= va < seg.vaddr + seg.file_size:
            return seg.file_off + va - seg.vaddr
    raise ValueError(f"{va:#x} is not in the file")


def _diff(native: bytes, pv: bytes, limit: int = 12) -> str:
    a = native.decode("latin-1").splitlines()
    b = pv.decode("latin-1").splitlines()
    lines = list(difflib.unified_diff(a, b, "native", "pv", lineterm="", n=1))
    return "\n".join(lines[:limit * 3]) + ("\n..." if len(lines) > limit * 3 else "")


def check_program(prog: FuzzProgram, workdir: Path, options: FuzzOptions = FuzzOptions(),
                  guest: Guest | None = None) -> tuple[Outcome, Guest | None]:
    """Build ``prog``, translate it, run both and compare (the module docstring's verdicts)."""
    from vmm.run import run
    from vmm.vcpu import Limits

    from . import PvTranslateError
    from .translate import TranslateOptions, translate

    try:
        guest = guest or prog.build()
    except GuestGenError as exc:
        return Outcome("invalid", "build", str(exc)), None
    ncases = len(guest.cases)
    elf, pv_elf = workdir / "guest.elf", workdir / "guest.pv.elf"
    guest.write(elf)
    limits = Limits(timeout_s=options.timeout_s)
    native = run(elf, mode="native", limits=limits)
    why = ran_as_generated(guest, native.exit_status, native.error, native.console)
    if why is not None:
        return Outcome("invalid", "native", why, ncases, len(guest.sites), native.console), guest
    try:
        translation = translate(elf, TranslateOptions(output=pv_elf))
    except PvTranslateError as exc:
        return Outcome("error", "translate", f"{type(exc).__name__}: {exc}", ncases, len(guest.sites),
                       native.console), guest
    except Exception as exc:          # a translator crash on a valid guest is a finding too
        return Outcome("error", "translate", f"internal {type(exc).__name__}: {exc}", ncases, len(guest.sites),
                       native.console), guest
    if options.inject_bug:
        _corrupt(pv_elf, guest, translation)
    pv = run(pv_elf, mode="pv", limits=limits)
    base = dict(cases=ncases, sites=len(guest.sites), native_console=native.console, pv_console=pv.console)
    if (pv.console, pv.exit_status) != (native.console, native.exit_status) or pv.error is not None:
        aspect = "console" if pv.console != native.console else "exit"
        fullvirt = run(elf, mode="fullvirt", limits=limits)
        seen = (fullvirt.console, fullvirt.exit_status)
        blame = ("translation" if seen == (native.console, native.exit_status) else
                 "native-vmm" if seen == (pv.console, pv.exit_status) else "unclear")
        detail = (f"exit status native {native.exit_status}, pv {pv.exit_status}; pv error: {pv.error}; "
                  f"fullvirt agrees with {_agrees(blame)}\n" + _diff(native.console, pv.console))
        return Outcome("diverge", aspect, detail, blame, **base), guest
    if pv.escapes:
        return Outcome("diverge", "escapes", "sensitive instructions ran natively in pv mode: "
                       + "; ".join(e.describe() for e in pv.escapes[:4]), "translation", **base), guest
    planned = {s.va: s.entry_name for s in translation.plan.sites}
    if planned != dict(guest.sites):
        missed = sorted(set(guest.sites) - set(planned))
        extra = sorted(set(planned) - set(guest.sites))
        wrong = sorted(va for va in set(planned) & set(guest.sites) if planned[va] != guest.sites[va])
        detail = (f"the plan's sites are not the generator's: missed {[hex(v) for v in missed[:6]]}, "
                  f"extra {[hex(v) for v in extra[:6]]}, misclassified {[hex(v) for v in wrong[:6]]}")
        return Outcome("diverge", "plan", detail, "translation", **base), guest
    return Outcome("pass", **base), guest


def _agrees(blame: str) -> str:
    return {"translation": "native", "native-vmm": "pv", "unclear": "neither"}[blame]


# --------------------------------------------------------------------------- minimizing

T = TypeVar("T")


def ddmin(items: Sequence[T], fails: Callable[[list[T]], bool], budget: list[int] | None = None) -> list[T]:
    """Zeller's delta debugging: a 1-minimal sublist of ``items`` (order kept) for which ``fails`` holds.

    ``fails(items)`` is assumed true. ``budget`` is a one-element list of remaining tests, shared
    across calls; when it runs out the smallest failing list found so far is returned."""
    items = list(items)
    tried: dict[tuple[int, ...], bool] = {}
    index = list(range(len(items)))

    def test(sub: list[int]) -> bool:
        key = tuple(sub)
        if key not in tried:
            if budget is not None:
                if budget[0] <= 0:
                    return False
                budget[0] -= 1
            tried[key] = fails([items[i] for i in sub])
        return tried[key]

    n = 2
    if index and test([]):
        return []
    while len(index) >= 2:
        size = math.ceil(len(index) / n)
        chunks = [index[i:i + size] for i in range(0, len(index), size)]
        for chunk in chunks:
            if test(chunk):
                index, n = chunk, 2
                break
        else:
            for chunk in chunks:
                rest = [i for i in index if i not in chunk]
                if len(chunks) > 2 and test(rest):
                    index, n = rest, max(n - 1, 2)
                    break
            else:
                if n >= len(index):
                    break
                n = min(n * 2, len(index))
    return [items[i] for i in index]


def minimize(prog: FuzzProgram, fails: Callable[[FuzzProgram], bool], budget: int = 400) -> FuzzProgram:
    """The smallest program found that still ``fails``: fewer cases, then fewer pieces per case, then
    per case the plain context if it still fails, fewer lines per piece part and fewer lines per
    function body (its ``ret`` stays). A candidate that no longer builds or no longer runs as
    generated counts as not failing. At most ``budget`` candidates are tried."""
    left = [budget]
    cases = ddmin(prog.cases, lambda cs: bool(cs) and fails(prog.replace_cases(cs)), left)
    prog = prog.replace_cases(cases)
    for k in range(len(prog.cases)):
        case = prog.cases[k]

        def with_pieces(ps, k=k, case=case):
            return prog.replace_cases(prog.cases[:k] + (dataclasses.replace(case, pieces=tuple(ps)),)
                                      + prog.cases[k + 1:])
        pieces = ddmin(case.pieces, lambda ps: fails(with_pieces(ps)), left)
        prog = with_pieces(pieces)
    def with_piece(k: int, j: int, piece: Piece) -> FuzzProgram:
        case = prog.cases[k]
        c = dataclasses.replace(case, pieces=case.pieces[:j] + (piece,) + case.pieces[j + 1:])
        return prog.replace_cases(prog.cases[:k] + (c,) + prog.cases[k + 1:])

    for k in range(len(prog.cases)):
        if prog.cases[k].context is not Context.PLAIN:      # the simplest placement, if it still fails
            plain = prog.replace_cases(prog.cases[:k] + (dataclasses.replace(prog.cases[k], context=Context.PLAIN),)
                                       + prog.cases[k + 1:])
            if left[0] > 0:
                left[0] -= 1
                if fails(plain):
                    prog = plain
        for j in range(len(prog.cases[k].pieces)):
            for part in ("before", "after"):
                piece = prog.cases[k].pieces[j]
                lines = getattr(piece, part)
                if lines:
                    def with_lines(ls, k=k, j=j, part=part, piece=piece):
                        return with_piece(k, j, dataclasses.replace(piece, **{part: tuple(ls)}))
                    prog = with_lines(ddmin(lines, lambda ls, w=with_lines: fails(w(ls)), left))
            for f in range(len(prog.cases[k].pieces[j].functions)):
                piece = prog.cases[k].pieces[j]
                name, body, sized = piece.functions[f]

                def with_body(ls, k=k, j=j, f=f, piece=piece, name=name, sized=sized):   # its ret stays
                    fns = piece.functions[:f] + ((name, (*ls, body[-1]), sized),) + piece.functions[f + 1:]
                    return with_piece(k, j, dataclasses.replace(piece, functions=fns))
                prog = with_body(ddmin(body[:-1], lambda ls, w=with_body: fails(w(ls)), left))
    return prog


# --------------------------------------------------------------------------- reproducers

_REPRO = '''"""Fuzz reproducer: seed {seed} ({bits}-bit), minimized from {cases0} case(s) to {cases1}.

Found by pvtranslate.fuzz: {verdict} ({aspect}, blame: {blame}).
{detail}

The guest ELF is embedded below (zlib, base64), so this file needs only pvtranslate and the VMM;
PROGRAM is the fuzz program that generated it (pvtranslate.fuzzgen.FuzzProgram.from_json(PROGRAM)
.build() rebuilds it while the generator is unchanged). Run ``python {name}``: it exits with status 1
while the translation still differs from the original, 0 once it is fixed.

{listing}
"""
from __future__ import annotations

import base64
import sys
import tempfile
import zlib
from pathlib import Path

SEED = {seed}
BITS = {bits}
VERDICT = {verdict!r}
ASPECT = {aspect!r}
BLAME = {blame!r}
XFAIL_REASON = None   # set when kept as a known bug: the file and the fix it needs
PROGRAM = {program}
GUEST_ELF = zlib.decompress(base64.b64decode(
{blob}))


def check(workdir: Path) -> str | None:
    """None if the translation behaves as the original; else what differs."""
    from pvtranslate.fuzz import check_reproducer
    return check_reproducer(GUEST_ELF, PROGRAM_SITES, Path(workdir))


PROGRAM_SITES = {sites}   # every sensitive instruction the generator placed: va -> catalog entry


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        problem = check(Path(tmp))
    print(problem or "equivalent: the translation now behaves as the original")
    sys.exit(1 if problem else 0)
'''


def check_reproducer(guest_elf: bytes, program_sites: dict[str, str], workdir: Path) -> str | None:
    """What a reproducer checks: None if the translation of ``guest_elf`` behaves as the original (same
    console, exit status, no escape, exactly ``program_sites`` planned: va in hex -> catalog entry)."""
    from vmm.run import run
    from vmm.vcpu import Limits

    from .translate import TranslateOptions, translate
    elf, pv_elf = workdir / "repro.elf", workdir / "repro.pv.elf"
    elf.write_bytes(guest_elf)
    native = run(elf, mode="native", limits=Limits(timeout_s=30))
    if native.error is not None or native.exit_status != 1:
        return f"the original itself failed: status {native.exit_status}, {native.error}"
    try:
        translation = translate(elf, TranslateOptions(output=pv_elf))
    except Exception as exc:
        return f"translation failed: {type(exc).__name__}: {exc}"
    pv = run(pv_elf, mode="pv", limits=Limits(timeout_s=30))
    problems = []
    if (pv.console, pv.exit_status, pv.error) != (native.console, native.exit_status, None):
        problems.append(f"exit status {native.exit_status} vs {pv.exit_status}, pv error {pv.error}\n"
                        + _diff(native.console, pv.console, 14))
    if pv.escapes:
        problems.append("escapes: " + "; ".join(e.describe() for e in pv.escapes[:4]))
    placed = {int(va, 16): name for va, name in program_sites.items()}
    planned = {s.va: s.entry_name for s in translation.plan.sites}
    if planned != placed:
        problems.append(f"plan differs: missed {sorted(hex(v) for v in set(placed) - set(planned))}, "
                        f"extra {sorted(hex(v) for v in set(planned) - set(placed))}")
    return "\n".join(problems) or None


def reproducer_source(prog: FuzzProgram, guest: Guest, outcome: Outcome, original_cases: int, name: str) -> str:
    """A self-contained Python file that reproduces ``outcome`` with ``guest`` (see the module docstring)."""
    blob = base64.b64encode(zlib.compress(guest.elf, 9)).decode()
    blob_lines = "\n".join(f'    "{blob[i:i + 96]}"' for i in range(0, len(blob), 96))
    listing = "\n".join("    " + line for line in prog.listing().splitlines())
    detail = "\n".join(outcome.detail.splitlines()[:16]).replace('"""', "'''").replace("\\", "\\\\")
    sites = "{" + ", ".join(f'"{va:#x}": "{name_}"' for va, name_ in sorted(guest.sites.items())) + "}"
    return _REPRO.format(seed=prog.seed, bits=prog.bits, cases0=original_cases, cases1=len(prog.cases),
                         verdict=outcome.verdict, aspect=outcome.aspect, blame=outcome.blame, detail=detail, name=name,
                         listing=listing.replace("\\", "\\\\").replace('"""', "'''"),
                         program=pprint.pformat(prog.to_json(), width=116, compact=True), blob=blob_lines, sites=sites)


# --------------------------------------------------------------------------- one seed


def _save_failure(seed_dir: Path, prog: FuzzProgram, guest: Guest | None, outcome: Outcome, workdir: Path) -> None:
    seed_dir.mkdir(parents=True, exist_ok=True)
    for name in ("guest.elf", "guest.pv.elf"):
        if (workdir / name).exists():
            shutil.copyfile(workdir / name, seed_dir / name)
    (seed_dir / "native.console").write_bytes(outcome.native_console)
    (seed_dir / "pv.console").write_bytes(outcome.pv_console)
    (seed_dir / "diff.txt").write_text(f"{outcome.verdict} ({outcome.aspect}, {outcome.blame})\n{outcome.detail}\n"
                                       + _diff(outcome.native_console, outcome.pv_console, 200) + "\n")
    (seed_dir / "program.txt").write_text(prog.listing() + "\n")
    (seed_dir / "program.json").write_text(json.dumps(prog.to_json(), indent=1) + "\n")
    if guest is not None:
        (seed_dir / "cases.txt").write_text("\n".join(c.describe() for c in guest.cases) + "\n")


def run_seed(seed: int, options: FuzzOptions = FuzzOptions()) -> SeedResult:
    """Generate, translate, run and compare one seed; minimize and save it if it fails."""
    started = time.perf_counter()
    prog = program(seed, bits=options.bits, cases=options.cases)
    with tempfile.TemporaryDirectory(prefix=f"pvfuzz-{seed}-") as tmp:
        workdir = Path(tmp)
        outcome, guest = check_program(prog, workdir, options)
        result = SeedResult(seed, prog.bits, outcome.verdict, outcome.aspect, outcome.detail.split("\n", 1)[0][:300],
                            outcome.blame, outcome.cases, outcome.sites)
        if outcome.verdict in FAILURES and options.out is not None:
            seed_dir = Path(options.out) / f"seed-{seed}"
            _save_failure(seed_dir, prog, guest, outcome, workdir)
            if options.minimize:
                result = _minimize_seed(prog, outcome, options, seed_dir, result)
    return dataclasses.replace(result, seconds=round(time.perf_counter() - started, 3))


def _minimize_seed(prog: FuzzProgram, outcome: Outcome, options: FuzzOptions, seed_dir: Path,
                   result: SeedResult) -> SeedResult:
    def fails(candidate: FuzzProgram) -> bool:
        with tempfile.TemporaryDirectory(prefix="pvfuzz-min-") as tmp:
            got, _ = check_program(candidate, Path(tmp), options)
        return got.signature == outcome.signature

    small = minimize(prog, fails, options.minimize_budget)
    with tempfile.TemporaryDirectory(prefix="pvfuzz-min-") as tmp:
        final, guest = check_program(small, Path(tmp), options)
    if final.signature != outcome.signature or guest is None:       # cannot happen with a deterministic check
        small, final, guest = prog, outcome, prog.build()
    path = seed_dir / "repro.py"
    path.write_text(reproducer_source(small, guest, final, len(prog.cases), f"seed_{prog.seed}.py"))
    (seed_dir / "minimized.txt").write_text(small.listing() + "\n\n" + final.detail + "\n")
    return dataclasses.replace(result, minimized=small.size(), reproducer=str(path),
                               minimized_entries=tuple(c.entry for c in small.cases))


# --------------------------------------------------------------------------- the campaign


@dataclass
class Summary:
    seeds: int = 0
    planned: int = 0
    verdicts: dict[str, int] = field(default_factory=lambda: {v: 0 for v in VERDICTS})
    by_bits: dict[str, int] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)
    groups: dict[str, list[int]] = field(default_factory=dict)     # failure group -> seeds
    invalid: list[dict] = field(default_factory=list)
    wall_s: float = 0.0
    seed_cpu_s: float = 0.0
    sites: int = 0
    cases: int = 0
    finished: bool = False
    command: str = ""
    seed_range: str = ""
    executor: str = ""

    def add(self, r: SeedResult) -> None:
        self.seeds += 1
        self.verdicts[r.verdict] = self.verdicts.get(r.verdict, 0) + 1
        self.by_bits[str(r.bits)] = self.by_bits.get(str(r.bits), 0) + 1
        self.seed_cpu_s += r.seconds
        self.sites += r.sites
        self.cases += r.cases
        if r.verdict in FAILURES:
            self.failures.append(r.to_json())
            self.groups.setdefault(r.group, []).append(r.seed)
        elif r.verdict == "invalid":
            self.invalid.append(r.to_json())

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d |= {"passes": self.verdicts.get("pass", 0), "divergences": self.verdicts.get("diverge", 0),
              "errors": self.verdicts.get("error", 0), "invalid_seeds": self.verdicts.get("invalid", 0),
              "seeds_per_s": round(self.seeds / self.wall_s, 2) if self.wall_s else None,
              "s_per_seed_wall": round(self.wall_s / self.seeds, 4) if self.seeds else None,
              "s_per_seed_cpu": round(self.seed_cpu_s / self.seeds, 4) if self.seeds else None}
        d["wall_s"] = round(self.wall_s, 1)
        d["seed_cpu_s"] = round(self.seed_cpu_s, 1)
        return d

    def format(self) -> str:
        v = self.verdicts
        rate = f"{self.seeds / self.wall_s:.2f} seeds/s, {self.wall_s / self.seeds:.3f} s/seed wall, " \
               f"{self.seed_cpu_s / self.seeds:.3f} s/seed in a worker" if self.seeds and self.wall_s else "-"
        lines = [f"fuzz {self.seed_range}: {self.seeds} of {self.planned} seeds"
                 f"{'' if self.finished else ' (interrupted)'} in {self.wall_s:.1f} s ({rate}) on {self.executor}",
                 f"  pass {v.get('pass', 0)}, diverge {v.get('diverge', 0)}, error {v.get('error', 0)}, "
                 f"invalid {v.get('invalid', 0)}; bits {self.by_bits}; {self.cases} cases, {self.sites} sites"]
        for group, seeds in sorted(self.groups.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"  {len(seeds)} x {group}  (seeds {', '.join(map(str, seeds[:8]))}"
                         f"{' ...' if len(seeds) > 8 else ''})")
        for f in self.failures[:20]:
            lines.append(f"  seed {f['seed']} ({f['bits']}-bit): {f['verdict']} ({f['aspect']}, {f['blame']}): "
                         f"{f['detail']}"
                         + (f"\n    reproducer {f['reproducer']} (cases, pieces, lines: {f['minimized']})"
                            if f.get("reproducer") else ""))
        for f in self.invalid[:10]:
            lines.append(f"  seed {f['seed']} ({f['bits']}-bit): INVALID ({f['aspect']}): {f['detail']}")
        return "\n".join(lines)


def _local(seeds: Sequence[int], options: FuzzOptions, jobs: int) -> Iterator[SeedResult]:
    if jobs <= 1:
        for s in seeds:
            yield run_seed(s, options)
        return
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        pending: set = set()
        it = iter(seeds)
        for s in it:                       # a bounded window of futures: memory stays flat on long campaigns
            pending.add(pool.submit(run_seed, s, options))
            if len(pending) >= 4 * jobs:
                break
        while pending:
            done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for fut in done:
                yield fut.result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.add(pool.submit(run_seed, nxt, options))


def _dask(seeds: Sequence[int], options: FuzzOptions, scheduler: str) -> Iterator[SeedResult]:
    try:
        from distributed import Client, as_completed
    except ImportError as exc:
        raise SystemExit("pvtranslate fuzz: --scheduler needs Dask: pip install 'pvtranslate[fuzz]'") from exc
    with Client(scheduler) as client:
        futures = client.map(run_seed, list(seeds), options=options, pure=False, key=[f"pvfuzz-{s}" for s in seeds])
        for fut in as_completed(futures):
            yield fut.result()
            fut.release()


def campaign(seeds: Sequence[int], options: FuzzOptions = FuzzOptions(), jobs: int = 2, scheduler: str | None = None,
             progress: bool = False, command: str = "") -> Summary:
    """Run every seed (local process pool, or the Dask cluster at ``scheduler``) and sum up the verdicts."""
    out = Path(options.out) if options.out else None
    summary = Summary(planned=len(seeds), command=command, seed_range=_range_text(seeds),
                      executor=f"dask {scheduler}" if scheduler else f"{jobs} local process(es)")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    results_file = open(out / "results.jsonl", "w") if out else None
    started = time.perf_counter()
    last_write = started
    results = _dask(seeds, options, scheduler) if scheduler else _local(seeds, options, jobs)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(seeds), unit="seed", mininterval=1.0 if sys.stderr.isatty() else 30.0,
                   file=sys.stderr, dynamic_ncols=True)
    try:
        for r in results:
            summary.add(r)
            if results_file:
                results_file.write(json.dumps(r.to_json()) + "\n")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(diverge=summary.verdicts["diverge"], error=summary.verdicts["error"],
                                invalid=summary.verdicts["invalid"], refresh=False)
                if r.verdict in FAILURES:
                    bar.write(f"seed {r.seed} ({r.bits}-bit): {r.verdict} ({r.aspect}, {r.blame}): {r.detail}")
            now = time.perf_counter()
            if out and now - last_write > 30:
                summary.wall_s = now - started
                results_file.flush()
                _write_summary(out, summary)
                last_write = now
        summary.finished = True
    finally:
        summary.wall_s = time.perf_counter() - started
        if bar is not None:
            bar.close()
        if results_file:
            results_file.close()
        if out:
            _write_summary(out, summary)
    return summary


def _write_summary(out: Path, summary: Summary) -> None:
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary.to_json(), indent=1) + "\n")
    os.replace(tmp, out / "summary.json")


def _range_text(seeds: Sequence[int]) -> str:
    if not seeds:
        return "no seeds"
    if list(seeds) == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}:{seeds[-1] + 1}"
    return f"{len(seeds)} seeds"


def parse_seeds(text: str) -> list[int]:
    """``A:B`` (B excluded), ``N`` or a comma list of those."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if ":" in part:
            a, b = part.split(":")
            out.extend(range(int(a, 0), int(b, 0)))
        elif part:
            out.append(int(part, 0))
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pvtranslate fuzz", description="Fuzz the translator: random guests, "
                                 "translated and run against their originals (see pvtranslate/fuzz.py).")
    ap.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0:100"), metavar="A:B",
                    help="seeds to run: A:B (B excluded), N, or a comma list (default 0:100)")
    ap.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1, help="local worker processes")
    ap.add_argument("--scheduler", metavar="ADDRESS", help="run on this Dask distributed scheduler instead "
                    "(e.g. tcp://10.0.0.1:8786)")
    ap.add_argument("--out", metavar="DIR", help="write results.jsonl, summary.json and failing seeds here")
    ap.add_argument("--no-minimize", action="store_true", help="keep failing seeds as found")
    ap.add_argument("--timeout", type=float, default=FuzzOptions.timeout_s, help="host seconds per VMM run")
    ap.add_argument("--bits", type=int, choices=(32, 64), help="only 32-bit or 64-bit guests")
    ap.add_argument("--cases", type=int, help="cases per guest (default: the seed draws 6-12)")
    ap.add_argument("--inject-bug", action="store_true", help="self-test: break one patched site per translation")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--print-program", type=int, metavar="SEED", help="print SEED's program and exit")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0 when every seed passed, 1 when any diverged or errored, 3 when only invalid seeds failed."""
    args = build_parser().parse_args(argv)
    if args.print_program is not None:
        print(program(args.print_program, bits=args.bits, cases=args.cases).listing())
        return 0
    options = FuzzOptions(timeout_s=args.timeout, out=args.out, minimize=not args.no_minimize,
                          inject_bug=args.inject_bug, bits=args.bits, cases=args.cases)
    command = " ".join(["pvtranslate fuzz", *(argv if argv is not None else sys.argv[1:])])
    summary = campaign(args.seeds, options, jobs=args.jobs, scheduler=args.scheduler,
                       progress=not args.no_progress, command=command)
    print(summary.format())
    if summary.verdicts["diverge"] or summary.verdicts["error"]:
        return 1
    return 3 if summary.verdicts["invalid"] else 0


if __name__ == "__main__":
    sys.exit(main())
