"""The vCPU loop: runs the guest in large emulation slices and turns every exit into machine actions."""
from __future__ import annotations

import enum
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Protocol

from unicorn import (UC_HOOK_BLOCK, UC_HOOK_INSN, UC_HOOK_INSN_INVALID, UC_HOOK_INTR, UC_HOOK_MEM_FETCH_UNMAPPED,
                     UC_HOOK_MEM_READ_UNMAPPED, UC_HOOK_MEM_WRITE_UNMAPPED, UC_MEM_FETCH_UNMAPPED,
                     UC_MEM_READ_UNMAPPED, UC_MEM_WRITE_UNMAPPED, UcError)
from unicorn import x86_const as X

from .bus import Bus
from .clock import VirtualClock
from .cpu import Cpu, CpuView
from .errors import GuestError, GuestHalted, InternalError, LimitExceeded, OutsideRam, VmmError
from .interrupts import DB, GP, PF, UD, VECTORS_WITH_ERROR_CODE, Event, EventKind, deliver
from .insncount import BlockCounter
from .memory import GuestRam, LinearMemory, PageFault, translate
from .rawhooks import IN_CFUNC, INTR_CFUNC, OUT_CFUNC, add_insn_hook, add_raw_hook
from .watchpoints import Watchpoints

HLT_OPCODE = 0xF4
IF_WATCH_BLOCKS = 100_000                # blocks to watch for IF before waiting for an exit instead
UNUSED_UNTIL = 0    # emu_start's `until`: ignored, the engine runs with an empty exit list (vmm.cpu.open_engine)


class Exit(enum.Enum):
    """The kinds of exit the VMM counts (the keys of `RunResult.exits`)."""

    PIO = "pio"
    MMIO = "mmio"
    HLT = "hlt"
    EXCEPTION = "exception"
    INTERRUPT = "interrupt"
    CPUID = "cpuid"


class InterruptSource(Protocol):
    """What the vCPU needs from the interrupt controllers: is INTR asserted, and the INTA cycle."""

    def pending(self) -> bool: ...

    def acknowledge(self) -> int | None: ...

    def changed(self) -> None:
        """Something outside the controllers' registers may have raised a request (a timer fired)."""


class TraceSink(Protocol):
    def __call__(self, kind: str, **fields) -> None: ...


@dataclass(frozen=True)
class Limits:
    """Run limits: guest instructions (exact, but counting slows the guest) and host seconds."""

    max_instructions: int | None = None
    timeout_s: float | None = None


