"""Equivalence of a guest and its translation: owns running both, comparing their canonical traces, the
verdict with the first divergence explained, and the run measurements (``pvtranslate GUEST --verify``).

``verify(guest)`` translates ``guest``, runs the original in native and fullvirt mode and the
translation in pv mode, each with a ``vmm.trace.Recorder``, and compares every original run with
the pv run (DESIGN.md, "Equivalence"): console bytes, exit status and guest time at exit, the
ordered canonical events (port I/O, MMIO, interrupt and exception deliveries, hlt: see
``vmm.trace``), the disk image, and guest memory at exit.

Memory is compared page by page after these rules, each derived from the two ELF images, the
paging structures or the stack pointers, never from a particular guest:

1. *The translator's pages* — every address the translation loads and the original does not
   (the PT_LOAD that holds the shared page, trampolines and site table, and any segment the ELF
   writer added, e.g. relocated program headers) — are left out on both sides.
2. *Patched bytes* — where the translated image's bytes differ from the original's inside the
   original's segments (jumps to trampolines, traps, their padding) — are mapped back: on the pv
   side, a byte still holding the translation's value counts as the original's. A byte the guest
   changed there is compared as it is.
3. *Accessed and dirty bits* (bits 5 and 6) of every paging-structure entry reachable from CR3 in
   either run are masked: the CPU sets them as a side effect of every access, and the translation
   accesses its own pages (fetching trampolines) and stack slots the original does not.
4. *Stacks.* A trampoline saves registers just below the guest's stack pointer, which the kernel
   ABI (no red zone) leaves dead. But such stale bytes do not stay below the final stack pointer:
   the guest later reserves stack it never writes (frame padding: double_fault64's ``kmain`` does
   ``sub rsp, 8`` over a slot a trampoline of ``_start`` wrote), so no stack pointer bounds them.
   Every stack the guest used is therefore left out whole: the ELF data symbol holding a stack
   pointer (a sized object, or a label up to the next symbol) — the final one of either run
   (mapped back through the site table: a guest stopped in a trampoline has its saves popped), the
   TSS's ring and IST pointers at exit, the one the guest had at any interrupt or exception
   delivery, and the one it had after each exit to the VMM (an ``iret`` hypercall onto a stack no
   later exit or delivery sees: guestgen's iret16 case). Without a symbol, the 4 KiB page just
   below that pointer. What the stacks held is
   still checked where it mattered: it flows into the events, the console and the rest of memory.

The machine configuration is the same for all runs, including the kernel name the multiboot loader
reports to the guest (``MachineConfig.kernel_name``: the original's path), and each run gets its own
copy of the disk image.
"""
from __future__ import annotations

import bisect
import os
import shutil
import tempfile
import time
from typing import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from vmm.elf import ElfImage, parse_elf
from vmm.machine import MachineConfig
from vmm.run import RunResult, run
from vmm.trace import WIDTH, Event, EventKind, MemoryImage, Recorder
from vmm.vcpu import Limits

from .translate import TranslateOptions, Translation, translate

__all__ = ["VerifyOptions", "RunSummary", "Divergence", "Verdict", "MemoryRules", "verify", "verify_translation"]

PAGE = 0x1000
AD_BITS = 0x60                 # accessed (5) and dirty (6) in the low byte of a paging entry
REFERENCE_MODES = ("native", "fullvirt")


@dataclass(frozen=True)
class VerifyOptions:
    """What `verify` runs and how; one frozen record (STYLE)."""

    references: tuple[str, ...] = REFERENCE_MODES     # modes the original runs in, each compared with pv
    config: MachineConfig = MachineConfig()            # boot inputs of every run (disk image copied per run)
    limits: Limits = Limits()
    output: str | os.PathLike | None = None            # the translation (default: a temporary file)
    context_events: int = 5                            # events shown before a divergence


