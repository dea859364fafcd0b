"""QEMU's isa-debug-exit port: a write of v stops the VM with exit status (v << 1) | 1."""
from __future__ import annotations

from typing import Callable


def exit_status(value: int) -> int:
    """The status QEMU passes to exit() for a written value (the host shell sees it modulo 256)."""
    return (value << 1) | 1


class DebugExit:
    """The isa-debug-exit register window (iosize bytes, usually 4 at 0xf4): writes stop the VM, reads give 0.

    As in QEMU the whole access is one write: `outl(0xf4, v)` stops with (v << 1) | 1 for the 32-bit v,
    `outb` with the byte; the offset inside the window does not matter.
    """

    def __init__(self, on_exit: Callable[[int], None]) -> None:
        self._on_exit = on_exit

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        self._on_exit(exit_status(value))
