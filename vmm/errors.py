"""The VMM's exception tree: every failure a user can cause or a guest can provoke, each with advice."""
from __future__ import annotations


class VmmError(Exception):
    """Root of every error the VMM reports; `str()` is a complete message for the user."""

    exit_status = 2


class LoadError(VmmError):
    """The guest image cannot be loaded: not a usable ELF, no boot protocol, bad layout."""


class ConfigError(VmmError):
    """A machine option is out of range (RAM size, disk image, limits)."""


class GuestError(VmmError):
    """The guest did something the machine cannot continue from."""

    exit_status = 4


class TripleFault(GuestError):
    """An exception could not be delivered, nor the double fault it caused: the CPU would reset."""


class OutsideRam(GuestError):
    """The guest touched physical memory that is neither RAM nor a device."""


class LimitExceeded(GuestError):
    """The run went past its instruction or time limit."""

    exit_status = 124


class InternalError(VmmError):
    """A VMM bug met while booting or running a guest: reported with this status, never as a traceback."""

    exit_status = 70                        # EX_SOFTWARE, as pvtranslate's internal errors


class GuestHalted(GuestError):
    """The guest halted with interrupts disabled and no event can ever wake it."""