@dataclass(frozen=True)
class RunSummary:
    """One run's measurements (tracing on, so wall times include the recorder's cost)."""

    mode: str
    image: str
    wall_s: float
    exit_status: int | None
    error: str | None
    events: int
    guest_time_ns: int
    exits: dict[str, int]
    hypercalls: dict[str, int] = field(default_factory=dict)
    sensitive_exits: dict[str, int] = field(default_factory=dict)
    escapes: tuple[str, ...] = ()

    @classmethod
    def of(cls, mode: str, image: Path, wall_s: float, result: RunResult, events: int) -> RunSummary:
        return cls(mode, str(image), round(wall_s, 3), result.exit_status, result.error, events,
                   result.guest_time_ns, dict(result.exits), dict(result.hypercalls), dict(result.sensitive_exits),
                   tuple(e.describe() for e in result.escapes))


@dataclass(frozen=True)
class Divergence:
    """The first difference between an original run (``reference``) and the pv run."""

    reference: str                 # the original's mode
    aspect: str                    # events | console | exit | disk | memory
    summary: str                   # one line: what the original did, what the translation did
    details: tuple[str, ...] = ()  # context: address, symbol, patched site and lowering, events before
    index: int | None = None       # events: the index of the first divergent event
    guest_va: int | None = None    # the original-code address (events) or guest-physical address (memory)
    site_va: int | None = None     # the patched site that address is at or inside (its trampoline's site)
    also: tuple[str, ...] = ()     # the other aspects that differ too

    def format(self) -> str:
        head = f"pv vs {self.reference}: {self.aspect} diverge: {self.summary}"
        tail = [f"    also different: {', '.join(self.also)}"] if self.also else []
        return "\n".join([head, *(f"    {line}" for line in self.details), *tail])


@dataclass(frozen=True)
class Verdict:
    """The outcome of `verify`: equivalent or not, the first divergence per reference, the measurements."""

    guest: str
    translated: str
    runs: tuple[RunSummary, ...]
    divergences: tuple[Divergence, ...]
    translation: dict = field(default_factory=dict)     # Translation.statistics(), when verify translated

    @property
    def equivalent(self) -> bool:
        return not self.divergences

    def run(self, mode: str) -> RunSummary:
        return next(r for r in self.runs if r.mode == mode)

    def format(self) -> str:
        refs = [r.mode for r in self.runs if r.mode != "pv"]
        state = ("EQUIVALENT: pv = " + " = ".join(refs)) if self.equivalent else "DIVERGES"
        lines = [f"verify {self.guest} -> {self.translated}: {state}"]
        t = self.translation
        if t:
            lines.append(f"  translation: {t['sites']} sites in {t['instructions']} instructions, {t['seconds']} s, "
                         f"{t.get('input_bytes', '?')} -> {t.get('output_bytes', '?')} bytes "
                         f"(+{t.get('growth_bytes', '?')})")
        lines.append(f"  {'mode':<9}{'wall s':>8} {'status':>7} {'events':>9}  exits; hypercalls (pv) or "
                     "sensitive exits (fullvirt)")
        for r in self.runs:
            exits = ", ".join(f"{k} {v}" for k, v in sorted(r.exits.items())) or "-"
            extra = r.hypercalls if r.mode == "pv" else r.sensitive_exits
            extra_text = "; " + ", ".join(f"{k} {v}" for k, v in sorted(extra.items())) if extra else ""
            status = "-" if r.exit_status is None else str(r.exit_status)
            lines.append(f"  {r.mode:<9}{r.wall_s:>8.2f} {status:>7} {r.events:>9}  {exits}{extra_text}")
            if r.error:
                lines.append(f"  {'':<9}error: {r.error}")
            if r.escapes:
                lines.append(f"  {'':<9}{len(r.escapes)} translation escape(s): " + "; ".join(r.escapes[:4]))
        for ref in refs:
            d = next((d for d in self.divergences if d.reference == ref), None)
            lines.append("  " + (d.format().replace("\n", "\n  ") if d else f"pv vs {ref}: equal"))
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"guest": self.guest, "translated": self.translated, "equivalent": self.equivalent,
                "translation": self.translation,
                "runs": [r.__dict__ for r in self.runs],
                "divergences": [d.__dict__ for d in self.divergences]}


