/* Minimal guest: names its boot protocol and the memory it was given, then exits with pass. */
#include "kernel.h"

int kmain(u32 boot_magic, uptr boot_info)
{
    serial_init();
    printf("hello from a %u-bit guest\n", (u32)sizeof(void *) * 8);
    if (boot_magic == MB1_BOOT_MAGIC) {
        const u32 *mbi = (const u32 *)boot_info;
        printf("multiboot: flags %x, mem_lower %u KiB\n", mbi[0], mbi[1]);
    } else if (*(const u32 *)boot_info == PVH_START_MAGIC) {
        printf("pvh: start_info version %u\n", ((const u32 *)boot_info)[1]);
    } else {
        puts("FAIL: unknown boot protocol\n");
        return EXIT_FAIL;
    }
    puts("PASS\n");
    return EXIT_PASS;
}
