"""8259A pair: initialization, acknowledge/EOI ordering, priorities, cascade, spurious IRQs, ELCR (QEMU's i8259)."""
from vmm.devices.pic import PicPair


def init(pic, master_base=0x20, slave_base=0x28, icw4=0x01):
    for port, values in ((pic.master, (0x11, master_base, 0x04, icw4)), (pic.slave, (0x11, slave_base, 0x02, icw4))):
        port.write(0, 1, values[0])
        for v in values[1:]:
            port.write(1, 1, v)


def pulse(pic, n):
    pic.irq_line(n).set_level(True)
    pic.irq_line(n).set_level(False)


def test_reset_state_is_qemus():
    pic = PicPair()
    assert pic.master.read(1, 1) == 0 and pic.slave.read(1, 1) == 0     # nothing masked
    assert not pic.pending()
    pulse(pic, 0)
    assert pic.acknowledge() == 0x00                    # vector base 0 until ICW2


def test_init_acknowledge_eoi_order():
    pic = PicPair()
    init(pic)
    pulse(pic, 1)
    pulse(pic, 0)
    assert pic.pending()
    assert pic.acknowledge() == 0x20                    # IRQ0 has the highest priority
    assert pic.master_chip.isr == 0x01 and pic.master_chip.irr == 0x02
    assert not pic.pending()                            # IRQ1 waits for IRQ0's EOI
    pic.master.write(0, 1, 0x20)                        # non-specific EOI
    assert pic.pending() and pic.acknowledge() == 0x21
    pic.master.write(0, 1, 0x20)
    assert pic.master_chip.isr == 0 and not pic.pending()


def test_higher_priority_nests():
    pic = PicPair()
    init(pic)
    pulse(pic, 3)
    assert pic.acknowledge() == 0x23
    pulse(pic, 1)
    assert pic.pending() and pic.acknowledge() == 0x21
    assert pic.master_chip.isr == 0x0A
    pic.master.write(0, 1, 0x20)                        # EOI ends the highest in service: IRQ1
    assert pic.master_chip.isr == 0x08


def test_edge_needs_the_line_to_drop():
    pic = PicPair()
    init(pic)
    line = pic.irq_line(4)
    line.set_level(True)
    assert pic.acknowledge() == 0x24
    pic.master.write(0, 1, 0x20)
    line.set_level(True)                                # still high: no new request
    assert not pic.pending()
    line.set_level(False)
    line.set_level(True)
    assert pic.pending()


def test_mask_and_ocw3_register_reads():
    pic = PicPair()
    init(pic)
    pic.master.write(1, 1, 0xFB)
    pulse(pic, 0)
    assert not pic.pending()
    pic.master.write(0, 1, 0x0A)
    assert pic.master.read(0, 1) == 0x01                # IRR
    pic.master.write(1, 1, 0x00)
    pic.acknowledge()
    pic.master.write(0, 1, 0x0B)
    assert pic.master.read(0, 1) == 0x01                # ISR
    assert pic.master.read(1, 1) == 0x00                # IMR


def test_cascade_vector_and_both_eois():
    pic = PicPair()
    init(pic)
    pulse(pic, 10)
    assert pic.pending()
    assert pic.acknowledge() == 0x2A
    assert pic.master_chip.isr == 0x04 and pic.slave_chip.isr == 0x04
    pic.slave.write(0, 1, 0x20)
    pic.master.write(0, 1, 0x20)
    assert pic.master_chip.isr == 0 and pic.slave_chip.isr == 0


def test_spurious_irq7_and_irq15():
    pic = PicPair()
    init(pic)
    assert pic.acknowledge() == 0x27                    # nothing requested: master spurious
    assert pic.master_chip.isr == 0
    pulse(pic, 9)
    pic.slave.write(1, 1, 0x02)                         # the request vanishes before INTA
    assert pic.pending()                                # the master latched the cascade edge
    assert pic.acknowledge() == 0x2F                    # slave spurious, master ISR bit 2 set
    assert pic.master_chip.isr == 0x04 and pic.slave_chip.isr == 0


def test_auto_eoi_and_specific_eoi():
    pic = PicPair()
    init(pic, icw4=0x03)
    pulse(pic, 5)
    assert pic.acknowledge() == 0x25 and pic.master_chip.isr == 0
    init(pic)
    pulse(pic, 5)
    pulse(pic, 6)
    pic.acknowledge()
    pic.master.write(0, 1, 0x65)                        # specific EOI for IRQ5
    assert pic.master_chip.isr == 0 and pic.acknowledge() == 0x26


def test_poll_mode():
    pic = PicPair()
    init(pic)
    pulse(pic, 3)
    pic.master.write(0, 1, 0x0C)
    assert pic.master.read(0, 1) == 0x83 and pic.master_chip.isr == 0x08
    pic.master.write(0, 1, 0x0C)
    assert pic.master.read(0, 1) == 0x00                # nothing else (probe under QEMU read 00 too)


def test_elcr_level_triggered():
    pic = PicPair()
    init(pic)
    pic.elcr.write(0, 2, 0xFFFF)
    assert pic.elcr.read(0, 2) == 0xDEF8                # IRQ0-2, 8 and 13 cannot be level-triggered
    line = pic.irq_line(11)
    line.set_level(True)
    assert pic.acknowledge() == 0x2B
    assert pic.slave_chip.irr & 0x08                    # a level request stays while the line is high
    pic.slave.write(0, 1, 0x20)
    pic.master.write(0, 1, 0x20)
    assert pic.pending()
    line.set_level(False)
    assert not pic.slave_chip.irr & 0x08


def test_icw1_clears_edge_requests():
    pic = PicPair()
    init(pic)
    pulse(pic, 4)
    init(pic)
    assert not pic.pending() and pic.master_chip.irr == 0
