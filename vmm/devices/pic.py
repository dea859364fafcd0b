"""The cascaded 8259A pair (master IRQ0-7, slave IRQ8-15 on master IRQ2) and the ELCR, as QEMU's i8259.c."""
from __future__ import annotations

import logging

from .bytewise import read_bytewise, write_bytewise

log = logging.getLogger("vmm.devices")

CASCADE_IRQ = 2
SPURIOUS_IRQ = 7
NO_IRQ = 8                      # get_priority's "nothing in the mask"
ICW1, ICW1_IC4, ICW1_SNGL, ICW1_LTIM = 0x10, 0x01, 0x02, 0x08
OCW3, OCW3_POLL, OCW3_RR, OCW3_RIS, OCW3_ESMM, OCW3_SMM = 0x08, 0x04, 0x02, 0x01, 0x40, 0x20
ICW4_AEOI, ICW4_SFNM = 0x02, 0x10
POLL_VALID = 0x80
ELCR_MASK_MASTER = 0xF8         # IRQ0-2 are always edge-triggered
ELCR_MASK_SLAVE = 0xDE          # IRQ8 and IRQ13 are always edge-triggered


class Pic8259:
    """One 8259A: IRR/ISR/IMR, initialization words, priorities, EOI, poll; its INT output is computed."""

    def __init__(self, is_master: bool) -> None:
        self.is_master = is_master
        self.elcr = 0
        self.elcr_mask = ELCR_MASK_MASTER if is_master else ELCR_MASK_SLAVE
        self.irr = 0
        self._reset()

    def _reset(self) -> None:
        """What ICW1 (and QEMU's reset) does: everything but ELCR and the level-triggered IRR bits."""
        self.last_irr = 0                   # input levels, for edge detection
        self.irr &= self.elcr
        self.imr = 0
        self.isr = 0
        self.priority_add = 0               # lowest-priority rotation
        self.irq_base = 0
        self.read_isr = False
        self.poll = False
        self.special_mask = False
        self.init_state = 0                 # 0: operational; 1-3: expecting ICW2-ICW4
        self.auto_eoi = False
        self.rotate_on_auto_eoi = False
        self.special_fully_nested = False
        self.init4 = False
        self.single = False

    # -- inputs and output -----------------------------------------------------------------------
    def set_input(self, irq: int, high: bool) -> None:
        mask = 1 << irq
        if self.elcr & mask:                # level-triggered: IRR follows the line
            self.irr = self.irr | mask if high else self.irr & ~mask
        elif high and not self.last_irr & mask:
            self.irr |= mask                # edge-triggered: only a rising edge requests
        self.last_irr = self.last_irr | mask if high else self.last_irr & ~mask

    def _priority(self, mask: int) -> int:
        if not mask:
            return NO_IRQ
        priority = 0
        while not mask & (1 << ((priority + self.priority_add) & 7)):
            priority += 1
        return priority

    def requested_irq(self) -> int:
        """The input the INT output is asserted for, or -1 if INT is low."""
        priority = self._priority(self.irr & ~self.imr)
        if priority == NO_IRQ:
            return -1
        in_service = self.isr
        if self.special_mask:
            in_service &= ~self.imr
        if self.special_fully_nested and self.is_master:
            in_service &= ~(1 << CASCADE_IRQ)
        if priority < self._priority(in_service):
            return (priority + self.priority_add) & 7
        return -1

    def intack(self, irq: int) -> None:
        if self.auto_eoi:
            if self.rotate_on_auto_eoi:
                self.priority_add = (irq + 1) & 7
        else:
            self.isr |= 1 << irq
        if not self.elcr & (1 << irq):      # a level-triggered request stays until the line drops
            self.irr &= ~(1 << irq)

    # -- ports -----------------------------------------------------------------------------------
    def read_port(self, port: int) -> int:
        if self.poll:
            self.poll = False
            irq = self.requested_irq()
            if irq < 0:
                return 0
            self.intack(irq)
            return irq | POLL_VALID
        if port == 0:
            return self.isr if self.read_isr else self.irr
        return self.imr

    def write_port(self, port: int, value: int) -> None:
        if port == 1:
            self._write_data(value)
        elif value & ICW1:
            self._reset()
            self.init_state = 1
            self.init4 = bool(value & ICW1_IC4)
            self.single = bool(value & ICW1_SNGL)
            if value & ICW1_LTIM:
                log.info("pic: ICW1 asks for level-triggered mode; ignored as QEMU 7.2 does (use the ELCR)")
        elif value & OCW3:
            if value & OCW3_POLL:
                self.poll = True
            if value & OCW3_RR:
                self.read_isr = bool(value & OCW3_RIS)
            if value & OCW3_ESMM:
                self.special_mask = bool(value & OCW3_SMM)
        else:
            self._ocw2(value)

    def _write_data(self, value: int) -> None:
        if self.init_state == 0:
            self.imr = value                # OCW1
        elif self.init_state == 1:
            self.irq_base = value & 0xF8    # ICW2
            self.init_state = (3 if self.init4 else 0) if self.single else 2
        elif self.init_state == 2:
            self.init_state = 3 if self.init4 else 0    # ICW3: the cascade wiring is fixed
        else:
            self.special_fully_nested = bool(value & ICW4_SFNM)
            self.auto_eoi = bool(value & ICW4_AEOI)
            self.init_state = 0

    def _ocw2(self, value: int) -> None:
        cmd = value >> 5
        if cmd in (0, 4):                   # clear / set rotate in automatic EOI mode
            self.rotate_on_auto_eoi = bool(cmd >> 2)
        elif cmd in (1, 5):                 # non-specific EOI (5: and rotate)
            priority = self._priority(self.isr)
            if priority != NO_IRQ:
                irq = (priority + self.priority_add) & 7
                self.isr &= ~(1 << irq)
                if cmd == 5:
                    self.priority_add = (irq + 1) & 7
        elif cmd == 3:                      # specific EOI
            self.isr &= ~(1 << (value & 7))
        elif cmd == 6:                      # set priority
            self.priority_add = (value + 1) & 7
        elif cmd == 7:                      # specific EOI and rotate
            irq = value & 7
            self.isr &= ~(1 << irq)
            self.priority_add = (irq + 1) & 7


