#!/usr/bin/env python3
"""PV against full virtualization on the workload samples: wall time per mode (median of interleaved runs),
exits by class, exits per 1000 instructions, translation cost; a Markdown table, JSON and a PNG plot.

Usage: tools/measure.py [--short] [--runs N] [--timeout S] [--repeat-below S] [--workloads a,b]
                        [--modes native,fullvirt,pv] [--no-count] [--json OUT] [--plot OUT.png]

The full-size workloads take about half an hour (fullvirt's dense runs and every mode's port-I/O runs
take minutes each); --short times the `_short` builds instead (a smoke test). See pvtranslate/measure.py for what is measured.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pvtranslate.measure import MeasureOptions, format_table, measure, plot, save_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--short", action="store_true", help="time the _short builds (a smoke test)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per mode, interleaved (default 3)")
    ap.add_argument("--timeout", type=float, default=300.0, help="stop a run after S seconds (default 300)")
    ap.add_argument("--repeat-below", type=float, default=60.0,
                    help="repeat only runs shorter than S seconds (default 60)")
    ap.add_argument("--workloads", default=",".join(MeasureOptions.workloads))
    ap.add_argument("--modes", default=",".join(MeasureOptions.modes))
    ap.add_argument("--no-count", action="store_true", help="skip the instruction-counting runs")
    ap.add_argument("--json", type=Path, help="write every measurement as JSON")
    ap.add_argument("--plot", type=Path, help="write the density-sweep plot (PNG)")
    args = ap.parse_args(argv)
    options = MeasureOptions(workloads=tuple(args.workloads.split(",")), modes=tuple(args.modes.split(",")),
                             short=args.short, runs=args.runs, repeat_below_s=args.repeat_below,
                             timeout_s=args.timeout, count_instructions=not args.no_count)
    started = time.monotonic()
    results = measure(options, log=lambda msg: print(f"[{time.monotonic() - started:7.1f} s] {msg}",
                                                     file=sys.stderr, flush=True))
    print(format_table(results))
    if args.json:
        save_json(results, options, args.json)
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
