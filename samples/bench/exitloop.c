/* Exit-cost benchmark guest: EXITS port writes to a device register, then a check that it kept the value. */
#include "kernel.h"

void exit_loop(u32 n);

int kmain(u32 boot_magic, uptr boot_info)
{
    serial_init();
    outb(0x21, 0xff);           /* mask every PIC input, as a guest that takes no interrupts does */
    outb(0xa1, 0xff);
    exit_loop(EXITS);
    u8 scratch = inb(0x3ff);
    printf("%u port writes done, scratch register holds %x\n", (u32)EXITS, scratch);
    if (scratch != 0x5a) {
        puts("FAIL: scratch register lost the value\n");
        return EXIT_FAIL;
    }
    puts("PASS\n");
    return EXIT_PASS;
}
