"""The contracts every device is written against: register access, interrupt lines, guest time."""
from __future__ import annotations

from typing import Callable, Protocol


class Device(Protocol):
    """A register file reached through the port or MMIO bus at offsets from its own base."""

    def read(self, offset: int, size: int) -> int:
        """Return the value of `size` bytes (1, 2, 4 or 8) at `offset` from the device's base."""

    def write(self, offset: int, size: int, value: int) -> None:
        """Store `value` (already masked to `size` bytes) at `offset` from the device's base."""


class IrqLine(Protocol):
    """One interrupt request wire from a device to an interrupt controller input."""

    def set_level(self, high: bool) -> None: ...


class Clock(Protocol):
    """Guest time in nanoseconds; it advances only at guest events, never with host time."""

    @property
    def now_ns(self) -> int: ...

    def schedule(self, deadline_ns: int, callback: Callable[[int], None]) -> object:
        """Call `callback(now_ns)` once guest time reaches `deadline_ns`; returns a handle for cancel."""

    def cancel(self, handle: object) -> None: ...


class NullIrqLine:
    """A wire that goes nowhere, for devices used without an interrupt controller (tests)."""

    def set_level(self, high: bool) -> None:
        pass
