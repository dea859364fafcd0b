"""The PV-versus-full-virtualization measurement: owns timing the workload samples in every mode, counting
their instructions and exits, and the table, JSON and plot that report it (``tools/measure.py``).

For each workload (``samples/workload``: a CPU-bound loop with a sync point — critical sections and
port I/O, or string I/O — every ``WORK`` iterations) the original runs in native and fullvirt mode
and its translation in pv mode:

- *Wall time*: ``runs`` untraced runs per mode, the modes interleaved (rotating their order) so the
  shared machine's load falls on all of them alike; the median is reported. Each run is a fresh
  process timed around ``vmm.run`` alone, so one longer than ``timeout_s`` can be stopped from outside
  (its time is then a lower bound, marked ``>``); a run longer than ``repeat_below_s`` is not repeated.
- *Exits* (world switches): native, the VMM's device exits (port, MMIO, hlt, deliveries); fullvirt,
  one per sensitive instruction executed (an ``out`` is one, a ``rep outsb`` one per element) plus
  MMIO and deliveries; pv, one per hypercall (trap sites included) plus MMIO and deliveries.
- *Instructions*: counted exactly (``Limits.max_instructions``: a Python hook per block, so never
  in a timed run) on the workload's ``_short`` build, in native (the original's stream, which
  fullvirt runs too) and pv (trampolines included); every mode's exits are counted in a run of the
  same build. ``exits per 1000 instructions`` divides by the original's count in every mode (the
  same work); pv's own count gives the trampolines' instruction overhead.
- *Translation*: time, sites and size growth of the timed build.
"""
from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vmm.run import RunResult, run
from vmm.vcpu import Limits

from .translate import TranslateOptions, translate

__all__ = ["MeasureOptions", "ModeMeasurement", "WorkloadMeasurement", "measure", "format_table", "plot",
           "world_switches", "WORKLOADS"]

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ("sparse", "medium", "dense", "cli", "pio", "stringio")
DENSITY_SWEEP = ("sparse", "medium", "dense")      # the same sync point (cli/sti, pushf/popf, out/in) ever denser
MODES = ("native", "fullvirt", "pv")
DELIVERY_EXITS = ("mmio", "exception", "interrupt")
COUNT_ALL = 10 ** 18                               # an instruction limit never reached: counting only
COUNTED_MODES = ("native", "pv")                   # the original's stream, and the translation's


@dataclass(frozen=True)
class MeasureOptions:
    """What `measure` runs; one frozen record (STYLE)."""

    workloads: tuple[str, ...] = WORKLOADS
    modes: tuple[str, ...] = MODES
    short: bool = False                  # time the _short builds (a smoke test) instead of the full-size ones
    runs: int = 3
    repeat_below_s: float = 60.0
    timeout_s: float | None = 300.0
    count_instructions: bool = True
    samples: Path = ROOT / "samples" / "workload"


@dataclass(frozen=True)
class ModeMeasurement:
    mode: str
    wall_s: float | None                 # median of the timed runs (None: every run failed)
    wall_runs: tuple[float, ...]
    timed_out: bool                      # a run hit timeout_s: wall_s is a lower bound
    status: int | None
    exits: int | None                    # world switches of a timed run (None: every run was stopped)
    exits_by_class: dict[str, int]
    counted_instructions: int | None = None     # on the counting build, this mode's own stream
    counted_exits: int | None = None            # on the counting build
    escapes: int = 0


@dataclass(frozen=True)
class WorkloadMeasurement:
    name: str
    guest: str                           # the timed build
    blocks: int | None                   # sync points of the timed build (its console says)
    counting_guest: str                  # the build instructions were counted on
    counting_blocks: int | None
    translation: dict
    modes: dict[str, ModeMeasurement] = field(default_factory=dict)

    def wall(self, mode: str) -> float | None:
        m = self.modes.get(mode)
        return m.wall_s if m else None

    def ratio(self, a: str, b: str) -> float | None:
        x, y = self.wall(a), self.wall(b)
        return x / y if x and y else None

    @property
    def original_instructions(self) -> int | None:
        native = self.modes.get("native")
        return native.counted_instructions if native else None

    def exits_per_kinstr(self, mode: str) -> float | None:
        m, n = self.modes.get(mode), self.original_instructions
        return 1000 * m.counted_exits / n if m and m.counted_exits is not None and n else None


@dataclass(frozen=True)
class Figures:
    """What one run reports to the measurement (from a `RunResult`, or a timed child process's JSON)."""

    mode: str
    wall_s: float | None
    exit_status: int | None
    error: str | None
    console: str
    exits: dict[str, int]
    hypercalls: dict[str, int]
    sensitive_exits: dict[str, int]
    escapes: int
    instructions: int | None = None

    @classmethod
    def of(cls, mode: str, result: RunResult, wall_s: float | None = None) -> Figures:
        return cls(mode, wall_s, result.exit_status, result.error, result.console.decode("latin-1"),
                   dict(result.exits), dict(result.hypercalls), dict(result.sensitive_exits), len(result.escapes),
                   result.instructions)


