"""The MC146818 RTC and its 128-byte CMOS (ports 0x70-0x71), with the bytes QEMU's pc machine fills in."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from .base import Clock, IrqLine, NullIrqLine
from .bytewise import read_bytewise, write_bytewise

log = logging.getLogger("vmm.devices")

NS_PER_S = 1_000_000_000
KiB, MiB = 1 << 10, 1 << 20
CMOS_SIZE = 128
INDEX_MASK = 0x7F               # bit 7 of the index port is the NMI mask
PORT_SPAN = 2
UNASSIGNED_READ = 0xFF          # what the index port reads as (QEMU)

# Clock registers
SECONDS, SECONDS_ALARM, MINUTES, MINUTES_ALARM, HOURS, HOURS_ALARM = 0, 1, 2, 3, 4, 5
DAY_OF_WEEK, DAY_OF_MONTH, MONTH, YEAR = 6, 7, 8, 9
REG_A, REG_B, REG_C, REG_D = 0x0A, 0x0B, 0x0C, 0x0D
CENTURY = 0x32
IBM_PS2_CENTURY = 0x37          # reads as the century register
TIME_REGISTERS = frozenset({SECONDS, MINUTES, HOURS, DAY_OF_WEEK, DAY_OF_MONTH, MONTH, YEAR, CENTURY})

REG_A_UIP = 0x80
REG_A_DIVIDER = 0x70
REG_A_RESET_DIVIDER = 0x60
REG_A_RATE = 0x0F
REG_B_SET, REG_B_PIE, REG_B_AIE, REG_B_UIE, REG_B_DM, REG_B_24H = 0x80, 0x40, 0x20, 0x10, 0x04, 0x02
REG_C_IRQF, REG_C_PF, REG_C_AF, REG_C_UF = 0x80, 0x40, 0x20, 0x10
REG_C_MASK = 0x70
REG_D_VRT = 0x80
RTC_FREQ_HZ = 32768
UIP_HOLD_NS = 8 * NS_PER_S // RTC_FREQ_HZ    # UIP is set for the last 244 us of every second
ALARM_DONT_CARE = 0xC0

DEFAULT_BASE_EPOCH_S = 1_704_067_200  # 2024-01-01 00:00:00 UTC: a fixed date, so guests stay deterministic


def _cdiv(a: int, b: int) -> int:
    """C's integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def mktimegm(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int:
    """Seconds since 1970 for a broken-down UTC time, normalizing out-of-range fields as QEMU's mktimegm."""
    if month < 3:
        month += 12
        year -= 1
    days = day + _cdiv(153 * month - 457, 5) + 365 * year + _cdiv(year, 4) - _cdiv(year, 100) + _cdiv(year, 400) - 719469
    return 86400 * days + 3600 * hour + 60 * minute + second


def gmtime(epoch_s: int) -> tuple[int, int, int, int, int, int, int]:
    """(year, month 1-12, day, hour, minute, second, weekday with Sunday = 0) for any integer second."""
    days, rest = divmod(epoch_s, 86400)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    z = days + 719468                       # civil-from-days (H. Hinnant)
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (month <= 2)
    return year, month, day, hour, minute, second, (days + 4) % 7


def _ticks32(now_ns: int) -> int:
    """The RTC's 32768 Hz time base at guest time `now_ns`."""
    return now_ns * RTC_FREQ_HZ // NS_PER_S


