/* Freestanding support shared by the sample kernels: port I/O, COM1 console, printing, isa-debug-exit. */
#ifndef SAMPLES_KERNEL_H
#define SAMPLES_KERNEL_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef unsigned long uptr;

#define MB1_BOOT_MAGIC 0x2BADB002u
#define PVH_START_MAGIC 0x336ec578u

#define EXIT_PASS 0 /* isa-debug-exit: QEMU exits with status (v << 1) | 1, so pass -> 1 */
#define EXIT_FAIL 1 /* fail -> 3 */

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u16 inw(u16 port) { u16 v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

void serial_init(void);
void putc(char c);
void puts(const char *s);
void put_hex(u64 v, int digits);
void put_dec(u64 v);
/* printf subset: %s %c %d %u %x %lx %llx %08x %p %% (l/ll accepted for 64-bit values) */
void printf(const char *fmt, ...);
void *memset(void *dst, int c, uptr n);
void *memcpy(void *dst, const void *src, uptr n);
int memcmp(const void *a, const void *b, uptr n);
__attribute__((noreturn)) void qemu_exit(u32 value);

/* Entered from the boot stub with the loader's magic (eax) and info pointer (ebx). */
int kmain(u32 boot_magic, uptr boot_info);

#endif
