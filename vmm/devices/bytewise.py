"""Splitting wide accesses to byte-wide register files into byte accesses, as QEMU's memory core does."""
from __future__ import annotations

from typing import Callable

UNASSIGNED_BYTE = 0xFF   # what a byte past the device's ports reads as (an unassigned ISA port)


def read_bytewise(read_byte: Callable[[int], int], offset: int, size: int, span: int) -> int:
    """Little-endian value of `size` consecutive byte reads from `offset`; bytes past `span` read as 0xff."""
    if size == 1:                           # the common case, on every port exit
        return read_byte(offset) & 0xFF if offset < span else UNASSIGNED_BYTE
    value = 0
    for i in range(size):
        byte = read_byte(offset + i) if offset + i < span else UNASSIGNED_BYTE
        value |= (byte & 0xFF) << (8 * i)
    return value


def write_bytewise(write_byte: Callable[[int, int], None], offset: int, size: int, value: int, span: int) -> None:
    """`size` consecutive byte writes from `offset`, lowest byte first; bytes past `span` are dropped."""
    if size == 1:
        if offset < span:
            write_byte(offset, value & 0xFF)
        return
    for i in range(size):
        if offset + i < span:
            write_byte(offset + i, (value >> (8 * i)) & 0xFF)
