/* IRQ0 entry: count the tick, acknowledge it at the PIC, return. */
        .code32
        .text
        .globl irq0_entry
irq0_entry:
        pushl   %eax
        incl    ticks
        movb    $0x20, %al
        outb    %al, $0x20
        popl    %eax
        iret
