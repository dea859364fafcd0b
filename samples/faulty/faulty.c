/* A guest that misbehaves in one chosen way (MISDEED), so the VMM's diagnostics can be tested. */
#include "kernel.h"

#define TRIPLE_FAULT 1   /* empty IDT, then int3: #GP, #DF, triple fault */
#define OUTSIDE_RAM 2    /* store to physical 0x7fff0000, beyond 128 MiB of RAM and below every device */
#define SPIN 3           /* an endless loop with interrupts off */
#define HALT 4           /* cli; hlt: nothing can ever wake the CPU */

int kmain(u32 boot_magic, uptr boot_info)
{
    serial_init();
    printf("misdeed %d\n", MISDEED);
#if MISDEED == TRIPLE_FAULT
    struct __attribute__((packed)) { u16 limit; u32 base; } empty_idt = { 0, 0 };
    __asm__ volatile("lidt %0; int3" : : "m"(empty_idt));
#elif MISDEED == OUTSIDE_RAM
    *(volatile u32 *)0x7fff0000u = 0x12345678;
#elif MISDEED == SPIN
    for (;;)
        __asm__ volatile("" ::: "memory");
#elif MISDEED == HALT
    __asm__ volatile("cli; hlt");
#endif
    puts("still running\n");
    return EXIT_FAIL;
}