def _ns_of_tick32(tick: int) -> int:
    return -(-tick * NS_PER_S // RTC_FREQ_HZ)


def pc_ram_split(ram_bytes: int) -> tuple[int, int]:
    """QEMU pc (i440fx): RAM below and above 4 GiB; from 3.5 GiB up, only 3 GiB stays below."""
    low_limit = 0xC0000000 if ram_bytes >= 0xE0000000 else 0xE0000000
    below = min(ram_bytes, low_limit)
    return below, ram_bytes - below


@dataclass(frozen=True)
class DiskGeometry:
    """An IDE disk's physical CHS as QEMU reports it in CMOS (and IDENTIFY); translation 0 = none."""

    cylinders: int
    heads: int
    sectors: int
    translation: int = 0


def pc_cmos_bytes(ram_bytes: int, cpus: int = 1, disk0: DiskGeometry | None = None) -> dict[int, int]:
    """The NVRAM bytes QEMU's pc machine sets (pc_cmos_init), for a machine with -nodefaults and no floppy."""
    below, above = pc_ram_split(ram_bytes)
    base_kib = min(below // KiB, 640)
    ext_kib = min((below - MiB) // KiB, 0xFFFF) if below > MiB else 0
    above_16m = min((below - 16 * MiB) // (64 * KiB), 0xFFFF) if below > 16 * MiB else 0
    above_4g = above // (64 * KiB)
    b = {
        0x10: 0x00,                                 # no floppy drives
        0x14: 0x06,                                 # equipment: FPU, PS/2 mouse
        0x15: base_kib & 0xFF, 0x16: base_kib >> 8,
        0x17: ext_kib & 0xFF, 0x18: ext_kib >> 8,
        0x30: ext_kib & 0xFF, 0x31: ext_kib >> 8,
        0x34: above_16m & 0xFF, 0x35: above_16m >> 8,
        0x38: 0x30,                                 # third boot device: CD-ROM; floppy signature check on
        0x3D: 0x12,                                 # boot order "cad": hard disk, then floppy
        0x5B: above_4g & 0xFF, 0x5C: (above_4g >> 8) & 0xFF, 0x5D: (above_4g >> 16) & 0xFF,
        0x5F: cpus - 1,
        0x12: 0x00, 0x19: 0x00, 0x39: 0x00,
    }
    if disk0 is not None:
        c, h, s = disk0.cylinders, disk0.heads, disk0.sectors
        b[0x12] = 0xF0                              # drive 0 is type 15 -> extended type in 0x19
        b[0x19] = 47                                # user-defined type
        info = (c & 0xFF, c >> 8, h, 0xFF, 0xFF, 0xC0 | ((h > 8) << 3), c & 0xFF, c >> 8, s)
        b.update({0x1B + i: v for i, v in enumerate(info)})
        b[0x39] = disk0.translation & 3
    return b


class Cmos:
    """Index (offset 0) and data (offset 1) ports over 128 bytes; bytes 0-9 and 0x32 are a running clock.

    NVRAM holds what QEMU's pc machine stores for `ram_bytes`, `cpus` and the primary master disk
    (`disk0`, e.g. `AtaDrive.geometry`). Guest time is `base_epoch_s` plus the guest clock, so reads
    are deterministic. Registers follow
    QEMU's mc146818rtc: A = 0x26, B = 0x02 (BCD, 24 h), D = 0x80; UIP reads as set during the last
    244 us of each second; reading C clears it and lowers IRQ8. Register C's update (UF), alarm (AF)
    and periodic (PF, only while PIE) flags are computed from guest time; IRQ8 is raised for the
    enabled ones at the exact guest time they occur.
    """

    def __init__(self, clock: Clock, ram_bytes: int, irq: IrqLine | None = None, *, cpus: int = 1,
                 disk0: DiskGeometry | None = None, base_epoch_s: int = DEFAULT_BASE_EPOCH_S) -> None:
        self._clock = clock
        self._irq = irq or NullIrqLine()
        self.data = bytearray(CMOS_SIZE)
        for index, value in pc_cmos_bytes(ram_bytes, cpus, disk0).items():
            self.data[index] = value & 0xFF
        self.data[REG_A] = 0x26
        self.data[REG_B] = REG_B_24H
        self.data[REG_C] = 0
        self.data[REG_D] = REG_D_VRT
        self.index = 0
        self._base_s = base_epoch_s         # QEMU's base_rtc: the second the registers were last set to
        self._base_ns = clock.now_ns        # guest time then (QEMU's last_update)
        self._offset_ns = 0                 # sub-second phase of the RTC
        self._flags_until_ns = self._rtc_ns()   # register C flags account for RTC time up to here
        self._periodic_ns = clock.now_ns        # guest time up to which PF has been accounted for
        self._timer: object | None = None
        self._write_clock_registers(self._rtc_ns() // NS_PER_S)

    # -- ports -----------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        return read_bytewise(self._read_byte, offset, size, PORT_SPAN)

    def write(self, offset: int, size: int, value: int) -> None:
        write_bytewise(self._write_byte, offset, size, value, PORT_SPAN)

    def _read_byte(self, offset: int) -> int:
        if offset == 0:
            return UNASSIGNED_READ
        index = CENTURY if self.index == IBM_PS2_CENTURY else self.index
        if index in TIME_REGISTERS:
            if self._running():
                self._write_clock_registers(self._rtc_ns() // NS_PER_S)
            return self.data[index]
        if index == REG_A:
            return self.data[REG_A] | (REG_A_UIP if self._update_in_progress() else 0)
        if index == REG_C:
            self._collect_flags()
            value = self.data[REG_C]
            self.data[REG_C] = 0
            self._irq.set_level(False)
            self._arm_timer()
            return value
        return self.data[index]

    def _write_byte(self, offset: int, value: int) -> None:
        if offset == 0:
            self.index = value & INDEX_MASK
            return
        index = CENTURY if self.index == IBM_PS2_CENTURY else self.index
        if index in TIME_REGISTERS or index in (SECONDS_ALARM, MINUTES_ALARM, HOURS_ALARM):
            self._collect_flags()
            self.data[index] = value
            if index in TIME_REGISTERS and self._running():
                self._set_time_from_registers()
            self._arm_timer()
        elif index == REG_A:
            self._write_reg_a(value)
        elif index == REG_B:
            self._write_reg_b(value)
        elif index in (REG_C, REG_D):
            log.debug("cmos: write %#x to read-only register %#x ignored", value, index)
        else:
            self.data[index] = value

    # -- clock -----------------------------------------------------------------------------------
    def _rtc_ns(self) -> int:
        return self._base_s * NS_PER_S + self._clock.now_ns - self._base_ns + self._offset_ns

    def _running(self) -> bool:
        return not self.data[REG_B] & REG_B_SET and (self.data[REG_A] & REG_A_DIVIDER) <= 0x20

    def _update_in_progress(self) -> bool:
        return self._running() and self._rtc_ns() % NS_PER_S >= NS_PER_S - UIP_HOLD_NS

    def _to_bcd(self, v: int) -> int:
        return v & 0xFF if self.data[REG_B] & REG_B_DM else (((v // 10) << 4) | (v % 10)) & 0xFF

    def _from_bcd(self, v: int) -> int:
        if (v & 0xC0) == 0xC0:
            return -1                           # not a valid BCD value (QEMU's rtc_from_bcd)
        return v if self.data[REG_B] & REG_B_DM else (v >> 4) * 10 + (v & 0x0F)

    def _write_clock_registers(self, epoch_s: int) -> None:
        year, month, day, hour, minute, second, weekday = gmtime(epoch_s)
        d = self.data
        d[SECONDS], d[MINUTES] = self._to_bcd(second), self._to_bcd(minute)
        if d[REG_B] & REG_B_24H:
            d[HOURS] = self._to_bcd(hour)
        else:
            d[HOURS] = self._to_bcd(hour % 12 or 12) | (0x80 if hour >= 12 else 0)
        d[DAY_OF_WEEK] = self._to_bcd(weekday + 1)          # Sunday = 1
        d[DAY_OF_MONTH], d[MONTH] = self._to_bcd(day), self._to_bcd(month)
        d[YEAR], d[CENTURY] = self._to_bcd(year % 100), self._to_bcd(year // 100 % 100)

    def _registers_epoch_s(self) -> int:
        d = self.data
        hour = self._from_bcd(d[HOURS] & 0x7F)
        if not d[REG_B] & REG_B_24H:
            hour = hour % 12 + (12 if d[HOURS] & 0x80 else 0)
        year = self._from_bcd(d[YEAR]) + 100 * self._from_bcd(d[CENTURY])
        return mktimegm(year, self._from_bcd(d[MONTH]), self._from_bcd(d[DAY_OF_MONTH]),
                        hour, self._from_bcd(d[MINUTES]), self._from_bcd(d[SECONDS]))

    def _set_time_from_registers(self) -> None:
        self._base_s = self._registers_epoch_s()
        self._base_ns = self._clock.now_ns
        self._flags_until_ns = self._rtc_ns()

    def _write_reg_a(self, value: int) -> None:
        self._collect_flags()
        old = self.data[REG_A]
        if (value & REG_A_RESET_DIVIDER) == REG_A_RESET_DIVIDER:
            if self._running():
                self._write_clock_registers(self._rtc_ns() // NS_PER_S)
        elif (old & REG_A_RESET_DIVIDER) == REG_A_RESET_DIVIDER and (value & REG_A_DIVIDER) <= 0x20:
            if not self.data[REG_B] & REG_B_SET:    # the first update comes half a second later
                self._offset_ns = NS_PER_S // 2
                self._set_time_from_registers()
        self.data[REG_A] = value & ~REG_A_UIP
        self._arm_timer()

    def _write_reg_b(self, value: int) -> None:
        self._collect_flags()
        old = self.data[REG_B]
        if value & REG_B_SET:
            if self._running():
                self._write_clock_registers(self._rtc_ns() // NS_PER_S)
            value &= ~REG_B_UIE
        elif old & REG_B_SET and (self.data[REG_A] & REG_A_DIVIDER) <= 0x20:
            self.data[REG_B] = value            # leaving SET: the clock restarts from the registers
            self._offset_ns = self._rtc_ns() % NS_PER_S
            self._set_time_from_registers()
        if value & self.data[REG_C] & REG_C_MASK:
            self.data[REG_C] |= REG_C_IRQF
            self._irq.set_level(True)
        else:
            self.data[REG_C] &= ~REG_C_IRQF
            self._irq.set_level(False)
        self.data[REG_B] = value
        self._arm_timer()

    # -- register C flags and IRQ8 ---------------------------------------------------------------
    def _period_ticks(self) -> int | None:
        """The periodic interrupt's period in 32768 Hz ticks, or None while PIE is off."""
        rate = self.data[REG_A] & REG_A_RATE
        if not rate or not self.data[REG_B] & REG_B_PIE:
            return None
        if rate <= 2:
            rate += 7
        return 1 << (rate - 1)

    def _alarm_matches(self, epoch_s: int) -> bool:
        _, _, _, hour, minute, second, _ = gmtime(epoch_s)
        for reg, now in ((SECONDS_ALARM, second), (MINUTES_ALARM, minute), (HOURS_ALARM, hour)):
            alarm = self.data[reg]
            if alarm & ALARM_DONT_CARE == ALARM_DONT_CARE:
                continue
            if reg == HOURS_ALARM and not self.data[REG_B] & REG_B_24H:
                value = self._from_bcd(alarm & 0x7F) % 12 + (12 if alarm & 0x80 else 0)
            else:
                value = self._from_bcd(alarm)
            if value != now:
                return False
        return True

    def _collect_flags(self) -> None:
        """Set UF/AF for each second boundary and PF for each periodic tick since the last collection."""
        flags = 0
        if self._running():
            rtc = self._rtc_ns()
            first_s, last_s = self._flags_until_ns // NS_PER_S + 1, rtc // NS_PER_S
            if last_s >= first_s:
                flags |= REG_C_UF
                if any(self._alarm_matches(s) for s in range(max(first_s, last_s - 86400), last_s + 1)):
                    flags |= REG_C_AF
            self._flags_until_ns = rtc
        period = self._period_ticks()
        now = self._clock.now_ns
        if period is not None and _ticks32(now) // period > _ticks32(self._periodic_ns) // period:
            flags |= REG_C_PF                   # ticks fall on multiples of the period, as in QEMU
        self._periodic_ns = now
        self.data[REG_C] |= flags
        if self.data[REG_B] & self.data[REG_C] & REG_C_MASK and not self.data[REG_C] & REG_C_IRQF:
            self.data[REG_C] |= REG_C_IRQF
            self._irq.set_level(True)

    def _arm_timer(self) -> None:
        """Schedule the next enabled interrupt (periodic tick or second boundary) on the guest clock."""
        if self._timer is not None:
            self._clock.cancel(self._timer)
            self._timer = None
        if self.data[REG_C] & REG_C_IRQF:
            return                              # nothing new can be signalled until C is read
        deadlines = []
        period = self._period_ticks()
        if period is not None:
            deadlines.append(_ns_of_tick32((_ticks32(self._clock.now_ns) // period + 1) * period))
        if self.data[REG_B] & (REG_B_UIE | REG_B_AIE) and self._running():
            deadlines.append(self._clock.now_ns + NS_PER_S - self._rtc_ns() % NS_PER_S)
        if deadlines:
            self._timer = self._clock.schedule(min(deadlines), self._on_timer)

    def _on_timer(self, _now_ns: int) -> None:
        self._timer = None
        self._collect_flags()
        self._arm_timer()
