"""The `vmm` command: `vmm run GUEST.elf [--mode MODE] [--mem SIZE] [--disk IMAGE] [--trace FILE] [limits]`."""
from __future__ import annotations

import argparse
import os
import logging
import re
import sys

from .errors import InternalError, VmmError
from .loader import Module
from .machine import MachineConfig
from .modes import Mode
from .run import run
from .vcpu import Limits

SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
EXIT_BAD_INPUT = 2


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)([KMG]?)(i?B)?", text.strip(), re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; write e.g. 128M or 1G")
    return int(m.group(1)) * SIZE_UNITS[m.group(2).upper()] * (1 if m.group(2) else 1 << 20)


def positive_number(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number above 0")
        return value
    return parse


def parse_module(text: str) -> Module:
    if not text.strip():
        raise argparse.ArgumentTypeError("a module needs a file name")
    return Module(text.strip())


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vmm", description="Run an x86 guest kernel on a QEMU-compatible minimal PC.")
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="boot a guest ELF (PVH note or multiboot v1) and run it to its end",
                       description="Prints the guest's COM1 output and exits with its isa-debug-exit status "
                                   "((v << 1) | 1, as QEMU). VMM errors exit with even statuses: 2 bad input, "
                                   "4 guest crash (triple fault, access outside RAM, unwakeable halt), "
                                   "124 limit reached, 70 a VMM bug (reported, please send the guest).")
    r.add_argument("guest", help="guest kernel ELF")
    r.add_argument("--mode", choices=[m.value for m in Mode],
                   help="native: the reference machine; fullvirt: an exit at every sensitive instruction, found "
                        "as code is translated; trap: only privileged ones exit, the others run deprivileged "
                        "(diverges by design); pv: a translated guest (default: pv for a guest with a PV note, "
                        "else native)")
    r.add_argument("--mem", type=parse_size, default=MachineConfig.ram_bytes,
                   help="guest RAM (default 128M, as QEMU; a bare number is MiB)")
    r.add_argument("--disk", help="raw disk image for the primary ATA master (read and written)")
    r.add_argument("--append", default="", help="kernel command line")
    r.add_argument("--module", action="append", type=parse_module, default=[],
                   help='boot module "FILE [ARGS]" (repeatable; QEMU\'s -initrd entries, one per option)')
    r.add_argument("--serial", metavar="FILE", help="write the guest's COM1 output to FILE instead of stdout")
    r.add_argument("--trace", help="write every guest event (port I/O, MMIO, interrupts, exceptions) as JSON lines")
    r.add_argument("--max-insns", type=positive_number(int), help="stop after this many guest instructions (counting slows the run)")
    r.add_argument("--timeout", type=positive_number(float), help="stop after this many host seconds")
    r.add_argument("--stats", action="store_true",
                   help="print exit counts, sensitive exits by class and translation escapes to stderr")
    r.add_argument("-v", "--verbose", action="store_true",
                   help="log unassigned ports and device oddities; list translation escapes")
    return ap


def _write_console(chunk: bytes) -> None:
    try:
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
    except BrokenPipeError:           # the reader went away (`| head`): the run goes on, unprinted
        sys.stdout = open(os.devnull, "w")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="vmm: %(message)s")
    config = MachineConfig(ram_bytes=args.mem, disk_image=args.disk, cmdline=args.append,
                           modules=tuple(args.module))
    limits = Limits(max_instructions=args.max_insns, timeout_s=args.timeout)
    serial = None
    try:
        if args.serial:
            serial = open(args.serial, "wb")
        console = (lambda chunk: (serial.write(chunk), serial.flush())) if serial else _write_console
        result = run(args.guest, config=config, limits=limits, trace_path=args.trace, console=console,
                     mode=args.mode)
    except VmmError as exc:
        print(f"vmm: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except OSError as exc:
        print(f"vmm: error: {exc.filename or ''}: {exc.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:              # a bug of ours: say so, without a traceback
        print(f"vmm: internal error: {type(exc).__name__}: {exc} (a VMM bug; please report it with the guest)",
              file=sys.stderr)
        return InternalError.exit_status
    finally:
        if serial is not None:
            serial.close()
    if args.stats:
        exits = ", ".join(f"{k} {v}" for k, v in sorted(result.exits.items()))
        print(f"vmm: exits: {exits or 'none'}; guest time {result.guest_time_ns / 1e6:.3f} ms"
              + (f"; {result.instructions} instructions" if result.instructions is not None else ""), file=sys.stderr)
        if result.mode == "pv":
            calls = ", ".join(f"{k} {v}" for k, v in sorted(result.hypercalls.items()))
            print(f"vmm: pv mode; hypercalls: {calls or 'none'}; translation escapes: {len(result.escapes)}",
                  file=sys.stderr)
        if result.mode in ("fullvirt", "trap"):
            print(f"vmm: {result.mode} mode; sensitive exits: {_counts(result.sensitive_exits)}", file=sys.stderr)
            print(f"vmm: by instruction: {_counts(result.sensitive_exits_by_name)}", file=sys.stderr)
        if result.mode == "trap":
            print(f"vmm: ran deprivileged, no exit: {_counts(result.deprivileged)}", file=sys.stderr)
    if result.escapes and (args.stats or args.verbose):
        for escape in result.escapes:
            print(f"vmm: translation escape at {escape.describe()}", file=sys.stderr)
    if result.error:
        print(f"vmm: error: {result.error}", file=sys.stderr)
    return result.exit_status


if __name__ == "__main__":
    sys.exit(main())
