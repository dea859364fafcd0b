/* Interrupt windows without I/O: an IRQ made pending with IF=0 must be taken right after the
 * instruction that sets IF (sti: after the next one; popf, iret: at once), before any port access. */
#include "kernel.h"

volatile u32 ticks;
void irq0_entry(void);

struct __attribute__((packed)) gate { u16 off_lo, sel; u8 zero, type; u16 off_hi; };
static struct gate idt[0x30];
struct __attribute__((packed)) { u16 limit; u32 base; } idtr = { sizeof(idt) - 1, 0 };

/* IRQ0 pending at the PIC with IF=0: a PIT one-shot, polled through the PIC's IRR (port I/O moves time). */
static int make_irq0_pending(void)
{
    outb(0x43, 0x30);                 /* counter 0, lo/hi, mode 0 (one shot) */
    outb(0x40, 100);
    outb(0x40, 0);
    for (int i = 0; i < 100000; i++) {
        outb(0x20, 0x0a);             /* OCW3: read IRR */
        if (inb(0x20) & 1)
            return 1;
    }
    return 0;
}

static u32 spin_until_tick(u32 before)
{
    u32 n;
    for (n = 0; n < 1000 && ticks == before; n++)
        __asm__ volatile("" ::: "memory");
    return n;
}

int kmain(u32 boot_magic, uptr boot_info)
{
    serial_init();
    idt[0x20] = (struct gate){ (u16)(uptr)irq0_entry, 0x08, 0, 0x8e, (u16)((uptr)irq0_entry >> 16) };
    idtr.base = (u32)(uptr)idt;
    __asm__ volatile("lidt %0" : : "m"(idtr));
    outb(0x20, 0x11); outb(0x21, 0x20); outb(0x21, 0x04); outb(0x21, 0x01);   /* master: vectors 0x20 */
    outb(0xa0, 0x11); outb(0xa1, 0x28); outb(0xa1, 0x02); outb(0xa1, 0x01);
    outb(0xa1, 0xff);
    outb(0x21, 0xfe);                 /* only IRQ0 */
    int fails = 0;

    /* sti: the interrupt comes after the instruction that follows sti, before the spin loop ends */
    if (!make_irq0_pending()) { puts("FAIL: IRQ0 never became pending\n"); return EXIT_FAIL; }
    u32 before = ticks;
    __asm__ volatile("sti; nop; nop" ::: "memory");
    u32 spins = spin_until_tick(before);
    __asm__ volatile("cli");
    printf("sti: tick taken %s\n", spins < 1000 ? "before the spin loop ended" : "never");
    fails += spins >= 1000;

    /* popf that sets IF */
    if (!make_irq0_pending()) { puts("FAIL: IRQ0 never became pending\n"); return EXIT_FAIL; }
    before = ticks;
    __asm__ volatile("pushfl; orl $0x200, (%%esp); popfl" ::: "memory");
    spins = spin_until_tick(before);
    __asm__ volatile("cli");
    printf("popf: tick taken %s\n", spins < 1000 ? "before the spin loop ended" : "never");
    fails += spins >= 1000;

    /* iret to a frame with IF set */
    if (!make_irq0_pending()) { puts("FAIL: IRQ0 never became pending\n"); return EXIT_FAIL; }
    before = ticks;
    __asm__ volatile("pushfl; orl $0x200, (%%esp); pushl %%cs; pushl $1f; iret; 1:" ::: "memory");
    spins = spin_until_tick(before);
    __asm__ volatile("cli");
    printf("iret: tick taken %s\n", spins < 1000 ? "before the spin loop ended" : "never");
    fails += spins >= 1000;

    if (fails) {
        printf("FAIL: %d windows missed\n", fails);
        return EXIT_FAIL;
    }
    puts("PASS\n");
    return EXIT_PASS;
}
