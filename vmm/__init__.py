"""pvtranslate's VMM: a QEMU-compatible minimal PC on Unicorn that boots PVH and multiboot kernels."""
from .errors import (ConfigError, GuestError, GuestHalted, LimitExceeded, LoadError, OutsideRam, TripleFault,
                     VmmError)
from .machine import MachineConfig
from .run import RunResult, run
from .vcpu import Limits

__all__ = ["run", "RunResult", "MachineConfig", "Limits", "VmmError", "LoadError", "ConfigError", "GuestError",
           "TripleFault", "OutsideRam", "LimitExceeded", "GuestHalted"]
