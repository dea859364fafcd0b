"""The library entry point: boot one guest on a fresh machine and report what it did."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

from .errors import GuestError, InternalError, LoadError
from .escapes import Escape
from .machine import Console, Machine, MachineConfig
from .modes import Mode
from .trace import Recorder
from .vcpu import Limits


@dataclass(frozen=True)
class RunResult:
    """What a run produced. `exit_status` follows QEMU: (v << 1) | 1 for isa-debug-exit value v."""

    console: bytes
    exit_status: int
    exits: dict[str, int]
    guest_time_ns: int
    instructions: int | None
    error: str | None = None
    mode: str = "native"                       # native | fullvirt | trap | pv (vmm.modes)
    hypercalls: dict[str, int] = field(default_factory=dict)   # pv: calls by Hypercall name ("TRAP": trap sites)
    # fullvirt, trap: exits at sensitive instructions by catalog class name, and by catalog entry name
    sensitive_exits: dict[str, int] = field(default_factory=dict)
    sensitive_exits_by_name: dict[str, int] = field(default_factory=dict)
    deprivileged: dict[str, int] = field(default_factory=dict)  # trap: runs without an exit, by class name
    escapes: tuple[Escape, ...] = ()           # pv: sensitive instructions outside the translator's pages

    @property
    def passed(self) -> bool:
        return self.error is None and self.exit_status == 1


class JsonlTrace:
    """Writes one JSON object per guest event (port I/O, MMIO, interrupts, exceptions, hlt)."""

    def __init__(self, out: TextIO, clock) -> None:
        self.out = out
        self.clock = clock
        self.seq = 0

    def __call__(self, kind: str, **fields) -> None:
        self.out.write(json.dumps({"seq": self.seq, "t_ns": self.clock.now_ns, "event": kind, **fields}) + "\n")
        self.seq += 1

    def at_exit(self, machine) -> None:
        """A last record: exit status, pc and stack pointer, and a digest of every non-zero RAM page."""
        view, zero = machine.ram.view, bytes(0x1000)
        pages = {f"{pa:#x}": hashlib.blake2b(page, digest_size=8).hexdigest()
                 for pa in range(0, machine.ram.size, 0x1000) if (page := view[pa:pa + 0x1000].tobytes()) != zero}
        self("exit", status=machine.vcpu.exit_status, rip=machine.cpu.pc, rsp=machine.cpu.sp, memory=pages)


def _fan_out(sinks: list) -> Callable[..., None]:
    def trace(kind: str, **fields) -> None:
        for sink in sinks:
            sink(kind, **fields)
    return trace


def run(guest: str | Path, *, config: MachineConfig = MachineConfig(), limits: Limits = Limits(),
        trace_path: str | Path | None = None, console: Callable[[bytes], None] | None = None,
        mode: Mode | str | None = None, recorder: Recorder | None = None) -> RunResult:
    """Boot `guest` and run it to its end, in `mode` (None: pv for a translated guest, else native).

    Bad input (image, configuration) raises a `VmmError`; what the guest does, including crashing,
    is reported in the result (`error` says why a run ended without an isa-debug-exit). `recorder`
    (`vmm.trace.Recorder`) keeps the run's canonical trace and its memory at exit; `trace_path` writes
    the raw events as JSON lines.
    """
    sink = Console(console)
    trace_file = open(trace_path, "w") if trace_path else None
    machine = None
    try:
        machine = Machine(config, sink)
        sinks = [JsonlTrace(trace_file, machine.clock)] if trace_file else []
        if recorder is not None:
            sinks.append(recorder)
        if sinks:
            machine.vcpu.trace = sinks[0] if len(sinks) == 1 else _fan_out(sinks)
        try:
            machine.boot(guest, mode)
        except GuestError as exc:            # the image put something outside RAM: bad input, not a crash
            raise LoadError(f"{guest}: cannot boot: {exc}") from exc
        if recorder is not None:
            recorder.start(machine)
        error, status = None, None
        try:
            machine.run(limits)
            status = machine.vcpu.exit_status
        except (GuestError, InternalError) as exc:
            error, status = str(exc), exc.exit_status
        except Exception as exc:             # a VMM bug the guest ran into: the run ends, the VMM reports it
            bug = InternalError(f"internal error at {machine.vcpu._where()}: {type(exc).__name__}: {exc} "
                                "(a VMM bug; please report it with the guest)")
            error, status = str(bug), bug.exit_status
        for trace_sink in sinks:
            trace_sink.at_exit(machine)
        return RunResult(bytes(sink.data), status, machine.vcpu.exit_counts(), machine.clock.now_ns,
                         machine.vcpu.instructions if limits.max_instructions is not None else None, error,
                         machine.mode, dict(machine.vcpu.hypercalls), machine.modes.sensitive_exits(),
                         machine.modes.sensitive_exits_by_name(), machine.modes.deprivileged(),
                         machine.modes.escapes())
    finally:
        if machine is not None:
            machine.close()
        if trace_file:
            trace_file.close()
