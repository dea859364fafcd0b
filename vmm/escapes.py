"""pv mode's translation escapes: owns recording sensitive instructions a translated guest runs natively.

In a translated guest every sensitive instruction outside the translator's own pages should have
been replaced (a jump to a trampoline, or a trap: int3 / int 0x82, which are not sensitive). One
that discovery finds in guest code as it is translated is an escape: recorded once per address and
bytes, in the order found; the guest runs on. The translator's own pages are the PT_LOAD segment
that holds the PV note's shared page (trampolines, IF table and site table live there); they are
told apart by physical address, so a kernel linked high is judged the same before and after paging.
A block that starts strictly inside a patch (a fault frame's return address or an exception-table
fixup there) is not run: pv mode moves such a guest into the trampoline at its first instruction,
so what decodes there (the middle of a jmp rel32) is no escape.
"""
from __future__ import annotations

from dataclasses import dataclass

from .discover import SensitiveSite


@dataclass(frozen=True)
class Escape:
    """A sensitive instruction translated for native execution in a pv guest, outside the translator's pages."""

    va: int
    code: bytes
    text: str
    cls: str                  # the catalog class name, e.g. "INTERRUPT_FLAG"

    def describe(self) -> str:
        return f"{self.va:#x}: {self.code.hex()} {self.text} ({self.cls})"


class EscapeLog:
    """A discovery listener that records escapes; it installs no hooks."""

    def __init__(self, own_pa: tuple[int, int], inside_patches: frozenset[int] = frozenset()) -> None:
        self.own_pa = own_pa                  # [start, end) of the translator's segment in guest-physical memory
        self.inside_patches = inside_patches  # original addresses strictly inside a patch (pv redirects them)
        self.escapes: list[Escape] = []
        self._seen: set[tuple[int, bytes]] = set()

    def block_scanned(self, lo: int, hi: int, bits: int, sites: list[SensitiveSite]) -> bool:
        if lo in self.inside_patches:
            return False
        start, end = self.own_pa
        for site in sites:
            if start <= site.pa < end or (site.va, site.code) in self._seen:
                continue
            self._seen.add((site.va, site.code))
            self.escapes.append(Escape(site.va, site.code, site.text, site.entry.cls.name))
        return False