class Vcpu:
    """One virtual CPU bound to a machine's RAM, buses, clock and interrupt controllers."""

    def __init__(self, cpu: Cpu, ram: GuestRam, ports: Bus, mmio: Bus, clock: VirtualClock,
                 interrupts: InterruptSource, io_cost_ns: int, trace: TraceSink | None = None,
                 cpuid: Callable[[int, int], tuple[int, int, int, int] | None] | None = None) -> None:
        self.cpu = cpu
        self.uc = cpu.uc
        self.ram = ram
        self.ports = ports
        self.mmio = mmio
        self.clock = clock
        self.interrupts = interrupts
        self.io_cost_ns = io_cost_ns
        self.trace = trace
        self.cpuid = cpuid
        self.exits: Counter[str] = Counter()
        self.pio_exits = 0                      # kept apart from `exits`: it is on the hot path
        self._port_table = ports.table
        self.exit_status: int | None = None
        self.instructions = 0
        self._event: Event | None = None
        self._hook_error: BaseException | None = None
        # Unicorn skips the I/O permission check. The VMM checks it once the guest has been seen
        # outside ring 0 (checking CPL on every exit of a ring-0-only guest would double its cost).
        self._user_mode_seen = False
        self._denied_io = None
        self._stop_requested = False            # a hook asked the slice to end (so it was no hlt)
        self._if_watch: int | None = None       # the block hook armed while an interrupt waits for IF
        self._if_watch_blocks = 0
        self._give_up_if_watch = False          # the block hook asks the loop to remove it
        self._if_watch_given_up = False         # until the waiting interrupt is taken or withdrawn
        self.watchpoints = Watchpoints(cpu, ram)
        self._outside: str | None = None
        self._hooks_installed = False
        # Whether the guest accepts an external interrupt now: EFLAGS.IF natively; pv mode replaces
        # it with the shared page's virtual IF (see vmm/pv.py).
        self.interrupts_enabled: Callable[[], bool] = cpu.interrupts_enabled
        self.pv = None                          # vmm.pv.PvMode in pv mode
        self.discovery = None                   # vmm.discover.Discovery in fullvirt, trap and pv modes
        self.hypercalls: Counter[str] = Counter()
        # called with (pc, sp) after each slice and the exit it ended with (vmm.trace.Recorder: the stacks
        # the guest ran on, which pvtranslate --verify leaves out of the memory it compares)
        self.stack_watch: Callable[[int, int], None] | None = None
        # fullvirt and trap modes: EFLAGS before the hooked site at this pc if the exception being taken
        # was raised by it (vmm.fullvirt.SiteHooks.flags_before_fault: the engine's own are stale there)
        self.fault_flags: Callable[[int], int | None] | None = None
        # A software interrupt the mode carries out inside the engine's interrupt hook, without ending
        # the slice (pv mode's hot hypercalls): called with the vector and the CPU's registers (cpu_view);
        # True if it was handled there, False to end the slice and deliver it as an event. Set before
        # the first run (the hook binds it then).
        self.software_interrupt: Callable[[int, CpuView], bool] | None = None
        self.cpu_view = CpuView(self.uc)

    def raise_fault(self, event: Event) -> None:
        """An exception the VMM raises on the guest's behalf, delivered when the slice stops."""
        self._event = event

    # --- requests from devices ----------------------------------------------------------------------
    def request_exit(self, status: int) -> None:
        """A device (isa-debug-exit) ends the run with this status, after the current instruction."""
        self.exit_status = status
        self._stop_requested = True
        self.uc.emu_stop()

    # --- hooks ---------------------------------------------------------------------------------------
    def _install_hooks(self, count_instructions: bool) -> None:
        uc = self.uc
        add_raw_hook(uc, UC_HOOK_INTR, INTR_CFUNC(self._make_interrupt_hook()))
        uc.hook_add(UC_HOOK_INSN_INVALID, self._on_invalid)
        on_in, on_out = self._make_port_hooks()
        add_insn_hook(uc, X.UC_X86_INS_IN, on_in)
        add_insn_hook(uc, X.UC_X86_INS_OUT, on_out)
        if self.cpuid is not None:
            uc.hook_add(UC_HOOK_INSN, self._on_cpuid, None, 1, 0, X.UC_X86_INS_CPUID)
        uc.hook_add(UC_HOOK_MEM_READ_UNMAPPED | UC_HOOK_MEM_WRITE_UNMAPPED | UC_HOOK_MEM_FETCH_UNMAPPED,
                    self._on_unmapped)
        if count_instructions:
            self._counter = BlockCounter(self.cpu, self.ram)
            uc.hook_add(UC_HOOK_BLOCK, self._counter.on_block)
        self._hooks_installed = True

    def _make_interrupt_hook(self) -> Callable[[object, int, object], None]:
        """The UC_HOOK_INTR handler: a mode's ``software_interrupt`` first (a closure: this is the hot
        path of pv mode's hypercalls), else the exception or INT n is recorded and the slice ends."""
        uc, view, soft = self.uc, self.cpu_view, self.software_interrupt
        load = view.load

        def on_interrupt(_handle, intno: int, _ud) -> None:
            try:
                if soft is not None:
                    if load is not None:
                        load()
                    if soft(intno, view):
                        return                           # carried out in the hook: the slice goes on
                self._interrupt_event(intno)
            except BaseException as exc:        # never let an exception unwind through the C engine
                self._hook_error = exc
            uc.emu_stop()
        return on_interrupt

    def _interrupt_event(self, intno: int) -> None:
        error_code, is_int = self.cpu.pending_exception()
        if not is_int:
            self._repair_fault_flags(intno)
        length = self._int_length(intno) if is_int else 0
        if is_int and not (intno == 1 and length == 1):    # INT1 (ICEBP) is a #DB trap: no DPL check
            self._event = Event(intno, EventKind.SOFTWARE, insn_len=length)
        elif is_int:
            self._event = Event(intno, EventKind.EXCEPTION)
        else:
            self._event = Event(intno, EventKind.EXCEPTION,
                                error_code if intno in VECTORS_WITH_ERROR_CODE else None)

    def _int_length(self, vector: int) -> int:
        """Length of the INT n / INT3 / INTO / INT1 instruction that ends just before RIP."""
        try:
            before = LinearMemory(self.ram, self.cpu.paging()).read(self.cpu.pc - 2, 2)
        except (PageFault, OutsideRam):
            return 2
        if before[0] == 0xCD and before[1] == vector:
            return 2
        return 1 if before[1] in (0xCC, 0xCE, 0xF1) else 2

    def _repair_fault_flags(self, vector: int) -> None:
        if self.fault_flags is None:
            return
        pc = self.cpu.pc
        linear = (self.cpu.segment_base("cs") + pc) & (0xFFFFFFFF if not self.cpu.long_mode() else (1 << 64) - 1)
        if vector == PF and 0 <= self.uc.reg_read(X.UC_X86_REG_CR2) - linear < 16:
            return                                # fetching the instruction faulted: its hook never ran
        flags = self.fault_flags(pc)
        if flags is not None:
            self.cpu._fast_write(X.UC_X86_REG_EFLAGS, flags)

    def _on_invalid(self, uc, _ud) -> bool:
        try:
            self._repair_fault_flags(UD)
        except BaseException as exc:          # never let an exception unwind through the C engine
            self._hook_error = exc
        self._event = Event(UD, EventKind.EXCEPTION)
        uc.emu_stop()
        return True

    def _io_done(self, timers_fired: bool) -> None:
        """After an I/O exit: stop the slice if the guest asked to exit, an interrupt can be taken, or
        one waits for IF and the IF watch is not armed yet."""
        if timers_fired:
            self.interrupts.changed()
        if self.exit_status is not None or (self.interrupts.pending() and (
                (self._if_watch is None and not self._if_watch_given_up) or self.interrupts_enabled())):
            self._request_stop()

    def _io_permitted(self, port: int, size: int) -> bool:
        """Protected-mode I/O permission (IOPL, then the TSS I/O bitmap), which Unicorn does not check."""
        cpl = self.cpu._fast_read(X.UC_X86_REG_CS) & 3
        if not cpl or not self.cpu.protected_mode() or cpl <= (self.cpu._fast_read(X.UC_X86_REG_EFLAGS) >> 12) & 3:
            return True
        tss_base, tss_limit = self.cpu.table_register(X.UC_X86_REG_TR)
        try:
            mem = LinearMemory(self.ram, self.cpu.paging())
            bitmap = int.from_bytes(mem.read(tss_base + 0x66, 2), "little")
            if tss_limit < 0x67 or bitmap + (port + size - 1) // 8 + 1 > tss_limit:   # the CPU reads 2 bytes
                return False
            bits = int.from_bytes(mem.read(tss_base + bitmap + port // 8, 2), "little")
        except (PageFault, OutsideRam):
            return False
        return not (bits >> (port % 8)) & ((1 << size) - 1)

    def _make_port_hooks(self):
        """The IN and OUT exit handlers: the hottest code of the VMM, so everything is bound locally."""
        table, ports, clock, cost = self._port_table, self.ports, self.clock, self.io_cost_ns
        uc = self.uc
        stop = uc.emu_stop

        finish = self._io_done

        def denied(port: int, size: int) -> bool:
            if not self._user_mode_seen or self._io_permitted(port, size):
                return False
            if self._denied_io is None:
                self._denied_io = uc.context_save()  # the CPU as it was at the first denied instruction
            self._stop_requested = True
            stop()
            return True

        def on_in(_handle, port: int, size: int, _ud) -> int:
            try:
                if denied(port, size):
                    return 0
                self.pio_exits += 1
                fired = clock.tick(cost)
                entry = table.get(port)
                value = ports.read(port, size) if entry is None else entry[0].read(port - entry[1], size)
                if self.trace:
                    self.trace("pio_in", port=port, size=size, value=value, rip=self.cpu._fast_read(X.UC_X86_REG_RIP))
                finish(fired)
                return value
            except BaseException as exc:       # never let an exception unwind through the C engine
                self._hook_error = exc
                stop()
                return 0

        def on_out(_handle, port: int, size: int, value: int, _ud) -> None:
            try:
                if denied(port, size):
                    return
                self.pio_exits += 1
                fired = clock.tick(cost)
                if self.trace:
                    self.trace("pio_out", port=port, size=size, value=value, rip=self.cpu._fast_read(X.UC_X86_REG_RIP))
                entry = table.get(port)
                if entry is None:
                    ports.write(port, size, value)
                else:
                    entry[0].write(port - entry[1], size, value)
                finish(fired)
            except BaseException as exc:
                self._hook_error = exc
                stop()

        self.port_in, self.port_out = on_in, on_out     # the same path for pv port hypercalls
        return IN_CFUNC(on_in), OUT_CFUNC(on_out)

    def _request_stop(self) -> None:
        """End the slice after the current instruction, but never inside a REP INS/OUTS.

        Stopped from its port hook, Unicorn replays the current iteration of a string I/O instruction
        when it resumes, so the device would see that access twice; the stop waits for an I/O exit
        outside the string instruction (a guest polls a status port after a transfer) or its block end.
        """
        if self.exit_status is None and self._in_string_io():
            return
        self._stop_requested = True
        self.uc.emu_stop()

    def _in_string_io(self) -> bool:
        try:
            code = LinearMemory(self.ram, self.cpu.paging()).read(self.cpu.pc, 6)
        except (PageFault, OutsideRam):
            return False
        rep = False
        for byte in code:
            if byte in (0xF2, 0xF3):
                rep = True
            elif byte in (0x66, 0x67, 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65) or 0x40 <= byte <= 0x4F:
                continue
            else:
                return rep and byte in (0x6C, 0x6D, 0x6E, 0x6F)
        return False

    def mmio_read(self, base: int, offset: int, size: int) -> int:
        self.exits[Exit.MMIO.value] += 1
        self.clock.tick(self.io_cost_ns)
        value = self.mmio.read(base + offset, size)
        if self.trace:
            self.trace("mmio_read", addr=base + offset, size=size, value=value, rip=self.cpu.pc)   # rip: block-exact only
        self._io_done(True)
        return value

    def mmio_write(self, base: int, offset: int, size: int, value: int) -> None:
        self.exits[Exit.MMIO.value] += 1
        self.clock.tick(self.io_cost_ns)
        if self.trace:
            self.trace("mmio_write", addr=base + offset, size=size, value=value, rip=self.cpu.pc)  # rip: block-exact only
        self.mmio.write(base + offset, size, value)
        self._io_done(True)

    def _on_cpuid(self, uc, _ud) -> int:
        self.exits[Exit.CPUID.value] += 1
        leaf = uc.reg_read(X.UC_X86_REG_EAX) & 0xFFFFFFFF
        subleaf = uc.reg_read(X.UC_X86_REG_ECX) & 0xFFFFFFFF
        regs = self.cpuid(leaf, subleaf)
        if regs is None:
            return 0
        for reg, value in zip((X.UC_X86_REG_RAX, X.UC_X86_REG_RBX, X.UC_X86_REG_RCX, X.UC_X86_REG_RDX), regs):
            uc.reg_write(reg, value)
        return 1

    def _on_unmapped(self, uc, access: int, address: int, size: int, value: int, _ud) -> bool:
        kind = _ACCESS_NAMES.get(access, "access")
        self._outside = f"guest {kind} of {size} byte(s) at physical {address:#x}, outside RAM and devices"
        return False

    def exit_counts(self) -> dict[str, int]:
        counts = dict(self.exits)
        if self.pio_exits:
            counts[Exit.PIO.value] = self.pio_exits
        return counts

    # --- the loop --------------------------------------------------------------------------------------
    def run(self, limits: Limits = Limits()) -> None:
        if not self._hooks_installed:
            self._install_hooks(limits.max_instructions is not None)
            if limits.max_instructions is not None:
                self._counter.limit = limits.max_instructions
        started = time.monotonic()
        while self.exit_status is None:
            timeout_us = 0
            if limits.timeout_s is not None:
                left = limits.timeout_s - (time.monotonic() - started)
                if left <= 0:
                    raise LimitExceeded(f"time limit of {limits.timeout_s:g} s reached at {self._where()}")
                timeout_us = max(1, int(left * 1e6))
            self._slice(timeout_us=timeout_us)
            if self.exit_status is not None:
                break
            if limits.max_instructions is not None and self._counter.count > limits.max_instructions:
                raise LimitExceeded(f"instruction limit of {limits.max_instructions} reached at {self._where()}")
            if self.cpu.cpl():
                self._user_mode_seen = True
            if self._event is not None:
                self._deliver(self._event)
            elif self._stop_requested:
                pass                                  # an exit opened an interrupt window
            elif limits.timeout_s is not None and time.monotonic() - started >= limits.timeout_s:
                raise LimitExceeded(f"time limit of {limits.timeout_s:g} s reached at {self._where()}")
            elif self._stopped_at_hlt():
                self._halt()
            if self.pv is None or self.pv.resuming is None:    # not inside an unfinished string I/O
                self._take_interrupt()
            elif self._give_up_if_watch:          # the IF watch gave up at a round's int 0x82: there too
                self._give_up_if_watch = False
                self._disarm_if_watch(give_up=True)
            if self.stack_watch is not None:
                self.stack_watch(self.cpu.pc, self.cpu.sp)
        self._disarm_if_watch()
        if limits.max_instructions is not None:
            self.instructions = self._counter.count

    def _slice(self, timeout_us: int = 0, count: int = 0) -> None:
        """One emu_start, and the repairs its return needs; leaves the reason in _event/_stop_requested."""
        self._event = None
        self._stop_requested = False
        pc = self.cpu.pc
        if self.discovery is not None:
            self.discovery.slice_start(pc, count)      # no edge report for the block a slice starts with
        try:
            self.uc.emu_start(pc, UNUSED_UNTIL, timeout=timeout_us, count=count)
        except UcError as exc:
            if self._outside:
                raise OutsideRam(f"{self._outside} (near {self._where()})") from None
            if self.watchpoints.hit_write is None:
                raise GuestError(f"the CPU stopped at {self._where()}: {exc}") from None
            hits = self.watchpoints.step_over(lambda: self._step_one())
            if hits:                               # #DB trap after the writing instruction
                dr6 = self.uc.reg_read(X.UC_X86_REG_DR6)
                self.uc.reg_write(X.UC_X86_REG_DR6, (dr6 & ~0xF) | hits)
                self._event = Event(DB, EventKind.EXCEPTION)
            self._stop_requested = True
        except VmmError:
            raise
        except Exception as exc:          # raised by a hook and re-raised by the binding
            raise InternalError(f"internal error while handling an exit at {self._where()}: "
                                f"{type(exc).__name__}: {exc}") from exc
        self.cpu.clear_fault_history()            # a hooked fault stays in it (FIELD-NOTES: #DF after one)
        if self._hook_error is not None:
            if isinstance(self._hook_error, VmmError) or not isinstance(self._hook_error, Exception):
                raise self._hook_error                # a VMM error, or KeyboardInterrupt and the like
            raise InternalError(f"internal error while handling an exit at {self._where()}: "
                                f"{type(self._hook_error).__name__}: {self._hook_error}") from self._hook_error
        if self._denied_io is not None:
            # The engine ran on to the end of the block: put the CPU back at the I/O instruction.
            self.uc.context_restore(self._denied_io)
            self._denied_io, self._event = None, Event(GP, EventKind.EXCEPTION, 0)

    def _step_one(self) -> None:
        """Run exactly one instruction (the block cache is dropped around it so the count applies)."""
        pc = self.cpu.pc
        self.uc.ctl_remove_cache(pc, pc + 16)
        self.uc.emu_start(pc, UNUSED_UNTIL, count=1)
        self.uc.ctl_remove_cache(pc, pc + 16)

    def _take_interrupt(self) -> None:
        """Deliver a pending interrupt if the guest accepts one now; else watch for the moment it does."""
        if self.exit_status is not None or not self.interrupts.pending():
            self._disarm_if_watch()
            if self.pv is not None:
                self.pv.set_events_pending(False)
            return
        if not self.interrupts_enabled():
            if self.pv is not None:
                self.pv.set_events_pending(True)
            if self._give_up_if_watch:
                self._give_up_if_watch = False
                self._disarm_if_watch(give_up=True)
            else:
                self._arm_if_watch()
            return
        if self.cpu.interrupt_shadow():
            # STI / MOV SS: the next instruction runs before any interrupt (`sti; hlt` wakes from hlt)
            pc = self.cpu.pc
            self.uc.ctl_remove_cache(pc, pc + 16)     # blocks translated without the count would overrun
            self._slice(count=1)
            self.uc.ctl_remove_cache(pc, pc + 16)
            if self._event is not None:
                self._deliver(self._event)
                return
        vector = self.interrupts.acknowledge()
        if vector is not None:
            self._deliver(Event(vector, EventKind.EXTERNAL))
        if not self.interrupts.pending():
            self._disarm_if_watch()
        if self.pv is not None:
            self.pv.set_events_pending(self.interrupts.pending())

    def _arm_if_watch(self) -> None:
        """An interrupt waits for IF: check IF at every block start until the guest sets it.

        STI, POPF and IRET each end a translation block, so the next block start is the first point
        the interrupt can be taken. A hook on every block is dear, so it is armed only while an
        interrupt waits, and given up after IF_WATCH_BLOCKS blocks (a guest that runs with interrupts
        off for that long, e.g. one that never enables them, then takes it at its next exit instead).
        """
        if self._if_watch is None and not self._if_watch_given_up:
            self._if_watch_blocks = 0
            self._if_watch = self.uc.hook_add(UC_HOOK_BLOCK, self._on_block_if_watch)
            self.uc.ctl_flush_tb()                # blocks translated before the hook would not call it

    def _disarm_if_watch(self, give_up: bool = False) -> None:
        self._if_watch_given_up = give_up
        if self._if_watch is not None:
            self.uc.hook_del(self._if_watch)
            self.uc.ctl_flush_tb()
            self._if_watch = None

    def _on_block_if_watch(self, uc, address: int, size: int, _ud) -> None:
        if self.interrupts_enabled():
            self._stop_requested = True
            uc.emu_stop()                         # before this block runs
            return
        self._if_watch_blocks += 1
        if self._if_watch_blocks >= IF_WATCH_BLOCKS:
            self._give_up_if_watch = True
            self._stop_requested = True
            uc.emu_stop()

    def _linear(self) -> LinearMemory:
        return LinearMemory(self.ram, self.cpu.paging())

    def _deliver(self, event: Event) -> None:
        if self.pv is not None:
            self.pv.deliver(event)
            return
        self.deliver_native(event)

    def deliver_native(self, event: Event) -> None:
        if self.cpu.cpl():
            self._user_mode_seen = True
        kind = Exit.INTERRUPT if event.kind is EventKind.EXTERNAL else Exit.EXCEPTION
        self.exits[kind.value] += 1
        if self.trace:
            self.trace(kind.value, vector=event.vector, error_code=event.error_code, rip=self.cpu.pc, rsp=self.cpu.sp)
        deliver(self.cpu, self._linear, event)

    def _stopped_at_hlt(self) -> bool:
        try:
            pa = translate(self.ram, self.cpu.paging(), self.cpu.pc - 1)
            return self.ram.read(pa, 1)[0] == HLT_OPCODE
        except (PageFault, OutsideRam):
            return False

    def _halt(self) -> None:
        """`hlt`: sleep in guest time until the next timer event, or stop if nothing can ever wake us."""
        self.exits[Exit.HLT.value] += 1
        if self.trace:
            self.trace("hlt", rip=self.cpu.pc)
        if not self.interrupts_enabled():
            raise GuestHalted(f"the guest executed hlt with interrupts disabled at {self._where(-1)}: "
                              "nothing can wake it (QEMU would hang here)")
        while not self.interrupts.pending():
            deadline = self.clock.next_deadline_ns()
            if deadline is None:
                raise GuestHalted(f"the guest halted at {self._where(-1)} with interrupts enabled but no timer "
                                  "armed and no device pending: nothing can wake it")
            self.clock.advance_to(deadline)
            self.interrupts.changed()

    def _where(self, delta: int = 0) -> str:
        return f"rip {self.cpu.pc + delta:#x}"


_ACCESS_NAMES = {UC_MEM_READ_UNMAPPED: "read", UC_MEM_WRITE_UNMAPPED: "write",
                 UC_MEM_FETCH_UNMAPPED: "instruction fetch"}
