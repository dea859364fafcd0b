/* Prints what the boot loader handed over: protocol, command line, modules (size, checksum, command
 * line), and the memory map, so loaders can be compared with QEMU's. */
#include "kernel.h"

struct mb1_info {
    u32 flags, mem_lower, mem_upper, boot_device, cmdline, mods_count, mods_addr;
    u32 syms[4];
    u32 mmap_length, mmap_addr;
};
struct mb1_module { u32 start, end, cmdline, reserved; };
struct __attribute__((packed)) mb1_mmap { u32 size; u64 base, length; u32 type; };

struct pvh_start_info {
    u32 magic, version, flags, nr_modules;
    u64 modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
    u32 memmap_entries, reserved;
};
struct pvh_module { u64 paddr, size, cmdline_paddr, reserved; };
struct pvh_memmap { u64 addr, size; u32 type, reserved; };

static u32 fnv1a(const u8 *p, u64 n)
{
    u32 h = 0x811c9dc5u;
    while (n--)
        h = (h ^ *p++) * 0x01000193u;
    return h;
}

static const char *str(u64 pa)
{
    return pa ? (const char *)(uptr)pa : "(none)";
}

static void module(u32 i, u64 start, u64 size, u64 cmdline)
{
    printf("module %u: %u bytes, fnv1a %08x, cmdline \"%s\"\n", i, (u32)size, fnv1a((const u8 *)(uptr)start, size),
           str(cmdline));
}

static void region(u64 base, u64 length, u32 type)
{
    printf("memory: %016llx-%016llx type %u\n", base, base + length - 1, type);
}

int kmain(u32 boot_magic, uptr boot_info)
{
    serial_init();
    if (boot_magic == MB1_BOOT_MAGIC) {
        const struct mb1_info *mbi = (const struct mb1_info *)boot_info;
        printf("multiboot: flags %x, mem_lower %u KiB, mem_upper %u KiB\n", mbi->flags, mbi->mem_lower,
               mbi->mem_upper);
        printf("cmdline \"%s\"\n", str(mbi->flags & 4 ? mbi->cmdline : 0));
        const struct mb1_module *mods = (const struct mb1_module *)(uptr)mbi->mods_addr;
        for (u32 i = 0; i < mbi->mods_count; i++)
            module(i, mods[i].start, mods[i].end - mods[i].start, mods[i].cmdline);
        for (uptr p = mbi->mmap_addr; p < mbi->mmap_addr + mbi->mmap_length;) {
            const struct mb1_mmap *e = (const struct mb1_mmap *)p;
            region(e->base, e->length, e->type);
            p += e->size + 4;
        }
    } else if (*(const u32 *)boot_info == PVH_START_MAGIC) {
        const struct pvh_start_info *si = (const struct pvh_start_info *)boot_info;
        printf("pvh: version %u, flags %x, %u modules, %u memory map entries\n", si->version, si->flags,
               si->nr_modules, si->memmap_entries);
        printf("cmdline \"%s\"\n", str(si->cmdline_paddr));
        const struct pvh_module *mods = (const struct pvh_module *)(uptr)si->modlist_paddr;
        for (u32 i = 0; i < si->nr_modules; i++)
            module(i, mods[i].paddr, mods[i].size, mods[i].cmdline_paddr);
        const struct pvh_memmap *map = (const struct pvh_memmap *)(uptr)si->memmap_paddr;
        for (u32 i = 0; i < si->memmap_entries; i++)
            region(map[i].addr, map[i].size, map[i].type);
    } else {
        puts("FAIL: unknown boot protocol\n");
        return EXIT_FAIL;
    }
    puts("PASS\n");
    return EXIT_PASS;
}