# --------------------------------------------------------------------------- the memory rules


@dataclass(frozen=True)
class MemoryRules:
    """Rules 1, 2 and 4 of the module docstring, derived from the original and translated ELF images."""

    excluded: tuple[tuple[int, int], ...]          # guest-physical [lo, hi) only the translation loads
    patched: dict[int, tuple[int, int]]            # guest-physical address -> (original byte, translated byte)
    objects: tuple[tuple[int, int, str], ...]      # data symbols of the original: [va, end) and name, by va
    segments: tuple[tuple[int, int, int], ...]     # the original's PT_LOADs: (vaddr, paddr, mem_size)

    @classmethod
    def of(cls, original: ElfImage, translated: ElfImage) -> MemoryRules:
        spans = sorted((s.paddr, s.paddr + s.mem_size) for s in original.segments)
        excluded = []
        for seg in translated.segments:
            lo, hi = seg.paddr, seg.paddr + seg.mem_size
            for a, b in spans:                         # the parts of [lo, hi) no original segment loads
                if b <= lo or a >= hi:
                    continue
                if a > lo:
                    excluded.append((lo, a))
                lo = max(lo, b)
            if lo < hi:
                excluded.append((lo, hi))
        patched = {}
        for seg in original.segments:
            new = next((t for t in translated.segments if t.vaddr <= seg.vaddr < t.vaddr + t.file_size), None)
            old_bytes = original.data[seg.file_off:seg.file_off + seg.file_size]
            if new is None:
                continue
            off = new.file_off + seg.vaddr - new.vaddr
            new_bytes = translated.data[off:off + seg.file_size]
            if new_bytes == old_bytes:
                continue
            for i, (a, b) in enumerate(zip(old_bytes, new_bytes)):
                if a != b:
                    patched[seg.paddr + i] = (a, b)
        segments = tuple((s.vaddr, s.paddr, s.mem_size) for s in original.segments)
        return cls(tuple(sorted(excluded)), patched, _data_objects(original, segments), segments)

    def physical(self, va: int) -> int | None:
        for vaddr, paddr, size in self.segments:
            if vaddr <= va < vaddr + size:
                return paddr + va - vaddr
        return None

    def virtual(self, pa: int) -> int | None:
        for vaddr, paddr, size in self.segments:
            if paddr <= pa < paddr + size:
                return vaddr + pa - paddr
        return None

    def object_at(self, va: int) -> tuple[int, int, str] | None:
        """The innermost symbol whose extent holds ``va`` (the nearest start wins)."""
        k = bisect.bisect_right(self.objects, (va, 1 << 64, "")) - 1
        for lo, hi, name in reversed(self.objects[max(0, k - 64):k + 1]):
            if lo <= va < hi:
                return lo, hi, name
        return None

    def stacks(self, runs: list[tuple[MemoryImage, dict[int, tuple[int, int]], Iterable[int]]]) -> list[tuple[int, int, str]]:
        """Rule 4: guest-physical [lo, hi) of every stack a stack pointer of either run is in, with its name."""
        found: dict[tuple[int, int], str] = {}
        for memory, delivery_sp, slice_sp in runs:
            for sp in (memory.sp, *memory.tss_stack_pointers, *(sp for sp, _word in delivery_sp.values()), *slice_sp):
                obj = self.object_at(sp - 1)
                lo, hi, name = obj if obj is not None else ((sp - 1) & ~(PAGE - 1), ((sp - 1) | (PAGE - 1)) + 1,
                                                            "stack page")
                pa_lo, pa_hi = self.physical(lo), self.physical(hi - 1)
                if pa_lo is None or pa_hi is None:
                    pa_lo, pa_hi = lo, hi - 1             # outside the image: paging off or identity mapped
                found[(pa_lo, pa_hi + 1)] = name
        return sorted((lo, hi, name) for (lo, hi), name in found.items())


