"""An ATA PIO hard disk on an IDE channel (master only, no slave), registers and commands as QEMU's hw/ide/core.c."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

from .base import IrqLine, NullIrqLine
from .cmos import DiskGeometry

log = logging.getLogger("vmm.devices")

SECTOR_SIZE = 512
MAX_MULT_SECTORS = 16
LBA28_MAX = (1 << 28) - 1

# Command block offsets (0x1F0-0x1F7)
REG_DATA, REG_ERROR_FEATURE, REG_NSECTOR, REG_SECTOR, REG_LCYL, REG_HCYL, REG_SELECT, REG_STATUS_COMMAND = range(8)
COMMAND_SPAN = 8

STAT_ERR, STAT_DRQ, STAT_DSC, STAT_DF, STAT_DRDY, STAT_BSY = 0x01, 0x08, 0x10, 0x20, 0x40, 0x80
ERR_ABRT = 0x04
DIAG_PASSED = 0x01              # EXECUTE DEVICE DIAGNOSTIC's "error" value: device 0 passed
SEL_ALWAYS_ON, SEL_LBA, SEL_DEV, SEL_HEAD = 0xA0, 0x40, 0x10, 0x0F
CTRL_NIEN, CTRL_SRST, CTRL_HOB = 0x02, 0x04, 0x80

# Commands a QEMU IDE hard disk accepts (others abort). SET_DSC: DSC is set on success.
CMD_READ, CMD_READ_ONCE, CMD_READ_EXT, CMD_READ_MULTIPLE, CMD_READ_MULTIPLE_EXT = 0x20, 0x21, 0x24, 0xC4, 0x29
CMD_WRITE, CMD_WRITE_ONCE, CMD_WRITE_EXT, CMD_WRITE_VERIFY = 0x30, 0x31, 0x34, 0x3C
CMD_WRITE_MULTIPLE, CMD_WRITE_MULTIPLE_EXT = 0xC5, 0x39
CMD_READ_DMA, CMD_READ_DMA_ONCE, CMD_READ_DMA_EXT = 0xC8, 0xC9, 0x25
CMD_WRITE_DMA, CMD_WRITE_DMA_ONCE, CMD_WRITE_DMA_EXT = 0xCA, 0xCB, 0x35
CMD_VERIFY, CMD_VERIFY_ONCE, CMD_VERIFY_EXT = 0x40, 0x41, 0x42
CMD_RECALIBRATE, CMD_SEEK, CMD_DIAGNOSE, CMD_SPECIFY = 0x10, 0x70, 0x90, 0x91
CMD_READ_NATIVE_MAX, CMD_READ_NATIVE_MAX_EXT = 0xF8, 0x27
CMD_SET_MULTIPLE, CMD_FLUSH, CMD_FLUSH_EXT, CMD_IDENTIFY, CMD_SET_FEATURES = 0xC6, 0xE7, 0xEA, 0xEC, 0xEF
CMD_CHECK_POWER_MODE, CMD_CHECK_POWER_MODE2 = 0xE5, 0x98
POWER_NOPS = frozenset({0xE0, 0xE1, 0xE2, 0xE3, 0xE6, 0x94, 0x95, 0x96, 0x97, 0x99})
SET_DSC_COMMANDS = frozenset({CMD_RECALIBRATE, CMD_SEEK, CMD_SPECIFY, CMD_READ_NATIVE_MAX, CMD_READ_NATIVE_MAX_EXT,
                              CMD_VERIFY, CMD_VERIFY_ONCE, CMD_VERIFY_EXT, CMD_SET_MULTIPLE, CMD_SET_FEATURES,
                              CMD_CHECK_POWER_MODE, CMD_CHECK_POWER_MODE2})
LBA48_COMMANDS = frozenset({CMD_READ_EXT, CMD_READ_MULTIPLE_EXT, CMD_WRITE_EXT, CMD_WRITE_MULTIPLE_EXT,
                            CMD_READ_DMA_EXT, CMD_WRITE_DMA_EXT, CMD_VERIFY_EXT, CMD_READ_NATIVE_MAX_EXT})

# SET FEATURES subcommands that are accepted and do nothing
FEATURE_NOPS = frozenset({0xAA, 0x55, 0x05, 0x85, 0x69, 0x67, 0x96, 0x9A, 0x42, 0xC2})
FEATURE_WCACHE_ON, FEATURE_WCACHE_OFF, FEATURE_XFER_MODE = 0x02, 0x82, 0x03
FEATURE_REVERT_ON_RESET, FEATURE_KEEP_ON_RESET = 0xCC, 0x66


def guess_geometry(sector0: bytes, total_sectors: int) -> DiskGeometry:
    """QEMU's hd_geometry_guess: from an MBR partition's end CHS if there is one, else 16 heads, 63 sectors."""
    if len(sector0) >= SECTOR_SIZE and sector0[510:512] == b"\x55\xaa":
        for i in range(4):
            entry = sector0[0x1BE + 16 * i:0x1BE + 16 * (i + 1)]
            end_head, end_sector = entry[5], entry[6] & 63
            if int.from_bytes(entry[12:16], "little") and end_head and end_sector:
                heads = end_head + 1
                cylinders = total_sectors // (heads * end_sector)
                if 1 <= cylinders <= 16383:
                    if heads <= 16:                 # used as the physical geometry, no translation
                        return DiskGeometry(cylinders, heads, end_sector, translation=0)
                    cyls = min(max(total_sectors // (16 * 63), 2), 16383)
                    return DiskGeometry(cyls, 16, 63, translation=2 if cyls * 16 <= 131072 else 1)
    cyls = min(max(total_sectors // (16 * 63), 2), 16383)
    return DiskGeometry(cyls, 16, 63, translation=0 if cyls <= 1024 else 1)


def _ata_string(text: str, length: int) -> list[int]:
    """An IDENTIFY string: space-padded, two characters per word, first character in the high byte."""
    raw = text.encode("ascii")[:length].ljust(length, b" ")
    return [(raw[i] << 8) | raw[i + 1] for i in range(0, length, 2)]


def identify_words(total_sectors: int, geometry: DiskGeometry, serial: str = "QM00001",
                   model: str = "QEMU HARDDISK", firmware: str = "2.5+") -> list[int]:
    """The 256 IDENTIFY DEVICE words of a QEMU 7.2 IDE disk (write cache on, 512-byte sectors)."""
    w = [0] * 256
    c, h, s = geometry.cylinders, geometry.heads, geometry.sectors
    chs_sectors = c * h * s
    lba28 = min(total_sectors, LBA28_MAX)
    w[0] = 0x0040                               # fixed disk
    w[1], w[3], w[4], w[5], w[6] = c, h, 512 * s & 0xFFFF, 512, s
    w[10:20] = _ata_string(serial, 20)
    w[20], w[21], w[22] = 3, 512, 4
    w[23:27] = _ata_string(firmware, 8)
    w[27:47] = _ata_string(model, 40)
    w[47] = 0x8000 | MAX_MULT_SECTORS
    w[48] = 1                                   # dword I/O
    w[49] = (1 << 11) | (1 << 9) | (1 << 8)     # IORDY, LBA, DMA
    w[51], w[52], w[53] = 0x200, 0x200, 0x07
    w[54], w[55], w[56] = c, h, s
    w[57], w[58] = chs_sectors & 0xFFFF, chs_sectors >> 16 & 0xFFFF
    w[59] = 0x100 | MAX_MULT_SECTORS
    w[60], w[61] = lba28 & 0xFFFF, lba28 >> 16
    w[62], w[63], w[64] = 0x07, 0x07, 0x03
    w[65:69] = [120] * 4
    w[69] = 1 << 14                             # deterministic TRIM
    w[80], w[81] = 0xF0, 0x16
    w[82], w[83], w[84] = 0x4021, 0x7400, 0x4000
    w[85], w[86], w[87] = 0x4021, 0x3400, 0x4000
    w[88] = 0x3F | (1 << 13)
    w[93] = 1 | (1 << 14) | 0x2000
    for i in range(4):
        w[100 + i] = total_sectors >> (16 * i) & 0xFFFF
    w[106] = 0x6000                             # one logical sector per physical sector
    w[169] = 1                                  # TRIM supported
    return w


class AtaDrive:
    """A raw disk image file opened read-write, addressed in 512-byte sectors; writes go straight to the file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDWR)
        size = os.fstat(self._fd).st_size
        self.total_sectors = -(-size // SECTOR_SIZE)
        self.geometry = guess_geometry(self.read(0, 1) if self.total_sectors else b"", self.total_sectors)

    def read(self, lba: int, count: int) -> bytes:
        data = os.pread(self._fd, count * SECTOR_SIZE, lba * SECTOR_SIZE)
        return data.ljust(count * SECTOR_SIZE, b"\0")

    def write(self, lba: int, data: bytes) -> None:
        os.pwrite(self._fd, data, lba * SECTOR_SIZE)

    def flush(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class TaskFile:
    """One device's copy of the task-file registers (the channel writes both devices' copies, as QEMU)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.feature = self.nsector = self.sector = self.lcyl = self.hcyl = 0
        self.hob_feature = self.hob_nsector = self.hob_sector = self.hob_lcyl = self.hob_hcyl = 0
        self.select = SEL_ALWAYS_ON
        self.status = STAT_DRDY | STAT_DSC
        self.error = 0

    def set_signature(self, present: bool) -> None:
        """After reset or diagnostics: count and sector 1, cylinder 0 for a disk (0xffff: no device)."""
        self.select &= ~SEL_HEAD
        self.nsector = self.sector = 1
        self.lcyl = self.hcyl = 0 if present else 0xFF


class AtaChannel:
    """An IDE channel with one ATA disk as master: itself the command block (offsets 0-7), `control` 0x3F6.

    Transfers are synchronous: a command's data is ready (DRQ) as soon as it is issued, where QEMU
    shows BSY for a host-dependent moment first; polling guests see the same final statuses.
    Errors follow QEMU: a range error aborts (ERR, error ABRT), not IDNF. DMA commands are accepted
    as QEMU does (DRQ set) but no bus-master engine exists to move the data.
    """

    def __init__(self, drive: AtaDrive | str | Path | None, irq: IrqLine | None = None) -> None:
        if isinstance(drive, (str, Path)):
            drive = AtaDrive(drive)
        self.drive = drive
        self._irq = irq or NullIrqLine()
        self.units = (TaskFile(), TaskFile())
        self.unit = 0                       # which device DEV selects
        self.device_control = 0             # nIEN, SRST, HOB
        self.heads = drive.geometry.heads if drive else 0
        self.sectors_per_track = drive.geometry.sectors if drive else 0
        self.mult_sectors = MAX_MULT_SECTORS
        self.identify = identify_words(drive.total_sectors, drive.geometry) if drive else []
        self._lba48 = False
        self._reset_reverts = False         # SET FEATURES 0xCC: SRST restores the geometry SPECIFY changed
        self._per_block = 1                 # sectors per DRQ block (1, or the multiple count)
        self._buffer = b""
        self._pos = 0
        self._device_to_host = True
        self._on_buffer_done: Callable[[], None] | None = None
        self.control = _ControlBlock(self)  # the bus device for 0x3F6
        for unit, tf in enumerate(self.units):
            tf.set_signature(present=self._exists(unit))

    def close(self) -> None:
        if self.drive is not None:
            self.drive.close()

    # -- command block (0x1F0-0x1F7) -----------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if offset == REG_DATA:                      # a byte read consumes a whole word, as in QEMU
            return self.read_data(2 if size == 1 else size) & ((1 << (8 * size)) - 1)
        if size == 1:
            return self.read_register(offset)
        if size == 2:                               # split into byte accesses; past 0x1F7 is unassigned
            high = self.read_register(offset + 1) if offset + 1 < COMMAND_SPAN else 0xFF
            return self.read_register(offset) | high << 8
        return 0xFFFFFFFF

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == REG_DATA:
            if size in (2, 4):
                self.write_data(size, value)
            return                                  # byte writes to the data port are dropped
        if size == 1:
            self.write_register(offset, value)
        elif size == 2:
            self.write_register(offset, value & 0xFF)
            if offset + 1 < COMMAND_SPAN:
                self.write_register(offset + 1, value >> 8)

    @property
    def master(self) -> TaskFile:
        return self.units[0]

    def _exists(self, unit: int) -> bool:
        return self.drive is not None and unit == 0

    def _present(self) -> bool:
        """Whether the selected device exists (reads of status/error are 0 otherwise)."""
        return self._exists(self.unit)

    def _raise_irq(self) -> None:
        if not self.device_control & CTRL_NIEN:
            self._irq.set_level(True)

    # -- register reads --------------------------------------------------------------------------
    def read_register(self, reg: int) -> int:
        tf = self.units[self.unit]
        hob = self.device_control & CTRL_HOB
        if reg == REG_STATUS_COMMAND:
            self._irq.set_level(False)      # reading status acknowledges the interrupt
            return tf.status if self._present() else 0
        if self.drive is None:
            return 0                        # an empty channel reads 0 everywhere
        if reg == REG_ERROR_FEATURE:
            return 0 if not self._present() else tf.hob_feature if hob else tf.error
        if reg == REG_NSECTOR:
            return tf.hob_nsector if hob else tf.nsector & 0xFF
        if reg == REG_SECTOR:
            return tf.hob_sector if hob else tf.sector
        if reg == REG_LCYL:
            return tf.hob_lcyl if hob else tf.lcyl
        if reg == REG_HCYL:
            return tf.hob_hcyl if hob else tf.hcyl
        return tf.select

    def alternate_status(self) -> int:
        return self.units[self.unit].status if self._present() else 0

    # -- register writes -------------------------------------------------------------------------
    def write_register(self, reg: int, value: int) -> None:
        self.device_control &= ~CTRL_HOB           # any task-file write clears HOB
        if reg == REG_STATUS_COMMAND:
            self._irq.set_level(False)
            self._execute(value)
            return
        for tf in self.units:
            if reg == REG_ERROR_FEATURE:
                tf.hob_feature, tf.feature = tf.feature, value
            elif reg == REG_NSECTOR:
                tf.hob_nsector, tf.nsector = tf.nsector & 0xFF, value
            elif reg == REG_SECTOR:
                tf.hob_sector, tf.sector = tf.sector, value
            elif reg == REG_LCYL:
                tf.hob_lcyl, tf.lcyl = tf.lcyl, value
            elif reg == REG_HCYL:
                tf.hob_hcyl, tf.hcyl = tf.hcyl, value
            elif reg == REG_SELECT:
                tf.select = value | SEL_ALWAYS_ON
        if reg == REG_SELECT:
            self.unit = 1 if value & SEL_DEV else 0

    def write_control(self, value: int) -> None:
        starting_reset = value & CTRL_SRST and not self.device_control & CTRL_SRST
        self.device_control = value
        if starting_reset:
            self._software_reset()

    def _software_reset(self) -> None:
        """SRST: both devices reset (selection kept), then the master runs its diagnostic."""
        self._stop_transfer()
        self.mult_sectors = MAX_MULT_SECTORS
        self._lba48 = False
        if self._reset_reverts and self.drive is not None:
            self._reset_reverts = False
            self.heads, self.sectors_per_track = self.drive.geometry.heads, self.drive.geometry.sectors
        for unit, tf in enumerate(self.units):
            tf.reset()
            tf.set_signature(present=self._exists(unit))
        if self.drive is not None:
            self.master.status = STAT_DRDY | STAT_DSC
            self.master.error = DIAG_PASSED
            self._raise_irq()

    # -- data port -------------------------------------------------------------------------------
    def read_data(self, size: int) -> int:
        tf = self.units[self.unit]
        if not tf.status & STAT_DRQ or not self._device_to_host or self._pos + size > len(self._buffer):
            return 0
        value = int.from_bytes(self._buffer[self._pos:self._pos + size], "little")
        self._pos += size
        if self._pos >= len(self._buffer):
            self._buffer_done()
        return value

    def write_data(self, size: int, value: int) -> None:
        tf = self.units[self.unit]
        if not tf.status & STAT_DRQ or self._device_to_host or self._pos + size > len(self._buffer):
            return
        buf = self._buffer
        self._buffer = buf[:self._pos] + value.to_bytes(size, "little") + buf[self._pos + size:]
        self._pos += size
        if self._pos >= len(self._buffer):
            self._buffer_done()

    def _buffer_done(self) -> None:
        self.master.status &= ~STAT_DRQ
        done, self._on_buffer_done = self._on_buffer_done, None
        if done is not None:
            done()

    def _start_transfer(self, data: bytes, device_to_host: bool, on_done: Callable[[], None] | None) -> None:
        self._buffer, self._pos, self._device_to_host, self._on_buffer_done = data, 0, device_to_host, on_done
        if not self.master.status & STAT_ERR:
            self.master.status |= STAT_DRQ

    def _stop_transfer(self) -> None:
        self._buffer, self._pos, self._on_buffer_done = b"", 0, None
        self.master.status &= ~STAT_DRQ

    # -- addressing ------------------------------------------------------------------------------
    def _current_lba(self) -> int:
        tf = self.master
        if tf.select & SEL_LBA:
            if self._lba48:
                return (tf.hob_hcyl << 40 | tf.hob_lcyl << 32 | tf.hob_sector << 24
                        | tf.hcyl << 16 | tf.lcyl << 8 | tf.sector)
            return (tf.select & SEL_HEAD) << 24 | tf.hcyl << 16 | tf.lcyl << 8 | tf.sector
        return ((tf.hcyl << 8 | tf.lcyl) * self.heads * self.sectors_per_track
                + (tf.select & SEL_HEAD) * self.sectors_per_track + tf.sector - 1)

    def _set_lba(self, lba: int) -> None:
        tf = self.master
        if tf.select & SEL_LBA:
            tf.sector, tf.lcyl, tf.hcyl = lba & 0xFF, lba >> 8 & 0xFF, lba >> 16 & 0xFF
            if self._lba48:
                tf.hob_sector, tf.hob_lcyl, tf.hob_hcyl = lba >> 24 & 0xFF, lba >> 32 & 0xFF, lba >> 40 & 0xFF
            else:
                tf.select = (tf.select & ~SEL_HEAD) | (lba >> 24 & SEL_HEAD)
        elif self.heads and self.sectors_per_track:
            cyl, rest = divmod(lba, self.heads * self.sectors_per_track)
            tf.hcyl, tf.lcyl = cyl >> 8 & 0xFF, cyl & 0xFF
            tf.select = (tf.select & ~SEL_HEAD) | (rest // self.sectors_per_track & SEL_HEAD)
            tf.sector = rest % self.sectors_per_track + 1 & 0xFF

    def _load_count(self, lba48: bool) -> None:
        """As QEMU, the count register becomes the whole count: 0 means 256 (LBA28) or 65536 (LBA48)."""
        tf = self.master
        self._lba48 = lba48
        if lba48:
            tf.nsector = (tf.hob_nsector << 8 | tf.nsector) or 0x10000
        else:
            tf.nsector = tf.nsector or 0x100

    def _range_ok(self, lba: int, count: int) -> bool:
        total = self.drive.total_sectors
        return 0 <= lba <= total and count <= total - lba

    # -- commands --------------------------------------------------------------------------------
    def _abort(self) -> None:
        self._stop_transfer()
        self.master.status = STAT_DRDY | STAT_ERR
        self.master.error = ERR_ABRT

    def _execute(self, cmd: int) -> None:
        tf = self.master
        if self.unit != 0:
            return                          # commands to the absent slave are ignored
        if tf.status & (STAT_BSY | STAT_DRQ):
            return                          # only DEVICE RESET (ATAPI) is allowed now
        if self.drive is None:
            self._abort()
            self._raise_irq()
            return
        tf.status = STAT_DRDY | STAT_BSY
        tf.error = 0
        handler = self._handler(cmd)
        if handler is None:
            log.info("ata: command %#04x not supported; aborted", cmd)
            self._abort()
            self._raise_irq()
            return
        if handler(cmd):                    # completed at once
            tf.status &= ~STAT_BSY
            if cmd in SET_DSC_COMMANDS and not tf.error:
                tf.status |= STAT_DSC
            self._raise_irq()

    def _handler(self, cmd: int) -> Callable[[int], bool] | None:
        if cmd in (CMD_READ, CMD_READ_ONCE, CMD_READ_EXT):
            return self._cmd_read
        if cmd in (CMD_READ_MULTIPLE, CMD_READ_MULTIPLE_EXT):
            return self._cmd_read_multiple
        if cmd in (CMD_WRITE, CMD_WRITE_ONCE, CMD_WRITE_EXT, CMD_WRITE_VERIFY):
            return self._cmd_write
        if cmd in (CMD_WRITE_MULTIPLE, CMD_WRITE_MULTIPLE_EXT):
            return self._cmd_write_multiple
        if cmd in (CMD_READ_DMA, CMD_READ_DMA_ONCE, CMD_READ_DMA_EXT,
                   CMD_WRITE_DMA, CMD_WRITE_DMA_ONCE, CMD_WRITE_DMA_EXT):
            return self._cmd_dma
        if cmd in (CMD_VERIFY, CMD_VERIFY_ONCE, CMD_VERIFY_EXT):
            return self._cmd_verify
        if cmd in (CMD_RECALIBRATE, CMD_SEEK) or cmd in POWER_NOPS:
            return lambda _cmd: True
        if cmd in (CMD_CHECK_POWER_MODE, CMD_CHECK_POWER_MODE2):
            return self._cmd_check_power_mode
        return {
            CMD_IDENTIFY: self._cmd_identify, CMD_SET_FEATURES: self._cmd_set_features,
            CMD_SPECIFY: self._cmd_specify, CMD_SET_MULTIPLE: self._cmd_set_multiple,
            CMD_FLUSH: self._cmd_flush, CMD_FLUSH_EXT: self._cmd_flush, CMD_DIAGNOSE: self._cmd_diagnose,
            CMD_READ_NATIVE_MAX: self._cmd_read_native_max, CMD_READ_NATIVE_MAX_EXT: self._cmd_read_native_max,
        }.get(cmd)

    def _cmd_identify(self, cmd: int) -> bool:
        self.master.status = STAT_DRDY | STAT_DSC
        data = b"".join(w.to_bytes(2, "little") for w in self.identify)
        self._start_transfer(data, device_to_host=True, on_done=self._stop_transfer)
        self._raise_irq()
        return False

    def _cmd_read(self, cmd: int) -> bool:
        self._load_count(cmd in LBA48_COMMANDS)
        self._per_block = 1
        self._read_block()
        return False

    def _cmd_read_multiple(self, cmd: int) -> bool:
        if not self.mult_sectors:
            self._abort()
            return True
        self._load_count(cmd in LBA48_COMMANDS)
        self._per_block = self.mult_sectors
        self._read_block()
        return False

    def _read_block(self) -> None:
        """Read the next block into the buffer and raise DRQ, or end the command when none is left."""
        tf = self.master
        tf.status = STAT_DRDY | STAT_DSC
        tf.error = 0
        if tf.nsector == 0:
            self._stop_transfer()
            return
        lba, n = self._current_lba(), min(tf.nsector, self._per_block)
        if not self._range_ok(lba, n):
            self._abort()
            self._raise_irq()
            return
        data = self.drive.read(lba, n)
        self._set_lba(lba + n)
        tf.nsector -= n
        self._start_transfer(data, device_to_host=True, on_done=self._read_block)
        self._raise_irq()

    def _cmd_write(self, cmd: int) -> bool:
        self._load_count(cmd in LBA48_COMMANDS)
        self._per_block = 1
        self.master.status = STAT_DRDY | STAT_DSC
        self._start_transfer(bytes(SECTOR_SIZE), device_to_host=False, on_done=self._write_block)
        return False

    def _cmd_write_multiple(self, cmd: int) -> bool:
        if not self.mult_sectors:
            self._abort()
            return True
        self._load_count(cmd in LBA48_COMMANDS)
        self._per_block = self.mult_sectors
        self.master.status = STAT_DRDY | STAT_DSC
        n = min(self.master.nsector, self._per_block)
        self._start_transfer(bytes(n * SECTOR_SIZE), device_to_host=False, on_done=self._write_block)
        return False

    def _write_block(self) -> None:
        """The guest filled the buffer: write it, then ask for the next block or end the command."""
        tf = self.master
        tf.status = STAT_DRDY | STAT_DSC
        lba, n = self._current_lba(), min(tf.nsector, self._per_block)
        if not self._range_ok(lba, n):
            self._abort()
            self._raise_irq()
            return
        self.drive.write(lba, self._buffer[:n * SECTOR_SIZE])
        tf.nsector -= n
        self._set_lba(lba + n)
        if tf.nsector == 0:
            self._stop_transfer()
        else:
            n = min(tf.nsector, self._per_block)
            self._start_transfer(bytes(n * SECTOR_SIZE), device_to_host=False, on_done=self._write_block)
        self._raise_irq()

    def _cmd_dma(self, cmd: int) -> bool:
        log.warning("ata: DMA command %#04x: no bus-master DMA engine is modelled; the transfer never starts", cmd)
        self._load_count(cmd in LBA48_COMMANDS)
        self.master.status = STAT_DRDY | STAT_DSC | STAT_DRQ
        self._buffer, self._pos, self._on_buffer_done = b"", 0, None
        return False

    def _cmd_verify(self, cmd: int) -> bool:
        self._load_count(cmd in LBA48_COMMANDS)
        return True

    def _cmd_check_power_mode(self, cmd: int) -> bool:
        self.master.nsector = 0xFF          # active or idle
        return True

    def _cmd_specify(self, cmd: int) -> bool:
        tf = self.master
        self.heads = (tf.select & SEL_HEAD) + 1
        self.sectors_per_track = tf.nsector
        self._raise_irq()
        return True

    def _cmd_set_multiple(self, cmd: int) -> bool:
        n = self.master.nsector
        if n > MAX_MULT_SECTORS or n & (n - 1):
            self._abort()
        else:
            self.mult_sectors = n
        return True

    def _cmd_set_features(self, cmd: int) -> bool:
        tf = self.master
        feature = tf.feature
        if feature == FEATURE_WCACHE_ON:
            self.identify[85] = 0x4021
        elif feature in (FEATURE_REVERT_ON_RESET, FEATURE_KEEP_ON_RESET):
            self._reset_reverts = feature == FEATURE_REVERT_ON_RESET
        elif feature == FEATURE_WCACHE_OFF:
            self.identify[85] = 0x4001
            return self._cmd_flush(cmd)
        elif feature == FEATURE_XFER_MODE:
            mode, value = tf.nsector >> 3, tf.nsector & 7
            words = {0: (0x07, 0x07, 0x3F), 1: (0x07, 0x07, 0x3F), 2: (0x07 | 1 << (value + 8), 0x07, 0x3F),
                     4: (0x07, 0x07 | 1 << (value + 8), 0x3F), 8: (0x07, 0x07, 0x3F | 1 << (value + 8))}.get(mode)
            if words is None:
                self._abort()
            else:
                self.identify[62], self.identify[63], self.identify[88] = words
        elif feature not in FEATURE_NOPS:
            self._abort()
        return True

    def _cmd_flush(self, cmd: int) -> bool:
        self.drive.flush()
        self.master.status = STAT_DRDY | STAT_DSC
        self._raise_irq()
        return False

    def _cmd_diagnose(self, cmd: int) -> bool:
        tf = self.master
        tf.select = SEL_ALWAYS_ON
        tf.set_signature(present=True)
        tf.status = STAT_DRDY | STAT_DSC
        tf.error = DIAG_PASSED
        self._raise_irq()
        return False

    def _cmd_read_native_max(self, cmd: int) -> bool:
        self._load_count(cmd in LBA48_COMMANDS)
        self._set_lba(self.drive.total_sectors - 1)
        return True


class _ControlBlock:
    """Port 0x3F6: alternate status (read, does not acknowledge the interrupt) and device control (write)."""

    def __init__(self, channel: AtaChannel) -> None:
        self._channel = channel

    def read(self, offset: int, size: int) -> int:
        return self._channel.alternate_status() | (((1 << (8 * size)) - 1) & ~0xFF)

    def write(self, offset: int, size: int, value: int) -> None:
        self._channel.write_control(value & 0xFF)


AtaDisk = AtaChannel    # the name vmm/machine.py imports; AtaChannel(path, irq) is that device
