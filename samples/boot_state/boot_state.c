/* Prints the device state a guest finds at entry, before touching anything: the firmware's leftovers. */
#include "kernel.h"

#define LAPIC ((volatile u32 *)0xFEE00000u)
#define IOAPIC ((volatile u32 *)0xFEC00000u)

#if defined(__x86_64__)
/* The boot stub identity-maps only the first GiB; map the 2 MiB page holding both APICs (0xFEC00000-0xFEFFFFFF
 * lies in the 4th GiB: PDPT entry 3 -> a page directory whose entry 0x1F6/0x1F7 map 0xFEC00000/0xFEE00000). */
static u64 apic_pd[512] __attribute__((aligned(4096)));

static void map_apics(void)
{
    u64 cr3;
    __asm__ volatile("mov %%cr3, %0" : "=r"(cr3));
    u64 *pml4 = (u64 *)(uptr)(cr3 & ~0xfffull);
    u64 *pdpt = (u64 *)(uptr)(pml4[0] & ~0xfffull);
    apic_pd[0x1f6] = 0xFEC00000ull | 0x9b;     /* P | RW | PWT | PCD | PS */
    apic_pd[0x1f7] = 0xFEE00000ull | 0x9b;
    pdpt[3] = (u64)(uptr)apic_pd | 0x3;
    __asm__ volatile("mov %0, %%cr3" : : "r"(cr3) : "memory");
}
#else
static void map_apics(void) {}
#endif

static u8 cmos(u8 reg)
{
    outb(0x70, reg);
    return inb(0x71);
}

static u32 ioapic_read(u32 reg)
{
    IOAPIC[0] = reg;
    return IOAPIC[4];
}

int kmain(u32 boot_magic, uptr boot_info)
{
    uptr eflags;
    __asm__ volatile("pushf; pop %0" : "=r"(eflags));
    /* Read the PICs before serial_init touches anything. */
    u8 imr_master = inb(0x21), imr_slave = inb(0xa1);
    outb(0x20, 0x0a); u8 irr_master = inb(0x20);
    outb(0x20, 0x0b); u8 isr_master = inb(0x20);
    outb(0xa0, 0x0b); u8 isr_slave = inb(0xa0);
    outb(0x43, 0xe2);                              /* read-back: status of counter 0 */
    u8 pit0_status = inb(0x40) & 0x7f;            /* the OUT pin (bit 7) depends on time: masked */
    outb(0x43, 0xe8);                              /* read-back: status of counter 2 */
    u8 pit2_status = inb(0x42) & 0x7f;
    u8 port61 = inb(0x61) & 0x0f;                  /* refresh toggle (bit 4) and OUT2 (bit 5) are timing */
    serial_init();
    printf("boot: eflags %x, IF=%u\n", (u32)eflags, (u32)(eflags >> 9) & 1);
    printf("pic: imr %02x/%02x, isr %02x/%02x, irr(master, IRQ0 masked out) %02x\n",
           imr_master, imr_slave, isr_master, isr_slave, irr_master & 0xfe);
    printf("pit: counter 0 status %02x, counter 2 status %02x, port 61 low bits %x\n",
           pit0_status, pit2_status, port61);
    map_apics();
    printf("lapic: id %08x version %08x tpr %08x svr %08x ldr %08x dfr %08x\n",
           LAPIC[0x20 / 4], LAPIC[0x30 / 4], LAPIC[0x80 / 4], LAPIC[0xf0 / 4], LAPIC[0xd0 / 4], LAPIC[0xe0 / 4]);
    printf("lapic: lvt timer %08x lint0 %08x lint1 %08x error %08x, initial count %08x divide %08x\n",
           LAPIC[0x320 / 4], LAPIC[0x350 / 4], LAPIC[0x360 / 4], LAPIC[0x370 / 4], LAPIC[0x380 / 4],
           LAPIC[0x3e0 / 4]);
    u32 isr_or = 0, irr_or = 0;
    for (int i = 0; i < 8; i++) {
        isr_or |= LAPIC[(0x100 + i * 0x10) / 4];
        irr_or |= LAPIC[(0x200 + i * 0x10) / 4];
    }
    printf("lapic: isr %08x irr %08x\n", isr_or, irr_or);
    printf("ioapic: id %08x version %08x\n", ioapic_read(0), ioapic_read(1));
    for (u32 pin = 0; pin < 24; pin++) {
        u32 lo = ioapic_read(0x10 + 2 * pin), hi = ioapic_read(0x11 + 2 * pin);
        printf("ioapic pin %u: %08x %08x\n", pin, hi, lo & ~(1u << 12 | 1u << 14));  /* delivery status, IRR: live */
    }
    printf("cmos: a %02x b %02x d %02x, shutdown %02x, equipment %02x\n", cmos(0x0a) & 0x7f, cmos(0x0b), cmos(0x0d),
           cmos(0x0f), cmos(0x14));
    printf("cmos: base mem %02x%02x, ext mem %02x%02x/%02x%02x, above 16M %02x%02x, above 4G %02x%02x%02x\n",
           cmos(0x16), cmos(0x15), cmos(0x18), cmos(0x17), cmos(0x31), cmos(0x30), cmos(0x35), cmos(0x34),
           cmos(0x5d), cmos(0x5c), cmos(0x5b));
    puts("PASS\n");
    return EXIT_PASS;
}