def _data_objects(image: ElfImage, segments) -> tuple[tuple[int, int, str], ...]:
    """Symbols as [va, end): sized ones by their size, labels up to the next symbol or their segment's end."""
    syms = sorted(s for s in ((s.value, s.size, s.name) for s in image.symbols))
    starts = sorted({v for v, _s, _n in syms})
    out = []
    for value, size, name in syms:
        seg_end = next((v + n for v, _p, n in segments if v <= value < v + n), None)
        if seg_end is None:
            continue
        if size:
            end = value + size
        else:
            k = bisect.bisect_right(starts, value)
            end = min(starts[k], seg_end) if k < len(starts) else seg_end
        if end > value:
            out.append((value, end, name))
    return tuple(sorted(out))


def canonical_memory(memory: MemoryImage, rules: MemoryRules, stacks: list[tuple[int, int, str]],
                     entries: frozenset[int], translated: bool) -> dict[int, bytes]:
    """The pages of ``memory`` after the rules (zero pages dropped)."""
    zeroed: dict[int, list[tuple[int, int]]] = {}      # page -> [(lo, hi) offsets] cleared (rules 1 and 4)
    for lo, hi in [*rules.excluded, *((lo, hi) for lo, hi, _name in stacks)]:
        for base in range(lo & ~(PAGE - 1), hi, PAGE):
            zeroed.setdefault(base, []).append((max(lo, base) - base, min(hi, base + PAGE) - base))
    masked: dict[int, list[int]] = {}                  # page -> offsets of paging entries (rule 3)
    for pa in entries:
        masked.setdefault(pa & ~(PAGE - 1), []).append(pa & (PAGE - 1))
    restored: dict[int, list[tuple[int, int]]] = {}    # page -> [(offset, original byte)] (rule 2)
    if translated:
        for pa, (old, new) in rules.patched.items():
            page = memory.pages.get(pa & ~(PAGE - 1))
            if page is not None and page[pa & (PAGE - 1)] == new:
                restored.setdefault(pa & ~(PAGE - 1), []).append((pa & (PAGE - 1), old))
    out = {}
    for base, data in memory.pages.items():
        if base in zeroed or base in masked or base in restored:
            buf = bytearray(data)
            for off, old in restored.get(base, ()):
                buf[off] = old
            for off in masked.get(base, ()):
                buf[off] &= ~AD_BITS
            for lo, hi in zeroed.get(base, ()):
                buf[lo:hi] = bytes(hi - lo)
            data = bytes(buf)
        if any(data):
            out[base] = data
    return out


# --------------------------------------------------------------------------- explaining a divergence


