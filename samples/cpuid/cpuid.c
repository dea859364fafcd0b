/* CPUID dump: prints every leaf up to the maximum basic and extended leaf, so CPU models can be compared. */
#include "kernel.h"

static void cpuid(u32 leaf, u32 sub, u32 r[4])
{
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

static void dump(u32 leaf, u32 sub)
{
    u32 r[4];
    cpuid(leaf, sub, r);
    printf("%08x.%x: %08x %08x %08x %08x\n", leaf, sub, r[0], r[1], r[2], r[3]);
}

static int has_subleaves(u32 leaf)
{
    return leaf == 4 || leaf == 7 || leaf == 0xb || leaf == 0xd;
}

int kmain(u32 boot_magic, uptr boot_info)
{
    u32 r[4];
    serial_init();
    static const u32 bases[] = { 0, 0x80000000u };
    for (int b = 0; b < 2; b++) {
        u32 base = bases[b];
        cpuid(base, 0, r);
        u32 max = r[0];
        if (max < base || max > base + 0x40)
            max = base;
        for (u32 leaf = base; leaf <= max; leaf++) {
            int subs = has_subleaves(leaf) ? 4 : 1;
            for (int s = 0; s < subs; s++)
                dump(leaf, (u32)s);
        }
    }
    dump(0x40000000u, 0);
    dump(0x40000001u, 0);
    /* Leaves past the maximum: the CPU answers with the highest basic leaf. */
    dump(0x20u, 0);
    dump(0x80000020u, 0);
    puts("PASS\n");
    return EXIT_PASS;
}