class _PicPorts:
    """One chip's two ports (command at offset 0, data at offset 1) as a bus device."""

    def __init__(self, pair: PicPair, chip: Pic8259) -> None:
        self._pair = pair
        self._chip = chip

    def read(self, offset: int, size: int) -> int:
        return read_bytewise(self._read_byte, offset, size, 2)

    def write(self, offset: int, size: int, value: int) -> None:
        write_bytewise(self._write_byte, offset, size, value, 2)

    def _read_byte(self, offset: int) -> int:
        value = self._chip.read_port(offset)
        self._pair.update()
        return value

    def _write_byte(self, offset: int, value: int) -> None:
        self._chip.write_port(offset, value)
        self._pair.update()


class _ElcrPorts:
    """The edge/level control registers (0x4d0 master, 0x4d1 slave) as a two-byte bus device."""

    def __init__(self, pair: PicPair) -> None:
        self._chips = (pair.master_chip, pair.slave_chip)

    def read(self, offset: int, size: int) -> int:
        return read_bytewise(lambda off: self._chips[off].elcr, offset, size, 2)

    def write(self, offset: int, size: int, value: int) -> None:
        write_bytewise(self._write_byte, offset, size, value, 2)

    def _write_byte(self, offset: int, value: int) -> None:
        chip = self._chips[offset]
        chip.elcr = value & chip.elcr_mask


class _PicInput:
    """The wire into IRQ n of the pair."""

    def __init__(self, pair: PicPair, irq: int) -> None:
        self._pair = pair
        self._irq = irq

    def set_level(self, high: bool) -> None:
        self._pair.set_irq(self._irq, high)


class PicPair:
    """The two 8259As of a PC: 16 IRQ inputs, the INTR output to the CPU and the INTA cycle.

    Bus devices: `master` (0x20-0x21), `slave` (0xa0-0xa1), `elcr` (0x4d0-0x4d1); the chips
    themselves are `master_chip` and `slave_chip`.

    Power-on state is QEMU's reset (vector bases 0, nothing masked, edge-triggered); what SeaBIOS
    leaves behind (bases 0x08/0x70, IMR b8/8e) is for a firmware model to program through the ports.
    """

    def __init__(self) -> None:
        self.master_chip = Pic8259(is_master=True)
        self.slave_chip = Pic8259(is_master=False)
        self.master = _PicPorts(self, self.master_chip)     # ports 0x20-0x21
        self.slave = _PicPorts(self, self.slave_chip)       # ports 0xa0-0xa1
        self.elcr = _ElcrPorts(self)                        # ports 0x4d0-0x4d1
        self._lines = tuple(_PicInput(self, n) for n in range(16))

    def irq_line(self, n: int) -> _PicInput:
        return self._lines[n]

    def set_irq(self, n: int, high: bool) -> None:
        (self.master_chip if n < 8 else self.slave_chip).set_input(n & 7, high)
        self.update()

    def update(self) -> None:
        """Propagate the slave's INT output to master IRQ2 (call after any state change)."""
        self.master_chip.set_input(CASCADE_IRQ, self.slave_chip.requested_irq() >= 0)

    def pending(self) -> bool:
        """The INTR output to the CPU."""
        return self.master_chip.requested_irq() >= 0

    def acknowledge(self) -> int:
        """The INTA cycle: the vector to deliver; ISR/IRR updated; a spurious IRQ7/IRQ15 if nothing is left."""
        master, slave = self.master_chip, self.slave_chip
        irq = master.requested_irq()
        if irq < 0:
            vector = master.irq_base + SPURIOUS_IRQ
        elif irq == CASCADE_IRQ:
            irq2 = slave.requested_irq()
            if irq2 >= 0:
                slave.intack(irq2)
            else:
                irq2 = SPURIOUS_IRQ
            vector = slave.irq_base + irq2
            master.intack(irq)
        else:
            vector = master.irq_base + irq
            master.intack(irq)
        self.update()
        return vector
