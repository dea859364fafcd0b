/* Fault escalation: `int 0x40` through a not-present gate raises #NP, whose own gate is not present
 * either: two contributory faults make #DF, the only present gate. The #DF handler reports it. */
#include "kernel.h"

void df_entry(void);
void probe_int40(void);
__asm__(".globl probe_int40\nprobe_int40: int $0x40\n ret\n");

#if defined(__x86_64__)
struct __attribute__((packed)) gate { u16 off_lo, sel; u8 ist, type; u16 off_mid; u32 off_hi, zero; };
struct __attribute__((packed)) { u16 limit; u64 base; } idtr;
#define CODE_SEL 0x08
#else
struct __attribute__((packed)) gate { u16 off_lo, sel; u8 zero, type; u16 off_hi; };
struct __attribute__((packed)) { u16 limit; u32 base; } idtr;
#define CODE_SEL 0x08
#endif
static struct gate idt[0x50];

void double_fault(uptr error_code, uptr rip)
{
    printf("#DF taken: error code %u, saved ip %s probe_int40\n", (u32)error_code,
           rip == (uptr)probe_int40 ? "at" : "not at");
    puts(error_code == 0 && rip == (uptr)probe_int40 ? "PASS\n" : "FAIL: wrong #DF frame\n");
    qemu_exit(error_code == 0 && rip == (uptr)probe_int40 ? EXIT_PASS : EXIT_FAIL);
}

int kmain(u32 boot_magic, uptr boot_info)
{
    serial_init();
    uptr h = (uptr)df_entry;
#if defined(__x86_64__)
    idt[8] = (struct gate){ (u16)h, CODE_SEL, 0, 0x8e, (u16)(h >> 16), (u32)((u64)h >> 32), 0 };
#else
    idt[8] = (struct gate){ (u16)h, CODE_SEL, 0, 0x8e, (u16)(h >> 16) };
#endif
    idtr.limit = sizeof(idt) - 1;
    idtr.base = (uptr)idt;
    __asm__ volatile("lidt %0" : : "m"(idtr));
    puts("int 0x40 through a not-present gate; #NP's gate not present either\n");
    probe_int40();
    puts("FAIL: int 0x40 returned\n");
    return EXIT_FAIL;
}
