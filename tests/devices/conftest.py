"""Shared fixtures for the device tests: a guest clock and interrupt wires that record their levels."""
from __future__ import annotations

import pytest

from vmm.clock import VirtualClock


class Wire:
    """An IrqLine that remembers every level it was set to and counts rising edges."""

    def __init__(self) -> None:
        self.levels: list[bool] = []
        self.high = False
        self.rising_edges = 0

    def set_level(self, high: bool) -> None:
        if high and not self.high:
            self.rising_edges += 1
        self.high = high
        self.levels.append(high)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def wire() -> Wire:
    return Wire()
