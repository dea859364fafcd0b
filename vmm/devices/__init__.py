"""Emulated PC devices, one small class each; none of them knows where it is mapped.

Modules (each models what QEMU 7.2's `pc` machine does, measured against it where it matters):

- base: the contracts (Device, IrqLine, Clock).
- bytewise: splitting wide port accesses into byte accesses, as QEMU's memory core does.
- irq: wiring helpers (IrqFanout for ISA IRQ -> PIC and I/O APIC; ISA IRQ -> GSI mapping).
- uart: Uart16550, the COM1 16550A.
- debug_exit: DebugExit, isa-debug-exit (status (v << 1) | 1).
- pit: Pit, the 8254 timer (IRQ0), and SpeakerPort, port 0x61.
- pic: PicPair, the cascaded 8259A pair, with its ELCR.
- lapic: Lapic, the local APIC (xAPIC MMIO page, timer at 1 GHz bus clock).
- ioapic: IoApic, the 24-pin I/O APIC (version 0x20).
- cmos: Cmos, the MC146818 RTC and NVRAM with QEMU's memory-size and disk bytes.
- fw_cfg: FwCfg, QEMU's firmware configuration interface (ports and DMA).
- ata: AtaChannel with an AtaDrive, the primary IDE channel's PIO disk.
"""
