"""The PC the guests see: RAM, devices on their ports and MMIO pages, interrupt wiring, boot CPU state."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from unicorn import UC_PROT_ALL
from unicorn import x86_const as X

from . import layout
from .bus import Bus
from .clock import VirtualClock
from .cpu import Cpu, open_engine
from .devices.ata import AtaDisk
from .devices.cmos import Cmos
from .devices.debug_exit import DebugExit
from .devices.fw_cfg import FwCfg
from .devices.ioapic import IoApic
from .devices.lapic import Lapic
from .devices.pic import PicPair
from .devices.pit import Pit
from .devices.uart import Uart16550
from .errors import ConfigError
from .loader import BootRecord, Module, load_kernel
from .memory import GuestRam
from .vcpu import Limits, TraceSink, Vcpu

BOOT_GDT = bytes(16) + bytes.fromhex("ffff0000009bcf00" "ffff00000093cf00")   # 0x10 code32, 0x18 data
BOOT_CR0 = 0x11            # PE | ET, paging off (PVH and multiboot entry state)
BOOT_EFLAGS = 0x2


@dataclass(frozen=True)
class MachineConfig:
    """Everything that shapes the machine; one frozen record, no globals."""

    ram_bytes: int = layout.DEFAULT_RAM_BYTES
    disk_image: str | None = None
    cmdline: str = ""
    modules: tuple[Module, ...] = ()
    cpus: int = 1
    io_cost_ns: int = layout.IO_ACCESS_NS

    def validate(self) -> None:
        if self.ram_bytes < 2 * layout.MiB or self.ram_bytes > layout.MAX_RAM_BYTES:
            raise ConfigError(f"RAM size {self.ram_bytes} bytes is out of range; use 2M to "
                              f"{layout.MAX_RAM_BYTES // layout.MiB}M")
        if self.ram_bytes % 0x1000:
            raise ConfigError("RAM size must be a multiple of 4 KiB")
        if self.disk_image is not None and not Path(self.disk_image).is_file():
            raise ConfigError(f"disk image {self.disk_image} does not exist; create it first (any size, "
                              "a multiple of 512 bytes)")


class InterruptRouter:
    """INTR to the CPU: the local APIC's fixed interrupts first, then the PIC through LINT0 (ExtINT)."""

    def __init__(self, lapic: Lapic, pic: PicPair) -> None:
        self.lapic = lapic
        self.pic = pic

    def pending(self) -> bool:
        return self.lapic.pending_vector() is not None or (self.lapic.extint_enabled() and self.pic.pending())

    def acknowledge(self) -> int | None:
        if self.lapic.pending_vector() is not None:
            return self.lapic.acknowledge()
        if self.lapic.extint_enabled() and self.pic.pending():
            return self.pic.acknowledge()
        return None


class _MmioWindow:
    """Adapts one MMIO page to Unicorn's mmio_map callbacks, through the vCPU for accounting."""

    def __init__(self, vcpu: Vcpu, base: int) -> None:
        self.vcpu = vcpu
        self.base = base

    def read(self, uc, offset: int, size: int, _ud) -> int:
        return self.vcpu.mmio_read(self.base, offset, size)

    def write(self, uc, offset: int, size: int, value: int, _ud) -> None:
        self.vcpu.mmio_write(self.base, offset, size, value)


@dataclass
class Console:
    """Collects what the guest writes to COM1 and forwards it to an optional live sink."""

    live: Callable[[bytes], None] | None = None
    data: bytearray = field(default_factory=bytearray)

    def __call__(self, chunk: bytes) -> None:
        self.data += chunk
        if self.live is not None:
            self.live(chunk)


