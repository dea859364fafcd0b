"""The PC the guests see: RAM, devices on their ports and MMIO pages, interrupt wiring, boot CPU state."""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from unicorn import UC_PROT_ALL
from unicorn import x86_const as X

from . import layout, modes, pv
from .bus import Bus
from .clock import VirtualClock
from .cpu import Cpu, open_engine
from .devices.ata import AtaChannel
from .devices.cmos import Cmos
from .devices.debug_exit import DebugExit
from .devices.fw_cfg import FwCfg
from .devices.ioapic import IoApic
from .devices.irq import IrqFanout
from .devices.lapic import Lapic
from .devices.pci import PciHost
from .devices.pic import PicPair
from .devices.pit import Pit, SpeakerPort
from .devices.uart import Uart16550
from .errors import ConfigError
from .cpufix import CpuFixups, candidate_sites
from .cpuid import qemu64_cpuid
from .firmware import apply_seabios_state
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
    # Comparing two images (an original and its translation) needs the same boot inputs for both:
    # kernel_name is the kernel's name in the multiboot command line (QEMU passes its -kernel argument;
    # None: the path); modules_at the lowest guest-physical address for boot modules (None: after the
    # kernel, which a larger image moves).
    kernel_name: str | None = None
    modules_at: int | None = None

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
    """INTR to the CPU: the local APIC's fixed interrupts first, then the PIC through LINT0 (ExtINT).

    Asked after every I/O exit, so the answer is cached until something that can change it happens:
    an IRQ line moves, an interrupt controller's register is touched, a timer fires, or an INTA cycle.
    """

    def __init__(self, lapic: Lapic, pic: PicPair) -> None:
        self.lapic = lapic
        self.pic = pic
        self._dirty = True
        self._pending = False

    def changed(self) -> None:
        self._dirty = True

    def pending(self) -> bool:
        if self._dirty:
            self._pending = self.lapic.pending_vector() is not None or (self.lapic.extint_enabled()
                                                                        and self.pic.pending())
            self._dirty = False
        return self._pending

    def acknowledge(self) -> int | None:
        self._dirty = True
        if self.lapic.pending_vector() is not None:
            return self.lapic.acknowledge()
        if self.lapic.extint_enabled() and self.pic.pending():
            return self.pic.acknowledge()
        return None