class _Explainer:
    """Symbols of the original and the translation's site records, to say where an address is."""

    def __init__(self, original: ElfImage, translation: Translation | None) -> None:
        self.original = original
        self.records = tuple(translation.emitted.sites) if translation and translation.emitted else ()
        self.planned = {s.va: s for s in translation.plan.sites} if translation else {}
        self._by_tramp = sorted((r.trampoline_range[0], i) for i, r in enumerate(self.records) if r.trampoline_range)

    def symbol(self, va: int | None) -> str:
        return "-" if va is None else self.original.symbolize(va)

    def where(self, va: int | None, raw: int | None) -> str:
        if va is None and raw is None:
            return ""
        text = f" at {va:#x} ({self.symbol(va)})" if va is not None else ""
        if raw is not None and raw != va:
            text += f" [executed at {raw:#x}]"
        return text

    def site(self, va: int | None, raw: int | None, after: bool = False) -> tuple[int | None, list[str]]:
        """The patched site ``va`` (original) or ``raw`` (pv, executed) is at or inside, and how it was lowered.

        ``after``: ``raw`` is where the guest stopped after the instruction that did the event (a
        hypercall's return address), so the instruction is the one before it."""
        record, position = None, None
        probe = raw - 1 if raw is not None and after else raw
        if probe is not None and self._by_tramp:
            k = bisect.bisect_right(self._by_tramp, (probe, len(self.records))) - 1
            if k >= 0:
                r = self.records[self._by_tramp[k][1]]
                if r.trampoline_range[0] <= probe < r.trampoline_range[1]:
                    record = r
                    entries = [e for e in r.pc_map if e.trampoline_va <= probe]
                    position = entries[-1] if entries else None
        if record is None and va is not None:
            record = next((r for r in self.records if r.va == va or (
                r.patch_range and r.patch_range[0] <= va < r.patch_range[1])), None)
        if record is None:
            return None, []
        planned = self.planned.get(record.va)
        text = f"`{planned.text}` ({planned.cls.name}, " if planned else f"{record.raw.hex()} ("
        patch = f", patch [{record.patch_range[0]:#x}, {record.patch_range[1]:#x})" if record.patch_range else ""
        tramp = (f", trampoline [{record.trampoline_range[0]:#x}, {record.trampoline_range[1]:#x})"
                 if record.trampoline_range else "")
        lines = [f"patched site {record.va:#x} {text}lowering {record.lowering}, tactic {record.tactic.name}"
                 f"{patch}{tramp})"]
        if planned is not None:
            lines.append("  lowering: " + "; ".join(str(s) for s in planned.steps))
            for d in planned.displaced:
                lines.append(f"  displaced {d.va:#x}: {d.text}" + (" (a site, lowered here)" if d.is_site else
                                                                   " (replayed)"))
        if position is not None:
            kind = position.kind.name
            target = self.planned.get(position.original_va)
            what = {"SITE": f"the lowering of site {position.original_va:#x}"
                            + (f" `{target.text}`" if target else ""),
                    "REPLAY": f"the replay of {position.original_va:#x}",
                    "BACK": f"the jump back to {position.original_va:#x}"}[kind]
            lines.append(f"  the translation was in {what} (trampoline {position.trampoline_va:#x}, "
                         f"at {raw:#x})")
        return record.va, lines


# --------------------------------------------------------------------------- comparing two runs


@dataclass
class _Observed:
    mode: str
    image: Path
    result: RunResult
    recorder: Recorder
    wall_s: float
    disk: bytes | None


def _first_difference(a, b) -> int | None:
    """Index of the first differing event of two recorders' rows (or where the shorter one ends)."""
    ea, eb = a.events, b.events
    if ea == eb:
        return None
    chunk = 4096 * WIDTH
    n = min(len(ea), len(eb))
    for start in range(0, n, chunk):
        end = min(start + chunk, n)
        if ea[start:end] != eb[start:end]:
            for i in range(start, end):
                if ea[i] != eb[i]:
                    return i // WIDTH
    return n // WIDTH


def _describe(ev: Event | None, explain: _Explainer) -> str:
    if ev is None:
        return "(no event: the trace ends)"
    return ev.describe() + explain.where(ev.va, ev.raw_va)