def world_switches(mode: str, run: Figures | RunResult) -> dict[str, int]:
    """Exits of one run by class, counted as world switches (module docstring)."""
    deliveries = {k: run.exits[k] for k in DELIVERY_EXITS if run.exits.get(k)}
    if mode == "pv":
        return {f"hypercall {k}": v for k, v in run.hypercalls.items()} | deliveries
    if mode in ("fullvirt", "trap"):
        return {f"sensitive {k}": v for k, v in run.sensitive_exits.items()} | deliveries
    return dict(run.exits)


_BLOCKS = re.compile(r"BLOCKS=(\d+)")


def _blocks(console: str) -> int | None:
    m = _BLOCKS.search(console)
    return int(m.group(1)) if m else None


def _timed(image: Path, mode: str, timeout_s: float | None) -> Figures | None:
    """One untraced run in a fresh process, timed around `run` alone; None if stopped at ``timeout_s``.

    The limit is the parent's: ``Limits.timeout_s`` would make Unicorn start a watchdog thread at every
    emulation slice (~0.2 ms), a cost that falls on the modes whose exits end slices more often."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        proc = subprocess.run([sys.executable, "-m", "pvtranslate.measure", str(image), mode], capture_output=True,
                              text=True, timeout=timeout_s, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode:
        raise RuntimeError(f"timed run of {image} ({mode}) failed: {proc.stderr.strip()[-400:]}")
    return Figures(**json.loads(proc.stdout))


def _measure_one(name: str, options: MeasureOptions, workdir: Path, log) -> WorkloadMeasurement:
    timed = options.samples / (f"workload_{name}_short.elf" if options.short else f"workload_{name}.elf")
    counting = options.samples / f"workload_{name}_short.elf"
    images = {}
    translation = {}
    for guest in {timed, counting}:
        t = translate(guest, TranslateOptions(output=workdir / (guest.stem + ".pv.elf")))
        images[guest] = t.output_path
        if guest == timed:
            s = t.statistics()
            translation = {k: s[k] for k in ("seconds", "sites", "instructions", "input_bytes", "output_bytes",
                                             "growth_bytes", "by_tactic")}

    def image(guest: Path, mode: str) -> Path:
        return images[guest] if mode == "pv" else guest

    # fullvirt runs the original's very instruction stream: its count is native's, its exits need no counter
    counted: dict[str, Figures] = {}
    if options.count_instructions:
        for mode in options.modes:
            count = mode in COUNTED_MODES
            log(f"{name}: {'counting instructions' if count else 'counting exits'}, {mode} ({counting.name})")
            counted[mode] = Figures.of(mode, run(image(counting, mode), mode=mode,
                                                 limits=Limits(max_instructions=COUNT_ALL if count else None)))
    walls: dict[str, list[float]] = {m: [] for m in options.modes}
    results: dict[str, Figures] = {}
    timed_out: set[str] = set()
    for rep in range(options.runs):
        k = rep % len(options.modes)
        for mode in options.modes[k:] + options.modes[:k]:          # interleaved, in a rotating order
            if rep and (mode in timed_out or walls[mode][0] > options.repeat_below_s):
                continue
            figures = _timed(image(timed, mode), mode, options.timeout_s)
            if figures is None:
                timed_out.add(mode)
                walls[mode].append(options.timeout_s)
                log(f"{name}: {mode} run {rep + 1}: stopped at {options.timeout_s:g} s")
                continue
            log(f"{name}: {mode} run {rep + 1}: {figures.wall_s:.2f} s, status {figures.exit_status}")
            results.setdefault(mode, figures)
            walls[mode].append(figures.wall_s)
    modes = {}
    for mode in options.modes:
        r = results.get(mode)
        by_class = world_switches(mode, r) if r else {}
        c = counted.get(mode)
        modes[mode] = ModeMeasurement(
            mode, statistics.median(walls[mode]) if walls[mode] else None, tuple(round(w, 3) for w in walls[mode]),
            mode in timed_out, r.exit_status if r else None, sum(by_class.values()) if r else None, by_class,
            c.instructions if c else None, sum(world_switches(mode, c).values()) if c else None,
            r.escapes if r else 0)
    consoles = [f.console for f in results.values()]
    return WorkloadMeasurement(name, str(timed), _blocks(consoles[0]) if consoles else None, str(counting),
                               _blocks(next(iter(counted.values())).console) if counted else None, translation, modes)


def measure(options: MeasureOptions = MeasureOptions(), log=lambda _msg: None) -> tuple[WorkloadMeasurement, ...]:
    """Measure every workload of ``options`` (see the module docstring); ``log`` gets progress lines."""
    with tempfile.TemporaryDirectory(prefix="pvtranslate-measure-") as tmp:
        return tuple(_measure_one(name, options, Path(tmp), log) for name in options.workloads)


# --------------------------------------------------------------------------- reporting


def _fmt(v, spec: str = ".2f", lower: bool = False) -> str:
    return "-" if v is None else (">" if lower else "") + format(v, spec)


def format_table(results: tuple[WorkloadMeasurement, ...]) -> str:
    """A Markdown table: wall times and ratios, exits, instructions, translation."""
    head = ("| workload | sync every (instr) | wall s native | fullvirt | pv | pv/native | fullvirt/pv "
            "| exits native | fullvirt | pv | pv/fullvirt exits | exits/kinstr fullvirt | pv "
            "| pv instr overhead | sites | size growth |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for w in results:
        m = w.modes
        n = w.original_instructions
        per_sync = n / w.counting_blocks if n and w.counting_blocks else None
        def wall(mode):
            return _fmt(w.wall(mode), ".2f", m[mode].timed_out) if mode in m else "-"
        def exits(mode):
            return f"{m[mode].exits:,}" if mode in m and m[mode].exits is not None else "-"
        pv_nat = w.ratio("pv", "native")
        fv_pv = w.ratio("fullvirt", "pv")
        lower_pv = "pv" in m and m["pv"].timed_out
        exit_ratio = (m["pv"].counted_exits / m["fullvirt"].counted_exits
                      if "pv" in m and "fullvirt" in m and m["pv"].counted_exits and m["fullvirt"].counted_exits
                      else None)
        overhead = (m["pv"].counted_instructions / n - 1 if "pv" in m and m["pv"].counted_instructions and n
                    else None)
        lines.append(
            f"| {w.name} | {_fmt(per_sync, ',.0f')} | {wall('native')} | {wall('fullvirt')} | {wall('pv')} "
            f"| {_fmt(pv_nat, '.2f', lower_pv)} | {'<' if lower_pv and fv_pv else ''}{_fmt(fv_pv, '.2f')} "
            f"| {exits('native')} | {exits('fullvirt')} | {exits('pv')} "
            f"| {'1/' + format(1 / exit_ratio, ',.0f') if exit_ratio else '-'} "
            f"| {_fmt(w.exits_per_kinstr('fullvirt'), '.3f')} | {_fmt(w.exits_per_kinstr('pv'), '.3f')} "
            f"| {_fmt(overhead * 100 if overhead is not None else None, '+.1f')}% "
            f"| {w.translation.get('sites', '-')} | +{w.translation.get('growth_bytes', 0):,} B |")
    return "\n".join(lines)


def to_json(results: tuple[WorkloadMeasurement, ...], options: MeasureOptions) -> dict:
    opts = asdict(options) | {"samples": str(options.samples)}
    return {"options": opts, "workloads": [asdict(w) for w in results]}


def plot(results: tuple[WorkloadMeasurement, ...], path: str | Path) -> None:
    """The density sweep (slowdown against native over sync-point density) and every workload's ratios."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_name = {w.name: w for w in results}
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    sweep = [by_name[n] for n in DENSITY_SWEEP if n in by_name]
    for mode, style in (("fullvirt", "o-"), ("pv", "s-")):
        xs, ys = [], []
        for w in sweep:
            x, y = w.exits_per_kinstr("fullvirt"), w.ratio(mode, "native")
            if x and y:
                xs.append(x)
                ys.append(y)
        if xs:
            left.plot(xs, ys, style, label=mode)
            for x, y, w in zip(xs, ys, [w for w in sweep if w.exits_per_kinstr("fullvirt") and w.ratio(mode, "native")]):
                left.annotate(w.name + (" (>)" if w.modes[mode].timed_out else ""), (x, y),
                              textcoords="offset points", xytext=(4, 4), fontsize=8)
    left.axhline(1.0, color="grey", lw=0.8)
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("sensitive instructions per 1000 instructions (fullvirt exits/kinstr)")
    left.set_ylabel("wall time / native")
    left.set_title("density sweep: sparse, medium, dense")
    if any(not line.get_label().startswith("_") for line in left.get_lines()):
        left.legend()
    names = [w.name for w in results]
    ratios = [w.ratio("fullvirt", "pv") or 0 for w in results]
    bars = right.bar(names, ratios, color=["tab:green" if r > 1 else "tab:red" for r in ratios])
    for bar, w in zip(bars, results):
        if "pv" in w.modes and w.modes["pv"].timed_out:
            bar.set_hatch("//")
    right.axhline(1.0, color="grey", lw=0.8)
    right.set_yscale("log")
    right.set_ylabel("fullvirt time / pv time  (> 1: pv wins)")
    right.set_title("where pv wins (hatched: pv run stopped at the time limit)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_json(results, options: MeasureOptions, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_json(results, options), indent=2) + "\n")


def _run_one(image: str, mode: str) -> None:
    """The timed child: one run of ``image`` in ``mode``, its figures as JSON on stdout."""
    started = time.perf_counter()
    result = run(image, mode=mode)
    wall = time.perf_counter() - started
    print(json.dumps(asdict(Figures.of(mode, result, round(wall, 4)))))


if __name__ == "__main__":
    _run_one(*sys.argv[1:3])