class _Watched:
    """A device or IRQ line whose every use may change what interrupt is pending."""

    def __init__(self, inner, changed: Callable[[], None]) -> None:
        self.inner = inner
        self.changed = changed

    def read(self, offset: int, size: int) -> int:
        self.changed()
        return self.inner.read(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.changed()
        self.inner.write(offset, size, value)

    def set_level(self, high: bool) -> None:
        self.changed()
        self.inner.set_level(high)


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
        self.lapic.on_eoi_broadcast = self.ioapic.eoi
        self.interrupts = InterruptRouter(self.lapic, self.pic)
        changed = self.interrupts.changed
        self.vcpu = Vcpu(self.cpu, self.ram, self.ports, self.mmio, self.clock, self.interrupts,
                         config.io_cost_ns, trace, cpuid=qemu64_cpuid)

        def isa_irq(n: int) -> IrqFanout:
            """An ISA IRQ reaches the PIC input n and I/O APIC pin n (IRQ0 is wired to pin 2, as on QEMU's pc)."""
            return _Watched(IrqFanout(self.pic.irq_line(n), self.ioapic.irq_line(2 if n == 0 else n)), changed)

        self.uart = Uart16550(sink=console, irq=isa_irq(layout.COM1_IRQ))
        self.debug_exit = DebugExit(on_exit=self.vcpu.request_exit)
        self.pit = Pit(self.clock, isa_irq(layout.PIT_IRQ))
        self.cmos = Cmos(self.clock, config.ram_bytes, isa_irq(layout.RTC_IRQ), cpus=config.cpus)
        self.fw_cfg = FwCfg(config.ram_bytes, config.cpus)
        # A reset request through 0xCF9 ends the run, as QEMU does under -no-reboot (status 0).
        self.pci = PciHost(on_reset=lambda: self.vcpu.request_exit(0))
        devices = {
            "com1": (layout.COM1_PORT, 8, self.uart),
            "isa-debug-exit": (layout.DEBUG_EXIT_PORT, 4, self.debug_exit),
            "pit": (layout.PIT_PORT, 4, self.pit),
            "port61": (layout.SPEAKER_PORT, 1, SpeakerPort(self.pit)),
            "pic_master": (layout.PIC_MASTER_PORT, 2, _Watched(self.pic.master, changed)),
            "pic_slave": (layout.PIC_SLAVE_PORT, 2, _Watched(self.pic.slave, changed)),
            "elcr": (layout.ELCR_PORT, 2, _Watched(self.pic.elcr, changed)),
            "cmos": (layout.CMOS_PORT, 2, self.cmos),
            "fw_cfg": (layout.FW_CFG_PORT, 2, self.fw_cfg),
            "pci-address": (layout.PCI_CONFIG_ADDRESS_PORT, 4, self.pci.address_port),
            "pci-data": (layout.PCI_CONFIG_DATA_PORT, 4, self.pci.data_port),
        }
        self.disk = None
        if config.disk_image is not None:
            self.disk = AtaChannel(config.disk_image, isa_irq(layout.ATA_PRIMARY_IRQ))
            devices["ata0"] = (layout.ATA_PRIMARY_PORT, 8, self.disk)
            devices["ata0-control"] = (layout.ATA_PRIMARY_CTRL_PORT, 1, self.disk.control)
        for name, (port, size, device) in devices.items():
            self.ports.attach(port, size, device, name)
        mmio_devices = ((layout.IOAPIC_BASE, self.ioapic, "ioapic"),     # MMIO exits mark the router changed
                        (layout.LAPIC_BASE, self.lapic, "lapic"))
        for base, device, name in mmio_devices:
            self.mmio.attach(base, layout.MMIO_PAGE, device, name)
        # The whole device window goes through the MMIO bus: pages no device claims read as all ones
        # and are logged, as unknown ports are. Only addresses outside RAM and this window are fatal.
        start = layout.DEVICE_WINDOW_START
        for base, _device, _name in mmio_devices + ((layout.DEVICE_WINDOW_END, None, ""),):
            for lo, hi in ((start, base), (base, base + layout.MMIO_PAGE)):
                if hi > lo and lo < layout.DEVICE_WINDOW_END:
                    window = _MmioWindow(self.vcpu, lo)
                    self.uc.mmio_map(lo, hi - lo, window.read, None, window.write, None)
            start = base + layout.MMIO_PAGE
        apply_seabios_state({name: dev for name, (_p, _s, dev) in devices.items()} | {"lapic": self.lapic})
        self.interrupts.changed()

    def boot(self, kernel: str | Path, mode: modes.Mode | str | None = None) -> BootRecord:
        """Load the kernel and put the CPU in the state its boot protocol promises; `mode` None: pv for a
        translated guest, else native."""
        record = load_kernel(kernel, self.ram, self.config.cmdline, self.config.modules, self.config.kernel_name,
                             self.config.modules_at)
        self.ram.write(layout.BOOT_GDT_PA, BOOT_GDT)
        uc = self.uc
        uc.reg_write(X.UC_X86_REG_GDTR, (0, layout.BOOT_GDT_PA, len(BOOT_GDT) - 1, 0))
        uc.reg_write(X.UC_X86_REG_IDTR, (0, 0, 0x3FF, 0))
        uc.reg_write(X.UC_X86_REG_CR0, BOOT_CR0)
        code, data = (struct.unpack_from("<II", BOOT_GDT, sel) for sel in (layout.BOOT_CS, layout.BOOT_DS))
        self.cpu.load_segment_caches({"cs": (layout.BOOT_CS, *code)} |
                                     {seg: (layout.BOOT_DS, *data) for seg in ("ds", "es", "fs", "gs", "ss")})
        uc.reg_write(X.UC_X86_REG_EFLAGS, BOOT_EFLAGS)
        uc.reg_write(X.UC_X86_REG_EAX, record.eax)
        uc.reg_write(X.UC_X86_REG_EBX, record.ebx)
        uc.reg_write(X.UC_X86_REG_RIP, record.entry_pa)
        self.fixups = CpuFixups(self.cpu, self.ram, self.lapic, self.vcpu.raise_fault, self.vcpu.watchpoints,
                                self.interrupts.changed)
        self.fixups.install(candidate_sites(record.image))
        self.record = record
        self.pv = pv.attach(self)                 # a translated guest (PVTR note): pv mode
        self.modes = modes.install(self, mode)
        return record

    @property
    def mode(self) -> str:
        state = getattr(self, "modes", None)
        return state.mode.value if state is not None else "native"

    def run(self, limits: Limits = Limits()) -> None:
        self.vcpu.run(limits)

    def close(self) -> None:
        """Release the disk, the engine and guest RAM (in that order: the engine executes from that RAM)."""
        if self.disk is not None:
            self.disk.close()
            self.disk = None
        if self.uc is not None:
            # Close the engine now rather than at garbage collection (hook closures form cycles, so a
            # run's engine and RAM would otherwise outlive it): the binding's own finalizer, run once.
            getattr(self.uc, "_Uc__finalizer", lambda: None)()
            self.uc = self.cpu.uc = self.vcpu.uc = None
            self.ram.close()
