"""The `pvtranslate` command: `pvtranslate GUEST.elf [-o OUT] [--json REPORT] [--plan] [--mode-map ...] [--verify]`."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

from . import PvTranslateError
from .decode import ModeRange
from .translate import TranslateOptions, default_output, translate

EXIT_DIVERGES = 1            # --verify: the translation does not behave as the original
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 70
EXIT_BROKEN_PIPE = 141       # the reader of stdout left early (`| head`): as a process killed by SIGPIPE


def parse_mode_range(text: str) -> ModeRange:
    try:
        span, bits = text.split(":")
        start, end = (int(v, 16) for v in span.split("-"))
        mode = int(bits)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write START-END:BITS in hex, e.g. 100000-100200:32") from None
    if mode not in (16, 32, 64) or end <= start:
        raise argparse.ArgumentTypeError(f"{text!r}: BITS is 16, 32 or 64 and END must be above START")
    return ModeRange(start, end, mode)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pvtranslate", description="Paravirtualize an x86 guest kernel ELF: "
                                 "every sensitive instruction becomes a hypercall or a shared-page access. "
                                 "`pvtranslate fuzz --help`: the differential fuzz campaign.")
    ap.add_argument("guest", help="guest kernel ELF (i386 or x86-64)")
    ap.add_argument("-o", "--output", help="translated ELF (default: GUEST.pv.elf beside the input)")
    ap.add_argument("--json", metavar="REPORT", help="write every site and the statistics as JSON")
    ap.add_argument("--plan", action="store_true", help="print the plan (site, class, tactic) and write nothing")
    ap.add_argument("--mode-map", action="append", type=parse_mode_range, default=[], metavar="START-END:BITS",
                    help="force the code mode of an address range (repeatable), e.g. 100000-100200:32")
    ap.add_argument("--verify", action="store_true",
                    help="then run the original (native, fullvirt) and the translation (pv) on the VMM, compare "
                         "their canonical traces and print the verdict and measurements; exit status 1 if they "
                         "diverge")
    return ap


def _write_json_atomically(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2)
            out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["fuzz"]:                  # `pvtranslate fuzz ...`: the fuzz campaign (a guest named fuzz: ./fuzz)
        from .fuzz import main as fuzz_main
        return fuzz_main(argv[1:])
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        # LIEF warns about every enum value it does not know (an OS-specific p_type): not the user's concern
        warnings.filterwarnings("ignore", message=r".* is not a valid [A-Z_]+\.?$", category=RuntimeWarning)
        try:
            return _run(args)
        except BrokenPipeError:
            # files are already complete (written atomically); only the printout was cut short
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            return EXIT_BROKEN_PIPE


def _run(args: argparse.Namespace) -> int:
    if args.plan and args.verify:
        print("pvtranslate: error: --plan writes no translation, so there is nothing to --verify; drop one of them",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    options = TranslateOptions(output=args.output, plan_only=args.plan, mode_map=tuple(args.mode_map),
                               progress=True)
    unwritable = _unwritable_output(args)
    if unwritable:
        print(f"pvtranslate: error: {unwritable}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        result = translate(args.guest, options)
        if args.json:
            report = {"guest": args.guest, "statistics": result.statistics(),
                      "sites": [{"va": f"{s.va:#x}", "bytes": s.raw.hex(), "text": s.text, "entry": s.entry_name,
                                 "class": s.cls.name, "lowering": s.lowering.name, "tactic": s.tactic.name}
                                for s in result.plan.sites]}
            _write_json_atomically(Path(args.json), report)
    except PvTranslateError as exc:
        print(f"pvtranslate: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"pvtranslate: error: {exc.filename or args.guest}: {exc.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:              # a bug of ours: say so, without a traceback, and write nothing
        print(f"pvtranslate: internal error: {type(exc).__name__}: {exc} (please report it with the input)",
              file=sys.stderr)
        return EXIT_INTERNAL
    if args.plan:
        print(result.plan.format())
        return 0
    stats = result.statistics()
    print(f"{args.guest} -> {stats['output']}: {stats['sites']} sites in {stats['instructions']} instructions, "
          f"{stats['seconds']} s")
    print("  by class:  " + ", ".join(f"{k} {v}" for k, v in stats["by_class"].items()))
    print("  by tactic: " + ", ".join(f"{k} {v}" for k, v in stats["by_tactic"].items() if v))
    print(f"  trap fallback: {100 * stats['trap_fallback_share']:.1f}%; size {stats['input_bytes']} -> "
          f"{stats['output_bytes']} bytes (+{stats['growth_bytes']})")
    return _verify(args.guest, result) if args.verify else 0


def _unwritable_output(args: argparse.Namespace) -> str | None:
    """Why an output path (the translation, the --json report) cannot be written, checked before any work,
    so that a failure never leaves the translation behind without its report; None if both can be."""
    outputs = [Path(args.json)] if args.json else []
    if args.output and not args.plan:
        outputs.append(Path(args.output))
    elif not args.plan and Path(args.guest).exists():      # a missing input is the loader's to report
        outputs.append(default_output(args.guest))
    for out in outputs:
        if out.is_dir():
            return f"{out}: is a directory; hint: give the output a file name"
        if not out.absolute().parent.is_dir():
            return f"{out}: directory {out.absolute().parent} does not exist; hint: create it first"
    return None


def _verify(guest: str, translation) -> int:
    from vmm.errors import VmmError

    from .verify import verify_translation     # the VMM (Unicorn) is imported only when asked for
    try:
        verdict = verify_translation(guest, translation.output_path, translation)
    except VmmError as exc:
        print(f"pvtranslate: error: --verify cannot run the guest: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(verdict.format())
    return 0 if verdict.equivalent else EXIT_DIVERGES


if __name__ == "__main__":
    sys.exit(main())
