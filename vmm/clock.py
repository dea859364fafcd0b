"""Guest time: a virtual nanosecond clock advanced only by guest events, with one-shot timers."""
from __future__ import annotations

import heapq
import itertools
from typing import Callable

NEVER = 1 << 127


class VirtualClock:
    """Deterministic guest time. The vCPU loop advances it at I/O, MMIO and `hlt`; devices schedule on it."""

    def __init__(self) -> None:
        self._now_ns = 0
        self._timers: list[tuple[int, int, Callable[[int], None]]] = []
        self._seq = itertools.count()
        self._cancelled: set[int] = set()
        self._next_due = NEVER

    @property
    def now_ns(self) -> int:
        return self._now_ns

    def schedule(self, deadline_ns: int, callback: Callable[[int], None]) -> int:
        handle = next(self._seq)
        deadline_ns = max(deadline_ns, self._now_ns)
        heapq.heappush(self._timers, (deadline_ns, handle, callback))
        self._next_due = min(self._next_due, deadline_ns)
        return handle

    def cancel(self, handle: object) -> None:
        if isinstance(handle, int):
            self._cancelled.add(handle)

    def next_deadline_ns(self) -> int | None:
        self._drop_cancelled()
        return self._timers[0][0] if self._timers else None

    def advance_to(self, when_ns: int) -> None:
        """Move time forward to `when_ns`, firing every timer due on the way, in deadline order."""
        while True:
            self._drop_cancelled()
            if not self._timers or self._timers[0][0] > when_ns:
                break
            deadline, handle, callback = heapq.heappop(self._timers)
            self._now_ns = max(self._now_ns, deadline)
            callback(self._now_ns)
        self._now_ns = max(self._now_ns, when_ns)
        self._next_due = self._timers[0][0] if self._timers else NEVER

    def advance(self, delta_ns: int) -> None:
        self.advance_to(self._now_ns + delta_ns)

    def tick(self, delta_ns: int) -> bool:
        """The hot path of every I/O exit: advance, and say whether any timer fired (may be cancelled ones)."""
        now = self._now_ns + delta_ns
        if now < self._next_due:
            self._now_ns = now
            return False
        self.advance_to(now)
        return True

    def _drop_cancelled(self) -> None:
        while self._timers and self._timers[0][1] in self._cancelled:
            self._cancelled.discard(heapq.heappop(self._timers)[1])
