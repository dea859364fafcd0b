"""16550A UART registers (COM1): transmit to a sink, receive from a queue, one interrupt line; as QEMU's serial.c."""
from __future__ import annotations

import logging
from collections import deque
from typing import Callable

from .base import IrqLine, NullIrqLine
from .bytewise import read_bytewise, write_bytewise

log = logging.getLogger("vmm.devices")

# Register offsets
RBR_THR_DLL = 0
IER_DLM = 1
IIR_FCR = 2
LCR = 3
MCR = 4
LSR = 5
MSR = 6
SCR = 7
PORT_SPAN = 8

IER_RDI, IER_THRI, IER_RLSI, IER_MSI = 0x01, 0x02, 0x04, 0x08
IER_MASK = 0x0F
IIR_NO_INT, IIR_MSI, IIR_THRI, IIR_RDI = 0x01, 0x00, 0x02, 0x04
IIR_FIFO_ENABLED = 0xC0
FCR_FE, FCR_RFR, FCR_XFR = 0x01, 0x02, 0x04
FCR_STORED_MASK = 0xC9
LCR_DLAB = 0x80
MCR_DTR, MCR_RTS, MCR_OUT1, MCR_OUT2, MCR_LOOP = 0x01, 0x02, 0x04, 0x08, 0x10
MCR_MASK = 0x1F
LSR_DR, LSR_THRE, LSR_TEMT = 0x01, 0x20, 0x40
MSR_DCD, MSR_DSR, MSR_CTS = 0x80, 0x20, 0x10
MSR_ANY_DELTA = 0x0F

RESET_DIVISOR = 0x0C                        # 9600 baud, QEMU's reset value
RESET_MSR = MSR_DCD | MSR_DSR | MSR_CTS     # a stdio backend reports carrier, data set ready, clear to send


class Uart16550:
    """A 16550A's eight registers at offsets 0-7: THR/RBR/DLL, IER/DLM, IIR/FCR, LCR, MCR, LSR, MSR, SCR.

    Transmission is instantaneous, so LSR always shows the transmitter empty (THRE|TEMT) and, as in QEMU,
    every THR write re-arms the THR-empty interrupt. Received bytes come from `feed()`; the receive
    interrupt is raised as soon as a byte is queued (FIFO trigger levels and the character timeout,
    which depend on host timing in QEMU, are not modelled; the unbounded queue never overruns, so no
    line-status errors or interrupts occur).
    """

    def __init__(self, sink: Callable[[bytes], None], irq: IrqLine | None = None) -> None:
        self._sink = sink
        self._irq = irq or NullIrqLine()
        self._rx: deque[int] = deque()
        self._rbr = 0
        self.divisor = RESET_DIVISOR
        self.ier = 0
        self.lcr = 0
        self.mcr = MCR_OUT2
        self.fcr = 0
        self.scr = 0
        self._msr = RESET_MSR
        self._thr_pending = False
        self._iir = IIR_NO_INT
        self._irq_high = False
        self._update_irq()

    # -- host side -------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Queue bytes typed at the console; the guest reads them from RBR."""
        self._rx.extend(data)
        self._update_irq()

    # -- register access -------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        return read_bytewise(self._read_byte, offset, size, PORT_SPAN)

    def write(self, offset: int, size: int, value: int) -> None:
        write_bytewise(self._write_byte, offset, size, value, PORT_SPAN)

    def _read_byte(self, offset: int) -> int:
        dlab = self.lcr & LCR_DLAB
        if offset == RBR_THR_DLL:
            if dlab:
                return self.divisor & 0xFF
            if self._rx:
                self._rbr = self._rx.popleft()
            self._update_irq()
            return self._rbr
        if offset == IER_DLM:
            return (self.divisor >> 8) & 0xFF if dlab else self.ier
        if offset == IIR_FCR:
            value = self._iir
            if value & 0x0F == IIR_THRI:
                self._thr_pending = False       # reading IIR acknowledges a THR-empty interrupt
                self._update_irq()
            return value
        if offset == LCR:
            return self.lcr
        if offset == MCR:
            return self.mcr
        if offset == LSR:
            return self._lsr()
        if offset == MSR:
            if self.mcr & MCR_LOOP:             # modem inputs follow the modem outputs in loopback
                return ((self.mcr & 0x0C) << 4) | ((self.mcr & MCR_RTS) << 3) | ((self.mcr & MCR_DTR) << 5)
            value = self._msr
            self._msr &= ~MSR_ANY_DELTA
            return value
        return self.scr

    def _write_byte(self, offset: int, value: int) -> None:
        dlab = self.lcr & LCR_DLAB
        if offset == RBR_THR_DLL:
            if dlab:
                self.divisor = (self.divisor & 0xFF00) | value
            else:
                self._transmit(value)
        elif offset == IER_DLM:
            if dlab:
                self.divisor = (self.divisor & 0x00FF) | (value << 8)
            else:
                self._write_ier(value & IER_MASK)
        elif offset == IIR_FCR:
            self._write_fcr(value)
        elif offset == LCR:
            self.lcr = value
        elif offset == MCR:
            self.mcr = value & MCR_MASK
        elif offset == SCR:
            self.scr = value
        else:
            log.debug("uart: write %#x to read-only register %d ignored", value, offset)

    # -- behaviour -------------------------------------------------------------------------------
    def _transmit(self, byte: int) -> None:
        self._thr_pending = False               # THR full: a pending THR-empty interrupt drops ...
        self._update_irq()
        if self.mcr & MCR_LOOP:
            self._rx.append(byte)
        else:
            self._sink(bytes((byte,)))
        self._thr_pending = True                # ... and rises again (a new edge) as THR empties at once
        self._update_irq()

    def _write_ier(self, value: int) -> None:
        changed = self.ier ^ value
        self.ier = value
        if changed & IER_THRI:
            # Enabling the THR-empty interrupt raises it while THR is empty (QEMU, Bochs; Windows needs it).
            self._thr_pending = bool(value & IER_THRI)
        if changed:
            self._update_irq()

    def _write_fcr(self, value: int) -> None:
        if value == self.fcr:
            return
        if (value ^ self.fcr) & FCR_FE:         # toggling the FIFO enable flushes both FIFOs
            value |= FCR_RFR | FCR_XFR
        if value & FCR_RFR:
            self._rx.clear()
        if value & FCR_XFR:
            self._thr_pending = True
        self.fcr = value & FCR_STORED_MASK
        self._update_irq()

    def _lsr(self) -> int:
        return LSR_THRE | LSR_TEMT | (LSR_DR if self._rx else 0)

    def _update_irq(self) -> None:
        if self.ier & IER_RDI and self._rx:
            ident = IIR_RDI
        elif self.ier & IER_THRI and self._thr_pending:
            ident = IIR_THRI
        elif self.ier & IER_MSI and self._msr & MSR_ANY_DELTA:
            ident = IIR_MSI
        else:
            ident = IIR_NO_INT
        self._iir = ident | (IIR_FIFO_ENABLED if self.fcr & FCR_FE else 0)
        high = ident != IIR_NO_INT
        if high != self._irq_high:
            self._irq_high = high
            self._irq.set_level(high)
