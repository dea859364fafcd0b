"""Interrupt wiring between devices and controllers: one output to several inputs."""
from __future__ import annotations

from .base import IrqLine


class IrqFanout:
    """One device's interrupt output wired to several controller inputs (an ISA IRQ to the PIC and the I/O APIC)."""

    def __init__(self, *lines: IrqLine) -> None:
        self._lines = lines

    def set_level(self, high: bool) -> None:
        for line in self._lines:
            line.set_level(high)


def isa_irq_to_gsi(irq: int) -> int:
    """The I/O APIC pin an ISA IRQ reaches on QEMU's pc machine: IRQ0 (the PIT) goes to pin 2, others 1:1."""
    return 2 if irq == 0 else irq
