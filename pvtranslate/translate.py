"""The library entry point: load, decode, plan and emit one guest kernel, with statistics."""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .decode import Decoded, ModeRange, decode
from .emit import EmitOptions, EmitResult, emit
from .image import load_image
from .plan import Plan, PlanOptions, symbol_boundaries_of, plan


@dataclass(frozen=True)
class TranslateOptions:
    """Everything `translate` takes besides the input; one frozen record (STYLE)."""

    output: str | os.PathLike | None = None    # None: GUEST.pv.elf beside the input; ignored if plan_only
    plan_only: bool = False                      # stop after planning: nothing is written
    mode_map: tuple[ModeRange, ...] = ()
    plan_options: PlanOptions = field(default_factory=PlanOptions)
    progress: bool = False                       # a progress bar on stderr for large inputs (interactive only)


@dataclass(frozen=True)
class Translation:
    """What a translation produced: the decoded sites, the plan, the output and the statistics."""

    decoded: Decoded
    plan: Plan
    emitted: EmitResult | None
    output_path: Path | None
    seconds: float

    @property
    def output_bytes(self) -> bytes | None:
        return self.emitted.output if self.emitted else None

    def statistics(self) -> dict:
        stats = {
            "instructions": self.decoded.instruction_count,
            "sites": len(self.plan.sites),
            "by_class": {k.name: v for k, v in sorted(self.plan.by_class.items(), key=lambda kv: kv[0].name)},
            "by_tactic": {k.name: v for k, v in self.plan.by_tactic.items()},
            "trap_fallback_share": round(self.plan.trap_share, 4),
            "seconds": round(self.seconds, 3),
        }
        if self.emitted:
            stats |= {"input_bytes": self.emitted.input_size, "output_bytes": self.emitted.output_size,
                      "growth_bytes": self.emitted.growth, "output": str(self.output_path)}
        return stats


PROGRESS_MIN_CODE_BYTES = 1 << 20  # smaller inputs translate in well under a second: no bar


@contextlib.contextmanager
def _progress_bar(wanted: bool, code_bytes: int, name: str):
    """A tqdm bar over the code bytes decoded, on stderr when it is a terminal; else None."""
    if not wanted or code_bytes < PROGRESS_MIN_CODE_BYTES:
        yield None
        return
    from tqdm import tqdm
    with tqdm(total=code_bytes, unit="B", unit_scale=True, desc=f"decoding {name}", disable=None,
              leave=False) as bar:
        yield bar


def default_output(guest: str | os.PathLike) -> Path:
    path = Path(guest)
    return path.with_name(path.stem + ".pv" + (path.suffix or ".elf"))


def translate(guest: str | os.PathLike, options: TranslateOptions = TranslateOptions()) -> Translation:
    """Translate `guest`; raises a `PvTranslateError` subclass (with a hint) on bad input."""
    started = time.perf_counter()
    image = load_image(guest)
    code_bytes = sum(len(r.data) for r in image.code)
    with _progress_bar(options.progress, code_bytes, Path(guest).name) as bar:
        decoded = decode(image, options.mode_map, bar.update if bar else None)
    the_plan = plan(decoded, options.plan_options, symbol_boundaries_of(image.symbols))
    emitted, out = None, None
    if not options.plan_only:
        out = Path(options.output) if options.output else default_output(guest)
        emitted = emit(guest, the_plan, EmitOptions(output_path=out))
    return Translation(decoded, the_plan, emitted, out, time.perf_counter() - started)
