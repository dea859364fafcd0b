"""The library entry point: boot one guest on a fresh machine and report what it did."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

from .errors import GuestError
from .escapes import Escape
from .machine import Console, Machine, MachineConfig
from .modes import Mode
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


def run(guest: str | Path, *, config: MachineConfig = MachineConfig(), limits: Limits = Limits(),
        trace_path: str | Path | None = None, console: Callable[[bytes], None] | None = None,
        mode: Mode | str | None = None) -> RunResult:
    """Boot `guest` and run it to its end, in `mode` (None: pv for a translated guest, else native).

    Bad input (image, configuration) raises a `VmmError`; what the guest does, including crashing,
    is reported in the result (`error` says why a run ended without an isa-debug-exit).
    """
    sink = Console(console)
    trace_file = open(trace_path, "w") if trace_path else None
    machine = None
    try:
        machine = Machine(config, sink)
        if trace_file:
            machine.vcpu.trace = JsonlTrace(trace_file, machine.clock)
        machine.boot(guest, mode)
        error, status = None, None
        try:
            machine.run(limits)
            status = machine.vcpu.exit_status
        except GuestError as exc:
            error, status = str(exc), exc.exit_status
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
