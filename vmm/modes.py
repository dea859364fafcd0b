"""The VMM's modes: owns choosing native, fullvirt, trap or pv for a guest and wiring what each intercepts.

- native: the reference machine; discovery only to place the I/O boundaries (`vmm.ioboundary`),
  which every mode but pv has: an interrupt a port access makes deliverable is taken right after it.
- fullvirt: discovery, and an exit at every sensitive instruction (`vmm.fullvirt`).
- trap: as fullvirt for privileged instructions; sensitive-unprivileged ones run deprivileged
  (`vmm.deprivileged`), and CPUID is the engine's own (the host CPU).
- pv: a translated guest (`vmm.pv`); discovery records translation escapes (`vmm.escapes`).

A guest carrying the PV note runs only in pv mode, and pv mode needs one: a translated kernel
depends on hypercalls and the shared page, and an untranslated one has none.
"""
from __future__ import annotations

import enum



from .discover import Discovery
from .errors import ConfigError
from .escapes import Escape, EscapeLog
from .fullvirt import SiteHooks
from .ioboundary import Both, IoBoundaries


class Mode(enum.Enum):
    NATIVE = "native"
    FULLVIRT = "fullvirt"
    TRAP = "trap"
    PV = "pv"


def resolve(requested: Mode | str | None, translated: bool, guest: str) -> Mode:
    """The mode to run `guest` in: the requested one, or pv for a translated guest and native otherwise."""
    if requested is None:
        return Mode.PV if translated else Mode.NATIVE
    try:
        mode = Mode(requested) if not isinstance(requested, Mode) else requested
    except ValueError:
        raise ConfigError(f"unknown mode {requested!r}; choose one of "
                          f"{', '.join(m.value for m in Mode)}") from None
    if mode is Mode.PV and not translated:
        raise ConfigError(f"{guest} carries no PV note, so it cannot run in pv mode; translate it first "
                          f"(pvtranslate {guest}) or choose native, fullvirt or trap")
    if mode is not Mode.PV and translated:
        raise ConfigError(f"{guest} is a translated guest (PV note): it runs only in pv mode; run the "
                          f"original kernel for {mode.value}")
    return mode


class ModeState:
    """One machine's mode and what it counts: sensitive exits, deprivileged runs, escapes."""

    def __init__(self, mode: Mode, discovery: Discovery | None = None, hooks: SiteHooks | None = None,
                 escape_log: EscapeLog | None = None) -> None:
        self.mode = mode
        self.discovery = discovery
        self.hooks = hooks
        self.escape_log = escape_log

    def sensitive_exits(self) -> dict[str, int]:
        return self.hooks.exits_by_class() if self.hooks else {}

    def sensitive_exits_by_name(self) -> dict[str, int]:
        return self.hooks.exits_by_name() if self.hooks else {}

    def deprivileged(self) -> dict[str, int]:
        return self.hooks.deprivileged_by_class() if self.hooks else {}

    def escapes(self) -> tuple[Escape, ...]:
        return tuple(self.escape_log.escapes) if self.escape_log else ()


def install(machine, requested: Mode | str | None) -> ModeState:
    """Choose the mode for the booted `machine` and wire it (call after loading and pv.attach)."""
    mode = resolve(requested, machine.pv is not None, machine.record.image.path)
    vcpu = machine.vcpu

    def fail(exc: BaseException) -> None:
        if vcpu._hook_error is None:
            vcpu._hook_error = exc
        machine.uc.emu_stop()

    def end_slice() -> None:
        vcpu._stop_requested = True            # a VMM stop: not a hlt
        machine.uc.emu_stop()

    hooks = escape_log = None
    ignore_step = None
    if mode is Mode.PV:
        table = machine.pv.table
        escape_log = listener = EscapeLog(_translator_pa(machine), frozenset(machine.pv.resume_in))
        ignore_step = lambda pc: pc in table.sites or pc in table.hypercalls   # noqa: E731 - pv steps its own code
    elif mode is Mode.NATIVE:
        listener = IoBoundaries(machine.cpu, machine.ram)
    else:
        hooks = SiteHooks(mode is Mode.TRAP, machine.cpu, machine.ram, fail, vcpu.cpu_view)
        listener = Both(hooks, IoBoundaries(machine.cpu, machine.ram))
        vcpu.fault_flags = hooks.flags_before_fault
        if mode is Mode.TRAP:
            vcpu.cpuid = None                  # the host CPU answers (the engine's own CPUID)
    discovery = Discovery(machine.cpu, machine.ram, listener, fail, end_slice, ignore_step)
    discovery.install()
    vcpu.discovery = discovery
    return ModeState(mode, discovery, hooks, escape_log)


def _translator_pa(machine) -> tuple[int, int]:
    """[start, end) in guest-physical memory of the PT_LOAD segment holding the PV shared page."""
    va = machine.pv.desc.shared_page_va
    for seg in machine.record.image.segments:
        if seg.vaddr <= va < seg.vaddr + seg.mem_size:
            return seg.paddr, seg.paddr + seg.mem_size
    return 0, 0                                # pv.attach has refused such a guest already