class Machine:
    """One VM: its own RAM, engine, clock and devices; nothing is shared between two Machines."""

    def __init__(self, config: MachineConfig, console: Console, trace: TraceSink | None = None) -> None:
        config.validate()
        self.config = config
        self.console = console
        self.ram = GuestRam(config.ram_bytes)
        self.clock = VirtualClock()
        self.ports = Bus("port", 0xFFFFFFFF)
        self.mmio = Bus("mmio", 0xFFFFFFFF)
        self.uc = open_engine()
        self.uc.mem_map_ptr(0, self.ram.size, UC_PROT_ALL, self.ram.host_address)
        self.cpu = Cpu(self.uc)

        self.pic = PicPair()
        self.lapic = Lapic(self.clock)
        self.ioapic = IoApic(deliver=self.lapic.accept_irq)
        self.vcpu = Vcpu(self.cpu, self.ram, self.ports, self.mmio, self.clock, InterruptRouter(self.lapic, self.pic),
                         config.io_cost_ns, trace)

        def irq(n: int):
            return _SplitIrq(self.pic.irq_line(n), self.ioapic.irq_line(2 if n == 0 else n))

        self.uart = Uart16550(sink=console, irq=irq(layout.COM1_IRQ))
        self.debug_exit = DebugExit(on_exit=self.vcpu.request_exit)
        self.pit = Pit(self.clock, irq(layout.PIT_IRQ))
        self.cmos = Cmos(self.clock, config.ram_bytes)
        self.fw_cfg = FwCfg(config.ram_bytes, config.cpus)
        self.ports.attach(layout.COM1_PORT, 8, self.uart, "com1")
        self.ports.attach(layout.DEBUG_EXIT_PORT, 4, self.debug_exit, "isa-debug-exit")
        self.ports.attach(layout.PIT_PORT, 4, self.pit, "pit")
        self.ports.attach(layout.SPEAKER_PORT, 1, self.pit.speaker_port, "port61")
        self.ports.attach(layout.PIC_MASTER_PORT, 2, self.pic.master, "pic-master")
        self.ports.attach(layout.PIC_SLAVE_PORT, 2, self.pic.slave, "pic-slave")
        self.ports.attach(layout.ELCR_PORT, 2, self.pic.elcr, "elcr")
        self.ports.attach(layout.CMOS_PORT, 2, self.cmos, "cmos")
        self.ports.attach(layout.FW_CFG_PORT, 2, self.fw_cfg, "fw_cfg")
        self.disk = None
        if config.disk_image is not None:
            self.disk = AtaDisk(config.disk_image, irq(layout.ATA_PRIMARY_IRQ))
            self.ports.attach(layout.ATA_PRIMARY_PORT, 8, self.disk, "ata0")
            self.ports.attach(layout.ATA_PRIMARY_CTRL_PORT, 1, self.disk.control, "ata0-ctl")
        for base, device, name in ((layout.LAPIC_BASE, self.lapic, "lapic"), (layout.IOAPIC_BASE, self.ioapic, "ioapic")):
            self.mmio.attach(base, layout.MMIO_PAGE, device, name)
            window = _MmioWindow(self.vcpu, base)
            self.uc.mmio_map(base, layout.MMIO_PAGE, window.read, None, window.write, None)

    def boot(self, kernel: str | Path) -> BootRecord:
        """Load the kernel and put the CPU in the state its boot protocol promises."""
        record = load_kernel(kernel, self.ram, self.config.cmdline, self.config.modules)
        self.ram.write(layout.BOOT_GDT_PA, BOOT_GDT)
        uc = self.uc
        uc.reg_write(X.UC_X86_REG_GDTR, (0, layout.BOOT_GDT_PA, len(BOOT_GDT) - 1, 0))
        uc.reg_write(X.UC_X86_REG_IDTR, (0, 0, 0x3FF, 0))
        uc.reg_write(X.UC_X86_REG_CR0, BOOT_CR0)
        uc.reg_write(X.UC_X86_REG_CS, layout.BOOT_CS)
        for reg in (X.UC_X86_REG_DS, X.UC_X86_REG_ES, X.UC_X86_REG_FS, X.UC_X86_REG_GS, X.UC_X86_REG_SS):
            uc.reg_write(reg, layout.BOOT_DS)
        uc.reg_write(X.UC_X86_REG_EFLAGS, BOOT_EFLAGS)
        uc.reg_write(X.UC_X86_REG_EAX, record.eax)
        uc.reg_write(X.UC_X86_REG_EBX, record.ebx)
        uc.reg_write(X.UC_X86_REG_RIP, record.entry_pa)
        self.record = record
        return record

    def run(self, limits: Limits = Limits()) -> None:
        self.vcpu.run(limits)

    def close(self) -> None:
        if self.disk is not None:
            self.disk.close()


class _SplitIrq:
    """An ISA IRQ wire that reaches both the PIC and the I/O APIC, as on the PC."""

    def __init__(self, *lines) -> None:
        self.lines = lines

    def set_level(self, high: bool) -> None:
        for line in self.lines:
            line.set_level(high)
