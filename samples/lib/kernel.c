/* Freestanding support shared by the sample kernels: COM1 console, printf subset, isa-debug-exit. */
#include "kernel.h"
#include <stdarg.h>

#define COM1 0x3f8
#define DEBUG_EXIT_PORT 0xf4

void serial_init(void)
{
    outb(COM1 + 1, 0x00);       /* no UART interrupts */
    outb(COM1 + 3, 0x80);       /* DLAB */
    outb(COM1 + 0, 0x01);       /* 115200 baud */
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03);       /* 8N1 */
    outb(COM1 + 2, 0xC7);       /* FIFO on */
    outb(COM1 + 4, 0x03);       /* DTR | RTS */
}

void putc(char c)
{
    while (!(inb(COM1 + 5) & 0x20))     /* wait for transmitter holding register empty */
        ;
    outb(COM1, (u8)c);
}

void puts(const char *s)
{
    while (*s)
        putc(*s++);
}

void put_hex(u64 v, int digits)
{
    for (int i = digits - 1; i >= 0; i--)
        putc("0123456789abcdef"[(v >> (i * 4)) & 0xf]);
}

void put_dec(u64 v)
{
    char buf[24];
    int n = 0;
    do {
        /* 64-bit division without libgcc: shift-subtract by 10 */
        u64 q = 0, r = 0;
        for (int i = 63; i >= 0; i--) {
            r = (r << 1) | ((v >> i) & 1);
            if (r >= 10) { r -= 10; q |= 1ull << i; }
        }
        buf[n++] = (char)('0' + r);
        v = q;
    } while (v);
    while (n)
        putc(buf[--n]);
}

void printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    for (; *fmt; fmt++) {
        if (*fmt != '%') { putc(*fmt); continue; }
        fmt++;
        int width = 0, longs = 0;
        while (*fmt == '0') fmt++;
        while (*fmt >= '1' && *fmt <= '9') width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l') { longs++; fmt++; }
        u64 v;
        switch (*fmt) {
        case 's': puts(va_arg(ap, const char *)); break;
        case 'c': putc((char)va_arg(ap, int)); break;
        case 'd': {
            long long s = longs == 2 ? va_arg(ap, long long) : longs ? va_arg(ap, long) : va_arg(ap, int);
            if (s < 0) { putc('-'); s = -s; }
            put_dec((u64)s);
            break;
        }
        case 'u':
            v = longs == 2 ? va_arg(ap, u64) : longs ? va_arg(ap, unsigned long) : va_arg(ap, u32);
            put_dec(v);
            break;
        case 'x':
            v = longs == 2 ? va_arg(ap, u64) : longs ? va_arg(ap, unsigned long) : va_arg(ap, u32);
            if (!width) {
                width = 1;
                while (width < 16 && (v >> (width * 4)))
                    width++;
            }
            put_hex(v, width);
            break;
        case 'p': put_hex((uptr)va_arg(ap, void *), sizeof(void *) * 2); break;
        case '%': putc('%'); break;
        default: putc('?'); break;
        }
    }
    va_end(ap);
}

void *memset(void *dst, int c, uptr n)
{
    u8 *d = dst;
    while (n--) *d++ = (u8)c;
    return dst;
}

void *memcpy(void *dst, const void *src, uptr n)
{
    u8 *d = dst;
    const u8 *s = src;
    while (n--) *d++ = *s++;
    return dst;
}

int memcmp(const void *a, const void *b, uptr n)
{
    const u8 *x = a, *y = b;
    for (; n; n--, x++, y++)
        if (*x != *y) return *x - *y;
    return 0;
}

void qemu_exit(u32 value)
{
    outl(DEBUG_EXIT_PORT, value);
    for (;;)
        __asm__ volatile("cli; hlt");
}