def _compare_events(ref: _Observed, pv: _Observed, explain: _Explainer, context: int) -> Divergence | None:
    i = _first_difference(ref.recorder, pv.recorder)
    if i is None:
        return None
    a = ref.recorder.event(i) if i < len(ref.recorder) else None
    b = pv.recorder.event(i) if i < len(pv.recorder) else None
    va = b.va if b is not None and b.va is not None else (a.va if a is not None else None)
    raw = b.raw_va if b is not None else None
    io = b is not None and b.kind in (EventKind.PIO_IN, EventKind.PIO_OUT)
    site_va, site_lines = explain.site(va, raw, after=io)
    if site_va is None and a is not None and a.va is not None and a.va != va:
        site_va, site_lines = explain.site(a.va, None)
    details = [f"{ref.mode}: {_describe(a, explain)}", f"pv: {_describe(b, explain)}"]
    if va is not None:
        details.append(f"guest address {va:#x}: {explain.symbol(va)}")
    details += site_lines
    if i:
        details.append("events just before (equal in both):")
        for k in range(max(0, i - context), i):
            e = pv.recorder.event(k)
            details.append(f"  {_describe(e, explain)}")
    summary = (f"first divergent event #{i} of {len(ref.recorder)} ({ref.mode}) / {len(pv.recorder)} (pv)"
               + (f", at {va:#x} {explain.symbol(va)}" if va is not None else ""))
    return Divergence(ref.mode, "events", summary, tuple(details), i, va, site_va)


def _compare_memory(ref: _Observed, pv: _Observed, rules: MemoryRules, explain: _Explainer) -> Divergence | None:
    mr, mp = ref.recorder.memory, pv.recorder.memory
    if mr is None or mp is None:
        return None
    stacks = rules.stacks([(mr, ref.recorder.delivery_sp, ref.recorder.slice_sp.values()),
                           (mp, pv.recorder.delivery_sp, pv.recorder.slice_sp.values())])
    entries = mr.paging_entries | mp.paging_entries
    a = canonical_memory(mr, rules, stacks, entries, translated=False)
    b = canonical_memory(mp, rules, stacks, entries, translated=True)
    if a == b:
        return None
    zero = bytes(PAGE)
    differing = sorted(base for base in set(a) | set(b) if a.get(base, zero) != b.get(base, zero))
    base = differing[0]
    pa_bytes, pb_bytes = a.get(base, zero), b.get(base, zero)
    off = next(i for i in range(PAGE) if pa_bytes[i] != pb_bytes[i])
    count = sum(sum(x != y for x, y in zip(a.get(p, zero), b.get(p, zero))) for p in differing)
    pa = base + off
    va = rules.virtual(pa)
    lo = off & ~15
    details = [f"{ref.mode}: {pa_bytes[lo:lo + 16].hex(' ')}  (from {base + lo:#x})",
               f"pv:{' ' * (len(ref.mode) - 2)} {pb_bytes[lo:lo + 16].hex(' ')}",
               f"{count} byte(s) differ in {len(differing)} page(s): "
               + ", ".join(f"{p:#x}" for p in differing[:8]) + (" ..." if len(differing) > 8 else "")]
    site_va, site_lines = explain.site(va, None)
    details += site_lines
    if stacks:
        details.append("stacks left out: " + ", ".join(f"{name} [{lo_:#x}, {hi:#x})" for lo_, hi, name in stacks))
    where = f"guest-physical {pa:#x}" + (f" ({explain.symbol(va)})" if va is not None else "")
    return Divergence(ref.mode, "memory", f"first differing byte at {where}", tuple(details), None, pa, site_va)


def compare(ref: _Observed, pv: _Observed, rules: MemoryRules, explain: _Explainer, context: int) -> Divergence | None:
    """The first divergence of the pv run from one original run, or None if they are equal."""
    found: list[Divergence] = []
    events = _compare_events(ref, pv, explain, context)
    if events:
        found.append(events)
    if ref.result.console != pv.result.console:
        n = next((i for i, (x, y) in enumerate(zip(ref.result.console, pv.result.console)) if x != y),
                 min(len(ref.result.console), len(pv.result.console)))
        found.append(Divergence(ref.mode, "console", f"console bytes differ from byte {n}: "
                                f"{ref.result.console[n:n + 40]!r} vs {pv.result.console[n:n + 40]!r}"))
    outcome = lambda r: (r.exit_status, r.error is None, r.guest_time_ns)   # noqa: E731
    if outcome(ref.result) != outcome(pv.result):
        found.append(Divergence(ref.mode, "exit", f"exit status {ref.result.exit_status} vs {pv.result.exit_status}, "
                                f"guest time {ref.result.guest_time_ns} vs {pv.result.guest_time_ns} ns; "
                                f"errors: {ref.result.error!r} vs {pv.result.error!r}"))
    if ref.disk != pv.disk:
        n = next((i for i, (x, y) in enumerate(zip(ref.disk or b"", pv.disk or b"")) if x != y), 0)
        found.append(Divergence(ref.mode, "disk", f"the disk images differ from byte {n} (sector {n // 512})"))
    memory = _compare_memory(ref, pv, rules, explain)
    if memory:
        found.append(memory)
    if not found:
        return None
    return replace(found[0], also=tuple(d.aspect for d in found[1:]))


