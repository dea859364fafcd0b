"""The 8254 programmable interval timer (ports 0x40-0x43) and port 0x61's view of channel 2, as QEMU's i8254.c."""
from __future__ import annotations

import logging

from .base import Clock, IrqLine
from .bytewise import read_bytewise, write_bytewise

log = logging.getLogger("vmm.devices")

PIT_FREQ_HZ = 1_193_182
NS_PER_S = 1_000_000_000
PORT_SPAN = 4
CONTROL = 3
FULL_COUNT = 0x10000            # a count of 0 means 65536

# Access modes (control word bits 5:4), also used as read/write states
RW_LATCH, RW_LSB, RW_MSB, RW_WORD0, RW_WORD1 = 0, 1, 2, 3, 4
READ_BACK = 3                   # control word channel field 3
READ_BACK_NO_COUNT = 0x20       # read-back bit 5 clear: latch the count
READ_BACK_NO_STATUS = 0x10      # read-back bit 4 clear: latch the status


def ticks_between(start_ns: int, now_ns: int) -> int:
    """Whole input-clock ticks from `start_ns` to `now_ns` (QEMU's muldiv64 truncation)."""
    return (now_ns - start_ns) * PIT_FREQ_HZ // NS_PER_S


def tick_time_ns(start_ns: int, ticks: int) -> int:
    """The first nanosecond at which `ticks` whole ticks have elapsed since `start_ns`."""
    return start_ns + -(-ticks * NS_PER_S // PIT_FREQ_HZ)


class PitChannel:
    """One counter: its mode, count, latches and gate; output and count are computed from guest time."""

    def __init__(self, gate: bool, now_ns: int) -> None:
        self.mode = 3
        self.bcd = 0
        self.count = FULL_COUNT
        self.load_ns = now_ns
        self.gate = gate
        self.rw_mode = RW_LATCH
        self.read_state = RW_LATCH
        self.write_state = RW_LATCH
        self.write_latch = 0
        self.latched_count = 0
        self.count_latched = 0
        self.status = 0
        self.status_latched = False

    def counter(self, now_ns: int) -> int:
        d = ticks_between(self.load_ns, now_ns)
        if self.mode in (0, 1, 4, 5):
            return (self.count - d) & 0xFFFF
        if self.mode == 3:
            return self.count - (2 * d) % self.count
        return self.count - d % self.count

    def output(self, now_ns: int) -> bool:
        return self._out_at(ticks_between(self.load_ns, now_ns))

    def _out_at(self, d: int) -> bool:
        # QEMU's model, including its mode 2 (high for the one tick at each period end) and modes 6/7 (as 0).
        if self.mode == 1:
            return d < self.count
        if self.mode == 2:
            return d % self.count == 0 and d != 0
        if self.mode == 3:
            return d % self.count < (self.count + 1) >> 1
        if self.mode in (4, 5):
            return d == self.count
        return d >= self.count

    def next_transition_ns(self, now_ns: int) -> int | None:
        """When the output next changes, or None if it never does without a new count."""
        d = ticks_between(self.load_ns, now_ns)
        out = self._out_at(d)
        for tick in self._candidate_ticks(d):
            if tick > d and self._out_at(tick) != out:
                return tick_time_ns(self.load_ns, tick)
        return None

    def _candidate_ticks(self, d: int) -> tuple[int, ...]:
        count = self.count
        base = d - d % count
        if self.mode == 2:
            return (d + 1, base + count)
        if self.mode == 3:
            half = (count + 1) >> 1
            return (base + half, base + count, base + count + half)
        if self.mode in (4, 5):
            return (count, count + 1)
        return (count,)

    def load(self, value: int, now_ns: int) -> None:
        self.count = value or FULL_COUNT
        self.load_ns = now_ns

    def latch_count(self, now_ns: int) -> None:
        if not self.count_latched:              # a second latch before the first is read is ignored
            self.latched_count = self.counter(now_ns) & 0xFFFF
            self.count_latched = self.rw_mode

    def latch_status(self, now_ns: int) -> None:
        if not self.status_latched:
            self.status = (self.output(now_ns) << 7) | (self.rw_mode << 4) | (self.mode << 1) | self.bcd
            self.status_latched = True


class Pit:
    """The PIT's four ports at offsets 0-3: counters 0-2 and the control word; counter 0's output is IRQ0.

    Counting follows QEMU exactly (same formulas for counts and outputs; the gate only restarts modes
    1, 2, 3 and 5; BCD is recorded in the status but counting stays binary). Only counter 0 drives an
    interrupt; its output edges are scheduled on the guest clock.
    """

    def __init__(self, clock: Clock, irq0: IrqLine) -> None:
        self._clock = clock
        self._irq0 = irq0
        now = clock.now_ns
        self.channels = tuple(PitChannel(gate=(i != 2), now_ns=now) for i in range(3))
        self._timer: object | None = None
        self.speaker_port = SpeakerPort(self)   # port 0x61's view of channel 2
        self._update_irq0(now)

    # -- register access -------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        return read_bytewise(self._read_byte, offset, size, PORT_SPAN)

    def write(self, offset: int, size: int, value: int) -> None:
        write_bytewise(self._write_byte, offset, size, value, PORT_SPAN)

    def _read_byte(self, offset: int) -> int:
        if offset == CONTROL:
            return 0                            # the control word is write-only
        ch = self.channels[offset]
        if ch.status_latched:
            ch.status_latched = False
            return ch.status
        if ch.count_latched:
            if ch.count_latched == RW_WORD0:
                ch.count_latched = RW_MSB
                return ch.latched_count & 0xFF
            value = ch.latched_count >> 8 if ch.count_latched == RW_MSB else ch.latched_count & 0xFF
            ch.count_latched = 0
            return value
        count = ch.counter(self._clock.now_ns)
        if ch.read_state == RW_WORD0:
            ch.read_state = RW_WORD1
            return count & 0xFF
        if ch.read_state == RW_WORD1:
            ch.read_state = RW_WORD0
            return (count >> 8) & 0xFF
        if ch.read_state == RW_MSB:
            return (count >> 8) & 0xFF
        return count & 0xFF

    def _write_byte(self, offset: int, value: int) -> None:
        now = self._clock.now_ns
        if offset == CONTROL:
            self._control(value, now)
            return
        ch = self.channels[offset]
        if ch.write_state == RW_WORD0:
            ch.write_latch = value
            ch.write_state = RW_WORD1
            return
        if ch.write_state == RW_WORD1:
            value = ch.write_latch | (value << 8)
            ch.write_state = RW_WORD0
        elif ch.write_state == RW_MSB:
            value <<= 8
        ch.load(value, now)
        if offset == 0:
            self._update_irq0(now)

    def _control(self, value: int, now: int) -> None:
        select = value >> 6
        if select == READ_BACK:
            for i, ch in enumerate(self.channels):
                if value & (2 << i):
                    if not value & READ_BACK_NO_COUNT:
                        ch.latch_count(now)
                    if not value & READ_BACK_NO_STATUS:
                        ch.latch_status(now)
            return
        ch = self.channels[select]
        access = (value >> 4) & 3
        if access == RW_LATCH:
            ch.latch_count(now)
            return
        ch.rw_mode = ch.read_state = ch.write_state = access
        ch.mode = (value >> 1) & 7
        ch.bcd = value & 1
        if ch.bcd:
            log.info("pit: channel %d set to BCD counting; counting stays binary (as QEMU)", select)
        # As in QEMU, a new mode takes effect for IRQ0 at the next count load or output transition.

    # -- gate and output (port 0x61) ---------------------------------------------------------------
    def set_gate(self, channel: int, high: bool) -> None:
        ch = self.channels[channel]
        if high and not ch.gate and ch.mode in (1, 2, 3, 5):
            ch.load_ns = self._clock.now_ns     # a rising gate restarts counting
            if channel == 0:
                self._update_irq0(ch.load_ns)
        ch.gate = high

    def output(self, channel: int) -> bool:
        return self.channels[channel].output(self._clock.now_ns)

    # -- IRQ0 ------------------------------------------------------------------------------------
    def _update_irq0(self, now: int) -> None:
        ch = self.channels[0]
        self._irq0.set_level(ch.output(now))
        if self._timer is not None:
            self._clock.cancel(self._timer)
            self._timer = None
        deadline = ch.next_transition_ns(now)
        if deadline is not None:
            self._timer = self._clock.schedule(deadline, self._on_transition(deadline))

    def _on_transition(self, deadline: int):
        def fire(_now_ns: int) -> None:
            self._timer = None
            self._update_irq0(deadline)
        return fire


class SpeakerPort:
    """Port 0x61 (system control port B) as QEMU's pcspk: bit 0 gate 2, bit 1 speaker data, bit 4 refresh, bit 5 OUT2."""

    GATE2, SPEAKER_DATA, REFRESH, OUT2 = 0x01, 0x02, 0x10, 0x20

    def __init__(self, pit: Pit) -> None:
        self._pit = pit
        self._data_on = 0
        self._refresh = 0

    def read(self, offset: int, size: int) -> int:
        self._refresh ^= self.REFRESH           # toggles on every read, so refresh-polling loops finish
        ch2 = self._pit.channels[2]
        value = int(ch2.gate) | self._data_on | self._refresh | (self.OUT2 if self._pit.output(2) else 0)
        return value if size == 1 else value | ((1 << (8 * size)) - 1) & ~0xFF

    def write(self, offset: int, size: int, value: int) -> None:
        self._data_on = value & self.SPEAKER_DATA
        self._pit.set_gate(2, bool(value & self.GATE2))