# --------------------------------------------------------------------------- running


def _observe(image: Path, mode: str, options: VerifyOptions, workdir: Path) -> _Observed:
    config = options.config
    disk = None
    if config.disk_image is not None:
        disk = workdir / f"disk.{mode}.img"
        shutil.copyfile(config.disk_image, disk)
        config = replace(config, disk_image=str(disk))
    recorder = Recorder()
    started = time.perf_counter()
    result = run(image, config=config, limits=options.limits, mode=mode, recorder=recorder)
    wall = time.perf_counter() - started
    return _Observed(mode, image, result, recorder, wall, disk.read_bytes() if disk else None)


def _same_boot_inputs(config: MachineConfig, guest: Path, original: ElfImage, rules: MemoryRules) -> MachineConfig:
    """The multiboot command line names the original in every run, and boot modules go above both
    images (after the kernel, the loader's default, would move them in the larger translation)."""
    end = max([s.paddr + s.mem_size for s in original.segments] + [hi for _lo, hi in rules.excluded])
    return replace(config, kernel_name=config.kernel_name or str(guest),
                   modules_at=config.modules_at if config.modules_at is not None else (end + PAGE - 1) & ~(PAGE - 1))


def verify_translation(guest: str | os.PathLike, translated: str | os.PathLike,
                       translation: Translation | None = None, options: VerifyOptions = VerifyOptions()) -> Verdict:
    """Run ``guest`` in the reference modes and ``translated`` in pv mode, and compare them.

    ``translation`` (what `translate` returned for it) lets the report name patched sites and their
    lowerings; without it a divergence is explained by address and symbol only."""
    guest, translated = Path(guest), Path(translated)
    original_image = parse_elf(guest.read_bytes(), str(guest))
    rules = MemoryRules.of(original_image, parse_elf(translated.read_bytes(), str(translated)))
    explain = _Explainer(original_image, translation)
    options = replace(options, config=_same_boot_inputs(options.config, guest, original_image, rules))
    with tempfile.TemporaryDirectory(prefix="pvtranslate-verify-") as tmp:
        pv = _observe(translated, "pv", options, Path(tmp))
        observed = [_observe(guest, mode, options, Path(tmp)) for mode in options.references]
    divergences = tuple(d for d in (compare(ref, pv, rules, explain, options.context_events) for ref in observed) if d)
    runs = tuple(RunSummary.of(o.mode, o.image, o.wall_s, o.result, len(o.recorder)) for o in (*observed, pv))
    stats = translation.statistics() if translation is not None else {}
    return Verdict(str(guest), str(translated), runs, divergences, stats)


def verify(guest: str | os.PathLike, options: VerifyOptions = VerifyOptions()) -> Verdict:
    """Translate ``guest`` and verify the translation against it (the module docstring says how)."""
    if options.output is not None:
        translation = translate(guest, TranslateOptions(output=options.output))
        return verify_translation(guest, translation.output_path, translation, options)
    with tempfile.TemporaryDirectory(prefix="pvtranslate-") as tmp:
        out = Path(tmp) / (Path(guest).stem + ".pv.elf")
        translation = translate(guest, TranslateOptions(output=out))
        return verify_translation(guest, out, translation, options)

