/* The sensitive zoo: executes every sensitive x86 instruction class in the operand forms kernels use and prints what it saw. */
#include "kernel.h"

/* ---------------------------------------------------------------- basics */

#ifdef __x86_64__
#define BITS64 1
typedef u64 ureg;
#define RF "%016llx"                            /* register-width hex */
#define PAT ((ureg)0xdeadbeefdeadbeefull)       /* fill pattern for destinations */
#define EXT(a, b) ".pushsection zoo_extable,\"a\"\n\t.balign 8\n\t.quad " a ", " b "\n\t.popsection\n\t"
#else
#define BITS64 0
typedef u32 ureg;
#define RF "%08llx"
#define PAT ((ureg)0xdeadbeefu)
#define EXT(a, b) ".pushsection zoo_extable,\"a\"\n\t.balign 4\n\t.long " a ", " b "\n\t.popsection\n\t"
#endif

/* One probe: label 1 is the instruction that may fault, label 2 its fixup (and where a trap reports). */
#define TRY(insn) "1:\t" insn "\n2:\n\t" EXT("1b", "2b")

#define EFLAGS_DEFINED 0x003f7fd7u      /* CF 1 PF AF ZF SF TF IF DF OF IOPL NT RF VM AC VIF VIP ID */
#define COM1 0x3f8
#define UNASSIGNED_PORT 0x2e0

#define SEL_CODE 0x08
#define SEL_DATA 0x10
#define SEL_CODE_ALT 0x18       /* 64-bit build: 32-bit code; 32-bit build: 16-bit code */
#define SEL_DATA3 0x20          /* data, DPL 3, accessed bit clear */
#define SEL_NP 0x28             /* data, not present */
#define SEL_EXPDOWN 0x30        /* expand-down data, byte granular, limit 0xfff */
#define SEL_CONFORM 0x38        /* conforming code */
#define SEL_DATA16 0x40         /* 16-bit data, limit 0xffff */
#define SEL_TSS_A 0x48          /* system descriptors take 16 bytes in both builds */
#define SEL_TSS_B 0x58
#define SEL_LDT 0x68
#define SEL_GATE 0x78           /* call gate */
#define SEL_INTGATE 0x88        /* interrupt gate: not valid for lar/lsl */
#define GDT_BYTES 0x90

struct extable { uptr insn, fixup; };
extern const struct extable __start_zoo_extable[], __stop_zoo_extable[];
extern const uptr zoo_stubs[64];

#ifdef __x86_64__
struct frame {
    u64 r15, r14, r13, r12, r11, r10, r9, r8, rdi, rsi, rbp, rbx, rdx, rcx, rax;
    u64 vector, err, ip, cs, flags, sp, ss;
};
#else
struct frame {
    u32 es, ds, edi, esi, ebp, esp0, ebx, edx, ecx, eax;
    u32 vector, err, ip, cs, flags;
};
#endif

struct __attribute__((packed)) pseudo_desc { u16 limit; uptr base; };

static volatile int fault_vec = -1;     /* -1: the last probe did not fault */
static volatile int fault_trap;         /* reported at the fixup label (a trap), not at the instruction */
static volatile uptr fault_err, fault_cr2, fault_dr6;
static volatile u32 ticks;
static int failures;

static u64 gdt[GDT_BYTES / 8] __attribute__((aligned(16)));
static u64 idt[BITS64 ? 128 : 64] __attribute__((aligned(16)));
static u64 ldt[2] __attribute__((aligned(16)));
static u8 tss_a[104] __attribute__((aligned(16)));
static u8 tss_b[104] __attribute__((aligned(16)));
static u8 buf[256] __attribute__((aligned(16)));
static u32 cpu1c, cpu7b, cpu7c, cpu81d;

static inline void arm(void) { fault_vec = -1; __asm__ volatile("" ::: "memory"); }

static void check(int ok, const char *what)
{
    if (!ok) {
        printf("CHECK FAILED: %s\n", what);
        failures++;
    }
}

static const char *const exc_names[] = {
    "DE", "DB", "NMI", "BP", "OF", "BR", "UD", "NM", "DF", "CSO", "TS", "NP", "SS", "GP", "PF", "15",
    "MF", "AC", "MC", "XM", "VE", "CP",
};

/* Prints the outcome of the last probe: "ok" or the exception, e.g. "#GP(0)", "#PF(2) cr2=...", "#BP trap". */
static void res_tail(const char *ok_text)
{
    int v = fault_vec;
    if (v < 0) {
        puts(ok_text);
        return;
    }
    if (v < 22)
        printf("#%s", exc_names[v]);
    else
        printf("vector %x", v);
    if (v == 8 || (v >= 10 && v <= 14) || v == 17 || v == 21)
        printf("(%x)", (u32)fault_err);
    if (v == 14)
        printf(" cr2=" RF, (u64)fault_cr2);
    if (v == 1)
        printf(" dr6=%08x", (u32)fault_dr6);
    if (fault_trap)
        puts(" trap");
}

static void res(void)
{
    res_tail("ok");
    putc('\n');
}

/* Common entry of every vector (vectors.S). Interrupts ack the PIC; faults resume at the probe's fixup. */
void zoo_trap(struct frame *f)
{
    uptr v = f->vector;
    if (v >= 32 && v < 48) {
        if (v == 32)
            ticks++;
        if (v >= 40)
            outb(0xa0, 0x20);
        outb(0x20, 0x20);
        return;
    }
    const struct extable *e, *hit = 0;
    for (e = __start_zoo_extable; e < __stop_zoo_extable && !hit; e++)
        if (f->ip == e->insn)
            hit = e;
    for (e = __start_zoo_extable; e < __stop_zoo_extable && !hit; e++)
        if (f->ip == e->fixup)
            hit = e;
    if (!hit) {
        printf("\nFAIL: unexpected vector %u error %x at %p\n", (u32)v, (u32)f->err, (void *)f->ip);
        qemu_exit(EXIT_FAIL);
    }
    fault_vec = (int)v;
    fault_err = f->err;
    fault_trap = f->ip == hit->fixup;
    if (v == 14) {
        uptr cr2;
        __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
        fault_cr2 = cr2;
    }
    if (v == 1) {
        uptr dr6;
        __asm__ volatile("mov %%dr6, %0" : "=r"(dr6));
        fault_dr6 = dr6;
        __asm__ volatile("mov %0, %%dr6" : : "r"((uptr)0));
        f->flags &= ~(uptr)0x100;       /* stop single-stepping */
    }
    f->ip = hit->fixup;
}

static u64 seg_desc(u32 base, u32 limit, u32 access, u32 flags)
{
    return (limit & 0xffff) | ((u64)(base & 0xffffff) << 16) | ((u64)(access & 0xff) << 40) |
           ((u64)((limit >> 16) & 0xf) << 48) | ((u64)(flags & 0xf) << 52) | ((u64)(base >> 24) << 56);
}

static u64 gate_desc(uptr off, u16 sel, u32 access)
{
    return (off & 0xffff) | ((u64)sel << 16) | ((u64)access << 40) | ((u64)((off >> 16) & 0xffff) << 48);
}

static void gate_target(void) { }

#define RDCR(n) ({ ureg _v; __asm__ volatile("mov %%cr" #n ", %0" : "=r"(_v)); _v; })
#define RDDR(n) ({ ureg _v; __asm__ volatile("mov %%dr" #n ", %0" : "=r"(_v)); _v; })
#define WRCR(n) static int wrcr##n(ureg v) \
    { arm(); __asm__ volatile(TRY("mov %0, %%cr" #n) : : "r"(v) : "memory"); return fault_vec; }
WRCR(0)
WRCR(2)
WRCR(3)
WRCR(4)
#define WRDR(n) static int wrdr##n(ureg v) \
    { arm(); __asm__ volatile(TRY("mov %0, %%dr" #n) : : "r"(v) : "memory"); return fault_vec; }
WRDR(0)
WRDR(1)
WRDR(2)
WRDR(3)
WRDR(6)
WRDR(7)

static ureg read_flags(void)
{
    ureg f;
    __asm__ volatile("pushf; pop %0" : "=r"(f) : : "memory");
    return f;
}

static int rdmsr_try(u32 msr, u64 *val)
{
    u32 lo = 0xdeadbeef, hi = 0xdeadbeef;
    arm();
    __asm__ volatile(TRY("rdmsr") : "+a"(lo), "+d"(hi) : "c"(msr) : "memory");
    *val = ((u64)hi << 32) | lo;
    return fault_vec;
}

static int wrmsr_try(u32 msr, u64 val)
{
    arm();
    __asm__ volatile(TRY("wrmsr") : : "a"((u32)val), "d"((u32)(val >> 32)), "c"(msr) : "memory");
    return fault_vec;
}

static void cpuid(u32 leaf, u32 sub, u32 r[4])
{
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

static u32 checksum(const u8 *p, u32 n)
{
    u32 s = 0;
    for (u32 i = 0; i < n; i++)
        s = s * 31 + p[i];
    return s;
}

static void wait_tx_empty(void)
{
    for (u32 i = 0; i < 10000000 && (inb(COM1 + 5) & 0x60) != 0x60; i++)
        ;
}

/* ---------------------------------------------------------------- setup */

static void pic_init(void)
{
    outb(0x20, 0x11); outb(0xa0, 0x11);     /* ICW1: edge, cascade, ICW4 */
    outb(0x21, 0x20); outb(0xa1, 0x28);     /* vector offsets 0x20 / 0x28 */
    outb(0x21, 0x04); outb(0xa1, 0x02);     /* cascade on IRQ2 */
    outb(0x21, 0x01); outb(0xa1, 0x01);     /* 8086 mode */
    outb(0x21, 0xff); outb(0xa1, 0xff);     /* everything masked */
}

static void build_tables(void)
{
    u32 fl_code = BITS64 ? 0xa : 0xc;
    gdt[SEL_CODE / 8] = seg_desc(0, 0xfffff, 0x9b, fl_code);
    gdt[SEL_DATA / 8] = seg_desc(0, 0xfffff, 0x93, 0xc);
    gdt[SEL_CODE_ALT / 8] = BITS64 ? seg_desc(0, 0xfffff, 0x9b, 0xc) : seg_desc(0, 0xffff, 0x9b, 0x0);
    gdt[SEL_DATA3 / 8] = seg_desc(0, 0xfffff, 0xf2, 0xc);
    gdt[SEL_NP / 8] = seg_desc(0, 0xfffff, 0x13, 0xc);
    gdt[SEL_EXPDOWN / 8] = seg_desc(0, 0x00fff, 0x97, 0x4);
    gdt[SEL_CONFORM / 8] = seg_desc(0, 0xfffff, 0x9f, fl_code);
    gdt[SEL_DATA16 / 8] = seg_desc(0, 0xffff, 0x93, 0x0);
    gdt[SEL_TSS_A / 8] = seg_desc((u32)(uptr)tss_a, 0x67, 0x89, 0);
    gdt[SEL_TSS_B / 8] = seg_desc((u32)(uptr)tss_b, 0x67, 0x89, 0);
    gdt[SEL_LDT / 8] = seg_desc((u32)(uptr)ldt, 0x0f, 0x82, 0);
    gdt[SEL_GATE / 8] = gate_desc((uptr)gate_target, SEL_CODE, 0x8c);
    gdt[SEL_INTGATE / 8] = gate_desc((uptr)gate_target, SEL_CODE, 0x8e);
    ldt[0] = seg_desc(0, 0xfffff, 0x93, 0xc);
    ldt[1] = seg_desc(0, 0xfffff, 0x9b, fl_code);
    tss_a[0x66] = 104;      /* I/O map base past the limit: no bitmap */
    tss_b[0x66] = 104;
    for (int i = 0; i < 64; i++) {
        u64 g = gate_desc(zoo_stubs[i], SEL_CODE, 0x8e);
        if (BITS64) {
            idt[2 * i] = g;
            idt[2 * i + 1] = 0;
        } else {
            idt[i] = g;
        }
    }
}

static void load_gdt(void)
{
    struct pseudo_desc d = { GDT_BYTES - 1, (uptr)gdt };
#ifdef __x86_64__
    __asm__ volatile("lgdt %0\n\t"
                     "pushq $0x08\n\t"
                     "leaq 1f(%%rip), %%rax\n\t"
                     "pushq %%rax\n\t"
                     "lretq\n"
                     "1:\tmovl $0x10, %%eax\n\t"
                     "movl %%eax, %%ds; movl %%eax, %%es; movl %%eax, %%ss; movl %%eax, %%fs; movl %%eax, %%gs"
                     : : "m"(d) : "rax", "memory");
#else
    __asm__ volatile("lgdt %0\n\t"
                     "ljmp $0x08, $1f\n"
                     "1:\tmovl $0x10, %%eax\n\t"
                     "movl %%eax, %%ds; movl %%eax, %%es; movl %%eax, %%ss; movl %%eax, %%fs; movl %%eax, %%gs"
                     : : "m"(d) : "eax", "memory");
#endif
}

static void load_idt(void)
{
    struct pseudo_desc d = { sizeof(idt) - 1, (uptr)idt };
    __asm__ volatile("lidt %0" : : "m"(d) : "memory");
}

/* ---------------------------------------------------------------- sections */

static void sec_entry_state(void)
{
    puts("[entry state]\n");
    /* What the boot path (firmware + loader + lib stub) left; every later value is written by the zoo. */
    printf("cr0=" RF " cr4=" RF "\n", (u64)RDCR(0), (u64)RDCR(4));
    ureg cr0 = BITS64 ? 0x80000033u : 0x33u;        /* PG (64) | NE | ET | MP | PE */
    wrcr0(cr0);
    printf("cr0 normalised to " RF "\n", (u64)RDCR(0));
    printf("eflags=%08x\n", (u32)read_flags() & EFLAGS_DEFINED);
}

static void sec_cpuid(void)
{
    static const u32 leaves[][2] = {
        {0, 0}, {1, 0}, {7, 0}, {0x80000000u, 0}, {0x80000001u, 0},
    };
    u32 r[4];
    puts("[cpuid]\n");
    for (u32 i = 0; i < sizeof(leaves) / sizeof(leaves[0]); i++) {
        cpuid(leaves[i][0], leaves[i][1], r);
        printf("cpuid %08x.%u: eax=%08x ebx=%08x ecx=%08x edx=%08x\n", leaves[i][0], leaves[i][1], r[0], r[1], r[2],
               r[3]);
        if (leaves[i][0] == 1) {
            cpu1c = r[2];
        } else if (leaves[i][0] == 7) {
            cpu7b = r[1];
            cpu7c = r[2];
        } else if (leaves[i][0] == 0x80000001u) {
            cpu81d = r[3];
        }
    }
    cpuid(0, 0, r);
    char vendor[13];
    memcpy(vendor, &r[1], 4);
    memcpy(vendor + 4, &r[3], 4);
    memcpy(vendor + 8, &r[2], 4);
    vendor[12] = 0;
    printf("vendor \"%s\"; monitor=%u xsave=%u invpcid=%u rdtscp=%u nx=%u syscall=%u lm=%u\n", vendor,
           (cpu1c >> 3) & 1, (cpu1c >> 26) & 1, (cpu7b >> 10) & 1, (cpu81d >> 27) & 1, (cpu81d >> 20) & 1,
           (cpu81d >> 11) & 1, (cpu81d >> 29) & 1);
}

static void sec_if(void)
{
    ureg a, b;
    puts("[interrupt flag]\n");
    __asm__ volatile("cli; pushf; pop %0; sti; pushf; pop %1; cli" : "=r"(a), "=r"(b) : : "memory");
    printf("cli: IF=%u; sti: IF=%u\n", (u32)(a >> 9) & 1, (u32)(b >> 9) & 1);
    check(!(a & 0x200) && (b & 0x200), "cli clears IF, sti sets IF");
}

/* popf of v (native width), then pushf; flags restored to 0x2 afterwards. */
static ureg popf_pushf(ureg v)
{
    ureg r;
    __asm__ volatile("push %1; popf; pushf; pop %0; push $2; popf" : "=r"(r) : "r"(v) : "memory", "cc");
    return r;
}

static void sec_flags(void)
{
    static const u32 vals[] = {
        0x0, 0x8d5, 0x200, 0x3000, 0x400, 0x4000, 0x40000, 0x200000, 0x10000, 0x20000, 0x180000, 0xfffffeffu,
    };
    const char *w = BITS64 ? "q" : "l";
    puts("[flags]\n");
    for (u32 i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        ureg r = popf_pushf(vals[i]);
        printf("popf%s %08x -> pushf%s %08x\n", w, vals[i], w, (u32)r & EFLAGS_DEFINED);
    }
    check((popf_pushf(0) & EFLAGS_DEFINED) == 2, "popf 0 reads back 0x2");
    check((popf_pushf(0x8d5) & EFLAGS_DEFINED) == 0x8d7, "popf arithmetic flags read back");
    check((popf_pushf(0x3000) & 0x3000) == 0x3000, "popf sets IOPL at CPL0");
    check((popf_pushf(0x10000) & 0x10000) == 0, "pushf never shows RF");
    check((popf_pushf(0x20000) & 0x20000) == 0, "popf never sets VM");
#ifdef __x86_64__
    {
        ureg r = popf_pushf(0xffffffff00000000ull | 0x8d5);
        printf("popfq ffffffff000008d5 -> pushfq %016llx\n", (u64)r);
        check(r == 0x8d7, "upper 32 bits of rflags read as zero");
    }
#endif
}

#ifdef __x86_64__
#define SP "%%rsp"
#define W "q"
#else
#define SP "%%esp"
#define W "l"
#endif

/* Full-width popf of hi, then popfw of lo; shows what pushf and pushfw (2 bytes) then see. */
static void popfw_probe(ureg hi, u16 lo)
{
    ureg delta, f;
    u16 p;
    __asm__ volatile("push %[hi]; popf\n\t"
                     "pushw %[lo]; popfw\n\t"
                     "pushf; pop %[f]\n\t"
                     "mov " SP ", %[delta]\n\t"
                     "pushfw\n\t"
                     "sub " SP ", %[delta]\n\t"       /* changes the arithmetic flags: after pushfw */
                     "popw %[p]\n\t"
                     "push $2; popf"
                     : [delta] "=&r"(delta), [p] "=&r"(p), [f] "=&r"(f)
                     : [hi] "r"(hi), [lo] "r"(lo)
                     : "memory", "cc");
    printf("popf" W " %08x, popfw %04x -> pushf" W " %08x; pushfw pushed %u bytes: %04x\n", (u32)hi, lo,
           (u32)f & EFLAGS_DEFINED, (u32)delta, p);
    check(delta == 2 && p == (u16)f, "pushfw pushes the low 16 bits of flags, 2 bytes");
    check((f & 0xffff0000u) == (hi & 0xffff0000u & ~0x10000u), "popfw keeps the upper flags");
}

static void sec_flags2(void)
{
    popfw_probe(0x240002, 0x7ed5);      /* IOPL 3, NT, DF, IF, arithmetic flags over AC | ID */
    popfw_probe(0x247ed7, 0x0002);      /* popfw clears IF, IOPL, DF, NT; AC and ID stay */
    popfw_probe(0x2, 0xffff & ~0x100);  /* every low bit but TF: reserved bits 3, 5, 15 stay clear */

    /* TF: popf sets it, the next instruction completes, then #DB (a trap, reported after that instruction). */
    printf("popf" W " with TF, then nop -> ");
    arm();
    __asm__ volatile("pushf; orl $0x100, (" SP "); popf\n\t" TRY("nop") "push $2; popf" : : : "memory", "cc");
    res();
    check(fault_vec == 1 && fault_trap && (fault_dr6 & 0x4000), "single-step #DB after the next instruction with DR6.BS");

    /* iret restores the whole flags image (IF, IOPL, NT, AC, ID ...) at CPL 0. */
    ureg fl = 0x247ed7, r;
#ifdef __x86_64__
    __asm__ volatile("mov %%rsp, %%rax\n\t"
                     "pushq $0x10\n\t"
                     "pushq %%rax\n\t"
                     "pushq %[fl]\n\t"
                     "pushq $0x08\n\t"
                     "leaq 1f(%%rip), %%rax\n\t"
                     "pushq %%rax\n\t"
                     "iretq\n"
                     "1:\tpushf; pop %[r]; push $2; popf"
                     : [r] "=r"(r) : [fl] "r"(fl) : "rax", "memory", "cc");
#else
    __asm__ volatile("pushl %[fl]; pushl $0x08; pushl $1f; iret\n"
                     "1:\tpushf; pop %[r]; push $2; popf"
                     : [r] "=r"(r) : [fl] "r"(fl) : "memory", "cc");
#endif
    printf("iret" W " with flags %08x -> pushf" W " %08x\n", (u32)fl, (u32)r & EFLAGS_DEFINED);
    check((r & EFLAGS_DEFINED) == fl, "iret at CPL0 loads IF, IOPL, NT, AC, ID");
}

/* ---------------------------------------------------------------- port I/O */

static u8 cmos_read(u8 reg)
{
    u8 v;
    __asm__ volatile("outb %%al, $0x70; inb $0x71, %%al" : "=a"(v) : "a"(reg));
    return v;
}

static void fwcfg_read(u16 key, void *dst, ureg n)
{
    ureg cx = n;
    void *di = dst;
    u16 port = 0x510;
    __asm__ volatile("outw %%ax, %%dx; incw %%dx; rep insb"
                     : "+D"(di), "+c"(cx), "+d"(port) : "a"(key) : "memory");
}

static void sec_ports(void)
{
    puts("[port I/O]\n");
    u8 b;
    u16 w;
    u32 l;
    /* COM1 scratch register (dx forms). */
    for (u32 v = 0x5a; v < 0x100; v += 0x4b) {
        b = (u8)v;
        __asm__ volatile("outb %%al, %%dx; movb $0, %%al; inb %%dx, %%al" : "+a"(b) : "d"((u16)0x3ff));
        printf("outb dx=03ff <- %02x; inb dx=03ff -> %02x\n", v, b);
        check(b == v, "COM1 scratch register reads back");
    }
    /* PIC interrupt mask registers: imm8 form on the master, dx form on the slave. */
    b = 0xa5;
    __asm__ volatile("outb %%al, $0x21; movb $0, %%al; inb $0x21, %%al" : "+a"(b));
    printf("outb $21 <- a5; inb $21 -> %02x\n", b);
    check(b == 0xa5, "PIC master IMR reads back");
    b = 0x5a;
    __asm__ volatile("outb %%al, %%dx; movb $0, %%al; inb %%dx, %%al" : "+a"(b) : "d"((u16)0xa1));
    printf("outb dx=00a1 <- 5a; inb dx=00a1 -> %02x\n", b);
    check(b == 0x5a, "PIC slave IMR reads back");
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    outb(0x20, 0x0b);   /* OCW3: read ISR */
    b = inb(0x20);
    outb(0x20, 0x0a);   /* back to IRR */
    printf("PIC ISR (OCW3 0x0b) -> %02x\n", b);
    /* CMOS: status registers A (update-in-progress bit 7 masked: it follows host time), B, D; a RAM byte. */
    printf("CMOS reg 0a -> %02x (bit 7 masked), reg 0b -> %02x, reg 0d -> %02x\n", cmos_read(0x0a) & 0x7f,
           cmos_read(0x0b), cmos_read(0x0d));
    __asm__ volatile("outb %%al, %%dx" : : "a"((u8)0x7e), "d"((u16)0x70));
    __asm__ volatile("outb %%al, %%dx" : : "a"((u8)0xc3), "d"((u16)0x71));
    b = cmos_read(0x7e);
    printf("CMOS reg 7e <- c3 (dx form) -> %02x\n", b);
    check(b == 0xc3, "CMOS RAM byte reads back");
    /* Unassigned ports: imm8 and dx forms, every width. */
    __asm__ volatile("inb $0xe0, %%al" : "=a"(b));
    __asm__ volatile("inw $0xe0, %%ax" : "=a"(w));
    __asm__ volatile("inl $0xe0, %%eax" : "=a"(l));
    printf("inb $e0 -> %02x, inw $e0 -> %04x, inl $e0 -> %08x\n", b, w, l);
    __asm__ volatile("inb %%dx, %%al" : "=a"(b) : "d"((u16)UNASSIGNED_PORT));
    __asm__ volatile("inw %%dx, %%ax" : "=a"(w) : "d"((u16)UNASSIGNED_PORT));
    __asm__ volatile("inl %%dx, %%eax" : "=a"(l) : "d"((u16)UNASSIGNED_PORT));
    printf("inb dx=02e0 -> %02x, inw dx=02e0 -> %04x, inl dx=02e0 -> %08x\n", b, w, l);
    __asm__ volatile("outb %%al, $0xe0; outw %%ax, $0xe0; outl %%eax, $0xe0" : : "a"(0x12345678));
    __asm__ volatile("outb %%al, %%dx; outw %%ax, %%dx; outl %%eax, %%dx" : : "a"(0x12345678), "d"((u16)UNASSIGNED_PORT));
    __asm__ volatile("outb %%al, $0x80" : : "a"(0));
    puts("outb/outw/outl $e0 and dx=02e0, outb $80: ok\n");
    /* No word/dword access to COM1: QEMU 7.2 aborts on it (assertion size == 1 in hw/char/serial.c). */
    /* PCI configuration mechanism #1: dword address latch at 0cf8, data at 0cfc (bus 0, device 0: host bridge). */
    __asm__ volatile("outl %%eax, %%dx" : : "a"(0x80000000u), "d"((u16)0xcf8));
    __asm__ volatile("inl %%dx, %%eax" : "=a"(l) : "d"((u16)0xcf8));
    u32 id;
    __asm__ volatile("inl %%dx, %%eax" : "=a"(id) : "d"((u16)0xcfc));
    printf("outl dx=0cf8 <- 80000000; inl dx=0cf8 -> %08x; inl dx=0cfc -> %08x\n", l, id);
    __asm__ volatile("outl %%eax, %%dx" : : "a"(0u), "d"((u16)0xcf8));
    /* fw_cfg through rep insb: signature, RAM size, CPU count. */
    char sig[5] = { 0 };
    u64 ram = 0;
    u16 ncpu = 0;
    fwcfg_read(0x0000, sig, 4);
    fwcfg_read(0x0003, &ram, 8);
    fwcfg_read(0x0005, &ncpu, 2);
    printf("fw_cfg (outw dx=0510, rep insb dx=0511): signature \"%s\", ram %llx, cpus %u\n", sig, ram, ncpu);
    check(memcmp(sig, "QEMU", 4) == 0, "fw_cfg signature");
}

#define REP_IN(insn, port, dst, count, sdi, scx)                                                          \
    do {                                                                                                  \
        void *_di = (dst);                                                                                \
        ureg _cx = (count);                                                                               \
        __asm__ volatile(insn : "+D"(_di), "+c"(_cx) : "d"((u16)(port)) : "memory", "cc");               \
        sdi = (ureg)((uptr)_di - (uptr)(dst));                                                            \
        scx = _cx;                                                                                        \
    } while (0)
#define REP_OUT(insn, port, src, count, ssi, scx)                                                         \
    do {                                                                                                  \
        const void *_si = (src);                                                                          \
        ureg _cx = (count);                                                                               \
        __asm__ volatile(insn : "+S"(_si), "+c"(_cx) : "d"((u16)(port)) : "memory", "cc");               \
        ssi = (ureg)((uptr)_si - (uptr)(src));                                                            \
        scx = _cx;                                                                                        \
    } while (0)

static void sec_string_io(void)
{
    ureg d, c;
    puts("[string I/O]\n");
    outb(0x3ff, 0x5a);
    memset(buf, 0, sizeof(buf));
    REP_IN("rep insb", 0x3ff, buf, 64, d, c);
    printf("rep insb dx=03ff x64: di+%d cx=%u buf[0]=%02x sum=%08x\n", (int)d, (u32)c, buf[0], checksum(buf, 64));
    check(d == 64 && c == 0 && buf[0] == 0x5a && buf[63] == 0x5a && buf[64] == 0, "rep insb fills 64 bytes");
    memset(buf, 0, sizeof(buf));
    REP_IN("rep insw", UNASSIGNED_PORT, buf, 32, d, c);
    printf("rep insw dx=02e0 x32: di+%d cx=%u buf[0]=%02x sum=%08x\n", (int)d, (u32)c, buf[0], checksum(buf, 66));
    check(d == 64 && c == 0, "rep insw moves 32 words");
    memset(buf, 0, sizeof(buf));
    REP_IN("rep insl", UNASSIGNED_PORT, buf, 16, d, c);
    printf("rep insl dx=02e0 x16: di+%d cx=%u buf[0]=%02x sum=%08x\n", (int)d, (u32)c, buf[0], checksum(buf, 66));
    check(d == 64 && c == 0, "rep insl moves 16 dwords");
    memset(buf, 0, sizeof(buf));
    outb(0x3ff, 0xa5);
    REP_IN("std; rep insb; cld", 0x3ff, buf + 63, 16, d, c);
    printf("std; rep insb dx=03ff x16 at buf+63: di%d cx=%u sum=%08x\n", (int)d, (u32)c, checksum(buf, 66));
    check(d == (ureg)-16 && buf[48] == 0xa5 && buf[47] == 0 && buf[63] == 0xa5, "rep insb with DF=1 fills downward");

    static const char fwd[] = "rep outsb ok\n";
    static const char back[] = "\nsdrawkcab bstuo per dts";
    puts("rep outsb dx=03f8: ");
    wait_tx_empty();
    REP_OUT("rep outsb", COM1, fwd, sizeof(fwd) - 1, d, c);
    check(d == sizeof(fwd) - 1 && c == 0, "rep outsb advances si");
    wait_tx_empty();
    puts("std; rep outsb dx=03f8: ");
    wait_tx_empty();
    REP_OUT("std; rep outsb; cld", COM1, back + sizeof(back) - 2, sizeof(back) - 1, d, c);
    check(d == (ureg)-(ureg)(sizeof(back) - 1) && c == 0, "rep outsb with DF=1 walks down");
    wait_tx_empty();
    REP_OUT("rep outsw", UNASSIGNED_PORT, buf, 8, d, c);
    printf("rep outsw dx=02e0 x8: si+%d cx=%u\n", (int)d, (u32)c);
    REP_OUT("rep outsl", UNASSIGNED_PORT, buf, 4, d, c);
    printf("rep outsl dx=02e0 x4: si+%d cx=%u\n", (int)d, (u32)c);
    check(d == 16 && c == 0, "rep outsl moves 4 dwords");
}

/* ---------------------------------------------------------------- hlt, monitor/mwait */

#define HLT_TICKS 20

static void sec_hlt(void)
{
    puts("[hlt]\n");
    outb(0x43, 0x34);           /* PIT channel 0, mode 2, lo/hi */
    outb(0x40, 1193 & 0xff);    /* ~1 kHz */
    outb(0x40, 1193 >> 8);
    outb(0x21, 0xfe);           /* unmask IRQ0 only */
    ticks = 0;
    u32 n = 0;
    while (ticks < HLT_TICKS && n < HLT_TICKS * 100) {
        __asm__ volatile("sti; hlt; cli" : : : "memory");
        n++;
    }
    printf("sti; hlt; cli until %u timer ticks: %s\n", HLT_TICKS, ticks >= HLT_TICKS ? "done" : "TIMEOUT");
    check(ticks >= HLT_TICKS, "hlt is woken by the PIT interrupt");

    printf("monitor (rax=buf, ecx=0, edx=0): ");
    arm();
    __asm__ volatile(TRY("monitor") : : "a"(buf), "c"(0), "d"(0) : "memory");
    res();
    printf("sti; mwait (eax=0, ecx=0); cli: ");
    arm();
    __asm__ volatile("sti\n" TRY("mwait") "cli" : : "a"(0), "c"(0) : "memory");
    res();
    outb(0x21, 0xff);
    outb(0x43, 0x30);           /* channel 0 to mode 0 without a count: the timer stops */
}

/* ---------------------------------------------------------------- descriptor tables */

static struct pseudo_desc boot_gdtr;

static void dump_bytes(const char *what, const u8 *p, int n)
{
    printf("%s ->", what);
    for (int i = 0; i < n; i++)
        printf(" %02x", p[i]);
    putc('\n');
}

static u8 gdt_access(u16 sel) { return (u8)(gdt[sel / 8] >> 40); }

static void sec_tables(void)
{
    u8 m[16];
    puts("[descriptor tables]\n");
    printf("boot stub GDTR: limit %04x base " RF "\n", boot_gdtr.limit, (u64)boot_gdtr.base);
    printf("lgdt {limit %04x, base " RF "} (gdt), lidt {limit %04x, base " RF "} (idt)\n", GDT_BYTES - 1,
           (u64)(uptr)gdt, (u32)sizeof(idt) - 1, (u64)(uptr)idt);
    memset(m, 0xcc, sizeof(m));
    __asm__ volatile("sgdt %0" : "=m"(m) : : "memory");
    dump_bytes("sgdt", m, 12);
    struct pseudo_desc g;
    memcpy(&g, m, sizeof(g));
    check(g.limit == GDT_BYTES - 1 && g.base == (uptr)gdt, "sgdt returns what lgdt loaded");
    memset(m, 0xcc, sizeof(m));
    __asm__ volatile("sidt %0" : "=m"(m) : : "memory");
    dump_bytes("sidt", m, 12);
    memcpy(&g, m, sizeof(g));
    check(g.limit == sizeof(idt) - 1 && g.base == (uptr)idt, "sidt returns what lidt loaded");
    memset(m, 0xcc, sizeof(m));
    __asm__ volatile(".byte 0x66; sgdt %0" : "=m"(m) : : "memory");
    dump_bytes("o16 sgdt", m, 12);
    memset(m, 0xcc, sizeof(m));
    __asm__ volatile(".byte 0x66; sidt %0" : "=m"(m) : : "memory");
    dump_bytes("o16 sidt", m, 12);
    /* o16 lgdt: outside 64-bit mode only 24 bits of base are loaded; base 0x5a000000|gdt stays usable either way
       in 32-bit mode. In 64-bit mode the prefix is ignored, so load the true base there. */
    {
        struct pseudo_desc d = { GDT_BYTES - 1, (uptr)gdt | (BITS64 ? 0 : 0x5a000000u) };
        struct pseudo_desc good = { GDT_BYTES - 1, (uptr)gdt };
        memset(m, 0xcc, sizeof(m));
        __asm__ volatile(".byte 0x66; lgdt %1; sgdt %0; lgdt %2" : "=m"(m) : "m"(d), "m"(good) : "memory");
        printf("o16 lgdt {limit %04x, base " RF "}; ", d.limit, (u64)d.base);
        dump_bytes("sgdt", m, 12);
        /* A base with a non-zero top byte (loaded only between two lgdt, nothing can fault there): does o16 sgdt
           store all of it? */
        struct pseudo_desc high = { GDT_BYTES - 1, (uptr)gdt | (BITS64 ? (uptr)0xffff800000000000ull : 0x5a000000u) };
        u8 m2[16];
        memset(m, 0xcc, sizeof(m));
        memset(m2, 0xcc, sizeof(m2));
        __asm__ volatile("lgdt %2; sgdt %0; .byte 0x66; sgdt %1; lgdt %3"
                         : "=m"(m), "=m"(m2) : "m"(high), "m"(good) : "memory");
        printf("lgdt {limit %04x, base " RF "}; ", high.limit, (u64)high.base);
        dump_bytes("sgdt", m, 12);
        dump_bytes("    o16 sgdt", m2, 12);
        struct pseudo_desc small = { 0x00ff, (uptr)idt }, full = { sizeof(idt) - 1, (uptr)idt };
        memset(m, 0xcc, sizeof(m));
        __asm__ volatile("lidt %1; sidt %0; lidt %2" : "=m"(m) : "m"(small), "m"(full) : "memory");
        dump_bytes("lidt {limit 00ff, base idt}; sidt", m, 12);
        check(m[0] == 0xff && m[1] == 0, "sidt returns the loaded IDT limit");
    }

    /* LDTR */
    ureg r;
    __asm__ volatile("sldt %k0" : "=r"(r));
    printf("sldt r32 at boot -> " RF "\n", (u64)r);
    printf("lldt reg %04x: ", SEL_LDT);
    arm();
    __asm__ volatile(TRY("lldt %w0") : : "r"((ureg)SEL_LDT) : "memory");
    res();
    r = PAT;
    __asm__ volatile("sldt %w0" : "+r"(r));
    printf("sldt r16 (dest was " RF ") -> " RF "\n", (u64)PAT, (u64)r);
    r = PAT;
    __asm__ volatile("sldt %k0" : "+r"(r));
    printf("sldt r32 -> " RF "\n", (u64)r);
    check((u16)r == SEL_LDT, "sldt returns the lldt selector");
#ifdef __x86_64__
    r = PAT;
    __asm__ volatile("sldt %q0" : "+r"(r));
    printf("sldt r64 -> " RF "\n", (u64)r);
#endif
    union { u32 d; u16 w[2]; } mem = { 0xcccccccc };
    __asm__ volatile("sldt %0" : "+m"(mem.w[0]));
    printf("sldt m16 (memory was cccccccc) -> %08x\n", mem.d);
    u16 sel16 = 0;
    printf("lldt m16 0000: ");
    arm();
    __asm__ volatile(TRY("lldt %0") : : "m"(sel16) : "memory");
    res();
    __asm__ volatile("sldt %k0" : "=r"(r));
    printf("sldt -> %04x\n", (u32)r);
    check(r == 0, "lldt null selector clears LDTR");
    static const u16 bad_ldt[] = { SEL_DATA, SEL_TSS_A, 0xfff8 };
    for (int i = 0; i < 3; i++) {
        printf("lldt %04x: ", bad_ldt[i]);
        arm();
        __asm__ volatile(TRY("lldt %w0") : : "r"((ureg)bad_ldt[i]) : "memory");
        res();
    }
    sel16 = SEL_LDT;
    printf("lldt m16 %04x: ", SEL_LDT);
    arm();
    __asm__ volatile(TRY("lldt %0") : : "m"(sel16) : "memory");
    res();

    /* TR */
    __asm__ volatile("str %k0" : "=r"(r));
    printf("str r32 at boot -> " RF "\n", (u64)r);
    printf("TSS A access byte %02x; ltr reg %04x: ", gdt_access(SEL_TSS_A), SEL_TSS_A);
    arm();
    __asm__ volatile(TRY("ltr %w0") : : "r"((ureg)SEL_TSS_A) : "memory");
    res();
    printf("TSS A access byte after ltr: %02x\n", gdt_access(SEL_TSS_A));
    check(gdt_access(SEL_TSS_A) == 0x8b, "ltr marks the TSS busy in the GDT");
    printf("ltr %04x again (busy): ", SEL_TSS_A);
    arm();
    __asm__ volatile(TRY("ltr %w0") : : "r"((ureg)SEL_TSS_A) : "memory");
    res();
    check(fault_vec == 13 && fault_err == SEL_TSS_A, "ltr of a busy TSS -> #GP(sel)");
    sel16 = SEL_TSS_B;
    printf("ltr m16 %04x: ", SEL_TSS_B);
    arm();
    __asm__ volatile(TRY("ltr %0") : : "m"(sel16) : "memory");
    res();
    printf("TSS B access byte after ltr: %02x\n", gdt_access(SEL_TSS_B));
    r = PAT;
    __asm__ volatile("str %w0" : "+r"(r));
    printf("str r16 -> " RF "\n", (u64)r);
    r = PAT;
    __asm__ volatile("str %k0" : "+r"(r));
    printf("str r32 -> " RF "\n", (u64)r);
    check((u16)r == SEL_TSS_B, "str returns the last ltr selector");
#ifdef __x86_64__
    r = PAT;
    __asm__ volatile("str %q0" : "+r"(r));
    printf("str r64 -> " RF "\n", (u64)r);
#endif
    mem.d = 0xcccccccc;
    __asm__ volatile("str %0" : "+m"(mem.w[0]));
    printf("str m16 (memory was cccccccc) -> %08x\n", mem.d);
    static const u16 bad_tr[] = { 0, SEL_DATA, SEL_LDT, 0xfff8 };
    for (int i = 0; i < 4; i++) {
        printf("ltr %04x: ", bad_tr[i]);
        arm();
        __asm__ volatile(TRY("ltr %w0") : : "r"((ureg)bad_tr[i]) : "memory");
        res();
    }
    __asm__ volatile("str %k0" : "=r"(r));
    printf("str r32 after those -> " RF "\n", (u64)r);
}

/* ---------------------------------------------------------------- control registers */

static void cr0_try(const char *what, ureg v)
{
    ureg cr0 = RDCR(0);
    printf("mov cr0 <- " RF " (%s): ", (u64)v, what);
    if (wrcr0(v) < 0)
        printf("-> " RF "\n", (u64)RDCR(0));
    else
        res();
    wrcr0(cr0);
}

static void fnop_probe(const char *what)
{
    printf("fnop with %s: ", what);
    arm();
    __asm__ volatile(TRY("fnop") : : : "memory");
    res();
}

static void sec_cr(void)
{
    ureg cr0 = RDCR(0), r;
    puts("[control registers]\n");
    printf("mov cr0 -> " RF "\n", (u64)cr0);
    static const struct { u32 bit; const char *name; } bits[] = {
        { 1, "MP" }, { 2, "EM" }, { 3, "TS" }, { 5, "NE" }, { 16, "WP" }, { 18, "AM" }, { 30, "CD" }, { 29, "NW" },
    };
    for (u32 i = 0; i < sizeof(bits) / sizeof(bits[0]); i++)
        cr0_try(bits[i].name, cr0 ^ ((ureg)1 << bits[i].bit));
    cr0_try("CD|NW", cr0 | 0x60000000u);
#ifdef __x86_64__
    cr0_try("bit 32", cr0 | (1ull << 32));
#endif
    /* TS and clts; EM; lmsw and smsw */
    wrcr0(cr0 | 8);
    printf("mov cr0 |= TS -> " RF "\n", (u64)RDCR(0));
    fnop_probe("CR0.TS=1");
    check(fault_vec == 7, "x87 instruction with CR0.TS -> #NM");
    __asm__ volatile("clts");
    r = RDCR(0);
    printf("clts -> cr0 " RF "\n", (u64)r);
    check(!(r & 8), "clts clears TS");
    fnop_probe("CR0.TS=0");
    wrcr0(cr0 | 4);
    fnop_probe("CR0.EM=1");
    wrcr0(cr0);
    __asm__ volatile("lmsw %w0" : : "r"((ureg)0x000e));
    printf("lmsw reg 000e -> cr0 " RF "\n", (u64)RDCR(0));
    u16 msw = 0;
    __asm__ volatile("lmsw %0" : : "m"(msw));
    printf("lmsw m16 0000 -> cr0 " RF " (PE cannot be cleared)\n", (u64)RDCR(0));
    check(RDCR(0) & 1, "lmsw does not clear PE");
    __asm__ volatile("lmsw %w0" : : "r"((ureg)0xfff0));
    printf("lmsw reg fff0 -> cr0 " RF "\n", (u64)RDCR(0));
    wrcr0(cr0);
    r = PAT;
    __asm__ volatile("smsw %w0" : "+r"(r));
    printf("smsw r16 -> " RF "\n", (u64)r);
    r = PAT;
    __asm__ volatile("smsw %k0" : "+r"(r));
    printf("smsw r32 -> " RF "\n", (u64)r);
#ifdef __x86_64__
    r = PAT;
    __asm__ volatile("smsw %q0" : "+r"(r));
    printf("smsw r64 -> " RF "\n", (u64)r);
#endif
    union { u32 d; u16 w[2]; } mem = { 0xcccccccc };
    __asm__ volatile("smsw %0" : "+m"(mem.w[0]));
    printf("smsw m16 (memory was cccccccc) -> %08x\n", mem.d);
    check((mem.d & 0xffff) == (u16)cr0 && (mem.d >> 16) == 0xcccc, "smsw m16 stores the low 16 bits of cr0");

    /* CR2 */
    ureg v2 = BITS64 ? (ureg)0x123456789abcdef0ull : (ureg)0x9abcdef0u;
    wrcr2(v2);
    r = RDCR(2);
    printf("mov cr2 <- " RF "; mov cr2 -> " RF "\n", (u64)v2, (u64)r);
    check(r == v2, "cr2 reads back");
    /* CR3: PWT/PCD bits (paging is on in the 64-bit build; off here in the 32-bit build) */
    ureg cr3 = RDCR(3);
    if (BITS64)
        printf("mov cr3 -> " RF "\n", (u64)cr3);
    else
        cr3 = 0x00345000u;
    wrcr3(cr3 | 0x18);
    r = RDCR(3);
    printf("mov cr3 <- " RF "; mov cr3 -> " RF "\n", (u64)(cr3 | 0x18), (u64)r);
    check(r == (cr3 | 0x18), "cr3 with PWT|PCD reads back");
    wrcr3(cr3);

    /* CR4: toggle each bit in turn and restore (64-bit: not PAE, leaving it in long mode breaks the machine). */
    ureg cr4 = RDCR(4), accepted = 0, gp = 0, other = 0, stuck = 0;
    /* Only bits the CPU reports: QEMU 7.2 TCG livelocks (re-executes the mov forever) on an unsupported CR4 bit
       instead of raising #GP, so those cannot be probed. Bits 0-10 (VME..OSXMMEXCPT) exist on every x86-64. */
    ureg cr4_ok = 0x7ff;
    if (cpu7c & (1u << 2)) cr4_ok |= 1u << 11;          /* UMIP */
    if (cpu1c & (1u << 5)) cr4_ok |= 1u << 13;          /* VMXE */
    if (cpu1c & (1u << 6)) cr4_ok |= 1u << 14;          /* SMXE */
    if (cpu7b & (1u << 0)) cr4_ok |= 1u << 16;          /* FSGSBASE */
    if (cpu1c & (1u << 26)) cr4_ok |= 1u << 18;         /* OSXSAVE */
    if (cpu7b & (1u << 7)) cr4_ok |= 1u << 20;          /* SMEP */
    if (cpu7b & (1u << 20)) cr4_ok |= 1u << 21;         /* SMAP */
    if (BITS64)
        cr4_ok &= ~(ureg)0x20;                          /* clearing PAE in long mode: QEMU does not #GP either */
    printf("mov cr4 -> " RF "\n", (u64)cr4);
    for (u32 bit = 0; bit < 32; bit++) {
        ureg m = (ureg)1 << bit;
        if (!(cr4_ok & m))
            continue;
        int f = wrcr4(cr4 ^ m);
        if (f < 0) {
            if ((RDCR(4) ^ cr4) & m)
                accepted |= m;
            else
                stuck |= m;
            wrcr4(cr4);
        } else if (f == 13) {
            gp |= m;
        } else {
            other |= m;
        }
    }
    printf("mov cr4 ^= each bit of %08x: toggles %08x, #GP %08x, ignored %08x, other faults %08x\n", (u32)cr4_ok,
           (u32)accepted, (u32)gp, (u32)stuck, (u32)other);
    check(RDCR(4) == cr4, "cr4 restored");
#ifdef __x86_64__
    /* CR8 = APIC TPR */
    r = RDCR(8);
    printf("mov cr8 -> " RF "; ", (u64)r);
    __asm__ volatile("mov %0, %%cr8" : : "r"((ureg)5));
    r = RDCR(8);
    printf("mov cr8 <- 5; mov cr8 -> " RF "; ", (u64)r);
    check(r == 5, "cr8 reads back");
    printf("mov cr8 <- 10: ");
    arm();
    __asm__ volatile(TRY("mov %0, %%cr8") : : "r"((ureg)0x10) : "memory");
    res();
    __asm__ volatile("mov %0, %%cr8" : : "r"((ureg)0));
#endif
    printf("mov cr1 -> ");
    arm();
    __asm__ volatile(TRY(".byte 0x0f, 0x20, 0xc8") : : : "eax", "memory");
    res();
    printf("mov cr5 -> ");
    arm();
    __asm__ volatile(TRY(".byte 0x0f, 0x20, 0xe8") : : : "eax", "memory");
    res();
#ifdef __x86_64__
    printf("mov cr9 -> ");
    arm();
    __asm__ volatile(TRY(".byte 0x44, 0x0f, 0x20, 0xc8") : : : "eax", "memory");
    res();
#endif
}

/* ---------------------------------------------------------------- debug registers */

static volatile u32 watched;

static void sec_dr(void)
{
    puts("[debug registers]\n");
    printf("mov dr0..3,6,7 -> " RF " " RF " " RF " " RF " " RF " " RF "\n", (u64)RDDR(0), (u64)RDDR(1),
           (u64)RDDR(2), (u64)RDDR(3), (u64)RDDR(6), (u64)RDDR(7));
    ureg base = BITS64 ? (ureg)0xffffffff81000000ull : (ureg)0x81000000u;
    wrdr0(base + 0x10);
    wrdr1(base + 0x21);
    wrdr2(base + 0x32);
    wrdr3(base + 0x43);
    ureg d0 = RDDR(0), d1 = RDDR(1), d2 = RDDR(2), d3 = RDDR(3);
    printf("mov dr0..3 <- base+10/21/32/43 -> " RF " " RF " " RF " " RF "\n", (u64)d0, (u64)d1, (u64)d2, (u64)d3);
    check(d0 == base + 0x10 && d1 == base + 0x21 && d2 == base + 0x32 && d3 == base + 0x43, "dr0-3 read back");
    wrdr6(0);
    printf("mov dr6 <- 0 -> " RF "; ", (u64)RDDR(6));
    wrdr6(0xffffffffu);
    printf("mov dr6 <- ffffffff -> " RF "\n", (u64)RDDR(6));
    wrdr6(0);
    wrdr7(0);
    printf("mov dr7 <- 0 -> " RF "; ", (u64)RDDR(7));
    wrdr7(0x0000ff00u);
    printf("mov dr7 <- 0000ff00 -> " RF "\n", (u64)RDDR(7));
    wrdr7(0);
#ifdef __x86_64__
    printf("mov dr6 <- 1_00000000: ");
    wrdr6(1ull << 32);
    res();
    printf("mov dr7 <- 1_00000000: ");
    wrdr7(1ull << 32);
    res();
#endif
    /* dr4/dr5 alias dr6/dr7 while CR4.DE=0; with CR4.DE=1 they #UD. */
    ureg r = PAT;
    arm();
    __asm__ volatile(TRY(".byte 0x0f, 0x21, 0xe0") : "+a"(r) : : "memory");      /* mov dr4, eax/rax */
    printf("mov dr4 (CR4.DE=0) -> ");
    res_tail("");
    if (fault_vec < 0)
        printf(RF, (u64)r);
    r = PAT;
    arm();
    __asm__ volatile(TRY(".byte 0x0f, 0x21, 0xe8") : "+a"(r) : : "memory");      /* mov dr5, eax/rax */
    printf("; mov dr5 -> ");
    res_tail("");
    if (fault_vec < 0)
        printf(RF, (u64)r);
    putc('\n');
    ureg cr4 = RDCR(4);
    wrcr4(cr4 | 8);
    printf("mov dr4 (CR4.DE=1): ");
    arm();
    __asm__ volatile(TRY(".byte 0x0f, 0x21, 0xe0") : : : "eax", "memory");
    res();
    wrcr4(cr4);
    /* A data breakpoint: dr0 = &watched, dr7 = L0 | RW0=write | LEN0=4 bytes. */
    wrdr0((uptr)&watched);
    wrdr7(0x000d0001);
    printf("dr7 <- 000d0001 (write watch on dr0), read of it: ");
    arm();
    __asm__ volatile(TRY("movl %0, %%eax") : : "m"(watched) : "eax", "memory");
    res();
    printf("write to it: ");
    arm();
    __asm__ volatile(TRY("movl $1, %0") : "=m"(watched) : : "memory");
    res();
    check(fault_vec == 1 && fault_trap && (fault_dr6 & 1), "data breakpoint -> #DB trap with DR6.B0");
    wrdr7(0);
    wrdr0(0);
    wrdr1(0);
    wrdr2(0);
    wrdr3(0);
    printf("dr6 after handler cleared it -> " RF "\n", (u64)RDDR(6));
}

/* ---------------------------------------------------------------- MSRs */

static void msr_print(u32 msr, const char *name)
{
    u64 v;
    printf("rdmsr %08x %s: ", msr, name);
    if (rdmsr_try(msr, &v) < 0)
        printf("%016llx\n", v);
    else
        res();
}

static void msr_rw(u32 msr, const char *name, u64 val, int must)
{
    u64 v;
    printf("%s %08x: rdmsr ", name, msr);
    if (rdmsr_try(msr, &v) < 0)
        printf("%016llx", v);
    else
        res_tail("");
    printf("; wrmsr <- %016llx: ", val);
    if (wrmsr_try(msr, val) >= 0) {
        res();
        check(!must, "architectural MSR write");
        return;
    }
    int f = rdmsr_try(msr, &v);
    printf("rdmsr -> ");
    if (f < 0)
        printf("%016llx\n", v);
    else
        res();
    if (must)
        check(f < 0 && v == val, "MSR reads back what was written");
}

static u64 marker_a[2] = { 0xaaaaaaaa11111111ull, 0 }, marker_b[2] = { 0xbbbbbbbb22222222ull, 0 };

static void sec_msr(void)
{
    u64 v, efer;
    puts("[MSRs]\n");
    rdmsr_try(0xc0000080u, &efer);
    printf("rdmsr c0000080 EFER: %016llx\n", efer);
    msr_rw(0xc0000080u, "EFER ^ SCE", efer ^ 1, 0);
    wrmsr_try(0xc0000080u, efer);
    if (cpu81d & (1u << 20)) {
        msr_rw(0xc0000080u, "EFER | NXE", efer | (1u << 11), 0);
        wrmsr_try(0xc0000080u, efer);
    }
    msr_rw(0xc0000080u, "EFER | bit 2 (reserved)", efer | 4, 0);
    wrmsr_try(0xc0000080u, efer);
    rdmsr_try(0xc0000080u, &v);
    check(v == efer, "EFER restored");
    ureg hi = BITS64 ? (ureg)0xffffffff81000000ull : (ureg)0x81000000u;
    msr_rw(0xc0000081u, "STAR", 0x0023001000080000ull, 1);
    msr_rw(0xc0000082u, "LSTAR", 0xffffffff81000100ull, 1);
    msr_rw(0xc0000083u, "CSTAR", 0xffffffff81000200ull, 1);
    msr_rw(0xc0000084u, "SFMASK", 0x47700, 1);
    msr_rw(0xc0000100u, "FS_BASE", (uptr)marker_a, 1);
    msr_rw(0xc0000101u, "GS_BASE", (uptr)marker_b, 1);
    msr_rw(0xc0000102u, "KERNEL_GS_BASE", 0xffff888000001000ull, 1);
#ifdef __x86_64__
    u64 fsv, gsv;
    __asm__ volatile("movq %%fs:0, %0; movq %%gs:0, %1" : "=r"(fsv), "=r"(gsv));
    printf("fs:0 -> %016llx, gs:0 -> %016llx\n", fsv, gsv);
    check(fsv == marker_a[0] && gsv == marker_b[0], "FS_BASE/GS_BASE apply to fs:/gs: accesses");
    msr_rw(0xc0000082u, "LSTAR non-canonical", 0x0000800000000000ull, 0);
    msr_rw(0xc0000100u, "FS_BASE non-canonical", 0x0000800000000000ull, 0);
#endif
    __asm__ volatile("mov %0, %%fs; mov %0, %%gs" : : "r"((ureg)SEL_DATA));
    rdmsr_try(0xc0000100u, &v);
    printf("mov fs <- 0010 -> FS_BASE %016llx; ", v);
    rdmsr_try(0xc0000101u, &v);
    printf("mov gs <- 0010 -> GS_BASE %016llx\n", v);
    msr_rw(0x174, "SYSENTER_CS", SEL_CODE, 1);
    msr_rw(0x175, "SYSENTER_ESP", hi + 0x3000, 1);
    msr_rw(0x176, "SYSENTER_EIP", hi + 0x400, 1);
    u64 pat;
    rdmsr_try(0x277, &pat);
    msr_rw(0x277, "PAT", 0x0007010600070106ull, 1);
    msr_rw(0x277, "PAT invalid type 2", 0x0007040600070402ull, 0);
    wrmsr_try(0x277, pat);
    msr_rw(0xc0000103u, "TSC_AUX", 0x2a, 0);
    msr_print(0x1b, "APIC_BASE");
    msr_print(0x1a0, "MISC_ENABLE");
    msr_print(0x12345678u, "(unknown)");
    printf("wrmsr 12345678 (unknown) <- 0: ");
    wrmsr_try(0x12345678u, 0);
    res();
    wrmsr_try(0xc0000102u, 0);
}

/* ---------------------------------------------------------------- paging, invlpg */

#ifdef __x86_64__
typedef u64 pte_t;
#define WINDOW 0x3fe00000u      /* PD[511] of the boot identity map */
#else
typedef u32 pte_t;
#define WINDOW 0x3fc00000u      /* PDE 255 of our 4 MiB-page directory */
static u32 pgdir[1024] __attribute__((aligned(4096)));
#endif
static volatile u32 page_marker = 0x600dcafe;

static int read32_try(uptr va, u32 *out)
{
    u32 v = 0xdeadbeef;
    arm();
    __asm__ volatile(TRY("movl (%1), %0") : "+r"(v) : "r"(va) : "memory");
    *out = v;
    return fault_vec;
}

static int write32_try(uptr va, u32 v)
{
    arm();
    __asm__ volatile(TRY("movl %1, (%0)") : : "r"(va), "r"(v) : "memory");
    return fault_vec;
}

static void sec_paging(void)
{
    pte_t *slot;
    puts("[paging, invlpg]\n");
#ifdef __x86_64__
    u64 *pml4 = (u64 *)(uptr)(RDCR(3) & ~0xfffull);
    u64 *pdpt = (u64 *)(uptr)(pml4[0] & 0x000ffffffffff000ull);
    u64 *pd = (u64 *)(uptr)(pdpt[0] & 0x000ffffffffff000ull);
    slot = &pd[511];
#else
    for (u32 i = 0; i < 256; i++)
        pgdir[i] = (i << 22) | 0x83;            /* 4 MiB, RW, present: identity of the first 1 GiB */
    wrcr4(RDCR(4) | 0x10);                      /* PSE */
    wrcr3((uptr)pgdir);
    wrcr0(RDCR(0) | 0x80000000u);               /* PG */
    printf("paging on: cr0=" RF " cr3=pgdir cr4=" RF "\n", (u64)RDCR(0), (u64)RDCR(4));
    slot = &pgdir[255];
#endif
    check((uptr)&page_marker < 0x200000, "marker in the first large page");
    pte_t old = *slot;
    uptr va = WINDOW + (uptr)&page_marker;
    u32 v;
    *slot = 0x83;                               /* window -> frame 0 */
    __asm__ volatile("invlpg (%0)" : : "r"(va) : "memory");
    read32_try(va, &v);
    printf("map window -> frame 0, invlpg, read: %08x (%s); entry now %llx\n", v, v == page_marker ? "alias" : "?",
           (u64)*slot);
    check(v == page_marker, "after invlpg the new mapping is used");
    *slot = 0;
    __asm__ volatile("invlpg (%0)" : : "r"(va) : "memory");
    printf("unmap, invlpg, read: ");
    read32_try(va, &v);
    res();
    check(fault_vec == 14 && fault_err == 0 && fault_cr2 == va, "read of unmapped page -> #PF(0) with cr2");
    printf("write: ");
    write32_try(va, 0x600dcafe);
    res();
    check(fault_vec == 14 && fault_err == 2, "write of unmapped page -> #PF(2)");
    *slot = 0x81;                               /* read-only */
    __asm__ volatile("invlpg (%0)" : : "r"(va) : "memory");
    ureg cr0 = RDCR(0);
    wrcr0(cr0 & ~(ureg)0x10000);
    printf("read-only large page, CR0.WP=0, write: ");
    write32_try(va, 0x600dcafe);
    res();
    wrcr0(cr0 | 0x10000);
    printf("CR0.WP=1, write: ");
    write32_try(va, 0x600dcafe);
    res();
    check(fault_vec == 14 && fault_err == 3, "supervisor write to read-only page with WP -> #PF(3)");
    wrcr0(cr0);
    printf("entry after the accesses: %llx\n", (u64)*slot);
    *slot = 0;
    wrcr3(RDCR(3));                             /* full flush through cr3 instead of invlpg */
    printf("unmap, mov cr3 <- cr3, read: ");
    read32_try(va, &v);
    res();
    *slot = old;
    __asm__ volatile("invlpg (%0)" : : "r"(va) : "memory");
#ifndef __x86_64__
    wrcr0(RDCR(0) & ~0x80000000u);
    wrcr4(RDCR(4) & ~0x10u);
    printf("paging off: cr0=" RF "\n", (u64)RDCR(0));
#endif
}

/* ---------------------------------------------------------------- other privileged instructions */

static void sec_misc(void)
{
    puts("[other privileged]\n");
    printf("wbinvd: ");
    arm();
    __asm__ volatile(TRY("wbinvd") : : : "memory");
    res();
    printf("invd: ");
    arm();
    __asm__ volatile(TRY("invd") : : : "memory");
    res();
    u64 desc[2] = { 0, 0 };
    printf("invpcid type 2 (cpuid.7.ebx[10]=%u): ", (cpu7b >> 10) & 1);
    arm();
    __asm__ volatile(TRY("invpcid %1, %0") : : "r"((ureg)2), "m"(desc) : "memory");
    res();
#ifdef __x86_64__
    wrmsr_try(0xc0000101u, (uptr)marker_a);
    wrmsr_try(0xc0000102u, (uptr)marker_b);
    u64 g0, g1, gs, kgs;
    __asm__ volatile("movq %%gs:0, %0" : "=r"(g0));
    __asm__ volatile("swapgs; movq %%gs:0, %0" : "=r"(g1) : : "memory");
    rdmsr_try(0xc0000101u, &gs);
    rdmsr_try(0xc0000102u, &kgs);
    __asm__ volatile("swapgs" : : : "memory");
    printf("GS_BASE=marker_a KERNEL_GS_BASE=marker_b; gs:0 -> %016llx; swapgs; gs:0 -> %016llx\n", g0, g1);
    printf("after swapgs: GS_BASE %s, KERNEL_GS_BASE %s\n", gs == (uptr)marker_b ? "marker_b" : "?",
           kgs == (uptr)marker_a ? "marker_a" : "?");
    check(g0 == marker_a[0] && g1 == marker_b[0] && gs == (uptr)marker_b && kgs == (uptr)marker_a,
          "swapgs exchanges GS_BASE and KERNEL_GS_BASE");
    __asm__ volatile("mov %0, %%gs" : : "r"((ureg)SEL_DATA));
    wrmsr_try(0xc0000102u, 0);
#else
    printf("swapgs (not in 64-bit mode): ");
    arm();
    __asm__ volatile(TRY(".byte 0x0f, 0x01, 0xf8") : : : "memory");
    res();
#endif
    u32 lo = 0xdeadbeef, hi = 0xdeadbeef;
    printf("rdpmc ecx=0: ");
    arm();
    __asm__ volatile(TRY("rdpmc") : "+a"(lo), "+d"(hi) : "c"(0) : "memory");
    res_tail("");
    if (fault_vec < 0)
        printf("ok (value not printed: it counts)");
    putc('\n');

    /* XCR0: needs CPUID.XSAVE and CR4.OSXSAVE; otherwise both instructions #UD. */
    ureg cr4 = RDCR(4);
    if (cpu1c & (1u << 26))
        wrcr4(cr4 | (1u << 18));
    printf("xgetbv ecx=0 (CR4=" RF "): ", (u64)RDCR(4));
    lo = hi = 0xdeadbeef;
    arm();
    __asm__ volatile(TRY("xgetbv") : "+a"(lo), "+d"(hi) : "c"(0) : "memory");
    res_tail("");
    if (fault_vec < 0)
        printf("%08x:%08x", hi, lo);
    putc('\n');
    printf("xsetbv ecx=0 <- 1: ");
    arm();
    __asm__ volatile(TRY("xsetbv") : : "a"(1), "d"(0), "c"(0) : "memory");
    res();
    wrcr4(cr4);

    printf("ud2: ");
    arm();
    __asm__ volatile(TRY("ud2") : : : "memory");
    res();
    check(fault_vec == 6 && !fault_trap, "ud2 -> #UD at the instruction");
    printf("int3: ");
    arm();
    __asm__ volatile(TRY("int3") : : : "memory");
    res();
    check(fault_vec == 3 && fault_trap, "int3 -> #BP reported after the instruction");
    printf("int $0x30: ");
    arm();
    __asm__ volatile(TRY("int $0x30") : : : "memory");
    res();
    check(fault_vec == 0x30 && fault_trap, "int n goes through the IDT");
}

/* ---------------------------------------------------------------- lar, lsl, verr, verw */

static void sel_probe(u16 sel)
{
    ureg a = PAT, l = PAT;
    u8 za, zl, zr, zw;
    __asm__ volatile("lar %w4, %k0; setz %2\n\t"
                     "lsl %w4, %k1; setz %3"
                     : "+r"(a), "+r"(l), "=&q"(za), "=&q"(zl) : "r"((ureg)sel) : "cc");
    __asm__ volatile("verr %w2; setz %0; verw %w2; setz %1" : "=&q"(zr), "=&q"(zw) : "r"((ureg)sel) : "cc");
    printf("sel %04x: lar ZF=%u " RF "  lsl ZF=%u " RF "  verr ZF=%u  verw ZF=%u\n", sel, za, (u64)a, zl, (u64)l, zr,
           zw);
}

static void sec_selectors(void)
{
    static const u16 sels[] = {
        0x0000, SEL_CODE, SEL_DATA, SEL_DATA | 3, SEL_CODE_ALT, SEL_DATA3, SEL_NP, SEL_EXPDOWN, SEL_CONFORM,
        SEL_CONFORM | 3, SEL_DATA16, SEL_TSS_A, SEL_TSS_B, SEL_LDT, SEL_GATE, SEL_INTGATE, GDT_BYTES, 0xfff8,
        0x0004, 0x000c, 0x0014,
    };
    puts("[lar, lsl, verr, verw (r32 dest, r16 selector)]\n");
    for (u32 i = 0; i < sizeof(sels) / sizeof(sels[0]); i++)
        sel_probe(sels[i]);
    ureg r = PAT;
    u8 z;
    __asm__ volatile("lar %w2, %w0; setz %1" : "+r"(r), "=&q"(z) : "r"((ureg)SEL_CODE) : "cc");
    printf("lar r16 0008 -> ZF=%u " RF "\n", z, (u64)r);
    r = PAT;
    __asm__ volatile("lsl %w2, %w0; setz %1" : "+r"(r), "=&q"(z) : "r"((ureg)SEL_CODE) : "cc");
    printf("lsl r16 0008 -> ZF=%u " RF "\n", z, (u64)r);
#ifdef __x86_64__
    r = PAT;
    __asm__ volatile("lar %w2, %q0; setz %1" : "+r"(r), "=&q"(z) : "r"((ureg)SEL_CODE) : "cc");
    printf("lar r64 0008 -> ZF=%u " RF "\n", z, (u64)r);
    r = PAT;
    __asm__ volatile("lsl %w2, %q0; setz %1" : "+r"(r), "=&q"(z) : "r"((ureg)SEL_EXPDOWN) : "cc");
    printf("lsl r64 0030 -> ZF=%u " RF "\n", z, (u64)r);
#endif
    u16 msel = SEL_TSS_A;
    r = PAT;
    __asm__ volatile("lar %2, %k0; setz %1" : "+r"(r), "=&q"(z) : "m"(msel) : "cc");
    printf("lar m16 0048 -> ZF=%u " RF "\n", z, (u64)r);
    r = PAT;
    __asm__ volatile("lsl %2, %k0; setz %1" : "+r"(r), "=&q"(z) : "m"(msel) : "cc");
    printf("lsl m16 0048 -> ZF=%u " RF "\n", z, (u64)r);
    msel = SEL_DATA;
    u8 zr, zw;
    __asm__ volatile("verr %2; setz %0; verw %2; setz %1" : "=&q"(zr), "=&q"(zw) : "m"(msel) : "cc");
    printf("verr/verw m16 0010 -> ZF=%u/%u\n", zr, zw);
}

/* ---------------------------------------------------------------- segment registers */

#define SREG_LOAD(seg, sel)                                                                            \
    ({                                                                                                 \
        ureg _rb = PAT;                                                                                \
        arm();                                                                                         \
        __asm__ volatile(TRY("mov %w1, %%" #seg) "mov %%" #seg ", %k0\n\tmov %w2, %%" #seg          \
                         : "+&r"(_rb) : "r"((ureg)(sel)), "r"((ureg)SEL_DATA) : "memory");           \
        printf("mov " #seg " <- %04x: ", (u32)(sel));                                                  \
        res_tail("ok");                                                                                \
        printf(", " #seg " reads %04x\n", (u32)_rb);                                                   \
        _rb;                                                                                           \
    })

#ifdef __x86_64__
#define SLOT "-8"
#else
#define SLOT "-4"
#endif
/* push sreg at native width onto a slot prefilled with a pattern: bytes pushed and the slot's content. */
#define PUSH_SREG(seg)                                                                                 \
    do {                                                                                               \
        ureg _v, _d;                                                                                   \
        __asm__ volatile("mov %2, " SLOT "(" SP ")\n\tmov " SP ", %1\n\tpush %%" #seg "\n\t"          \
                         "sub " SP ", %1\n\tpop %0"                                                    \
                         : "=r"(_v), "=&r"(_d) : "r"(PAT) : "memory");                                 \
        printf("push %s: %u bytes, slot " RF "\n", #seg, (u32)_d, (u64)_v);                            \
    } while (0)
#define POP_SREG(seg, sel)                                                                             \
    do {                                                                                               \
        ureg _v;                                                                                       \
        __asm__ volatile("push %1; pop %%" #seg "; mov %%" #seg ", %k0; mov %w2, %%" #seg              \
                         : "=&r"(_v) : "r"((ureg)(sel)), "r"((ureg)SEL_DATA) : "memory");              \
        printf("pop %s (%04x): reads %04x\n", #seg, (u32)(sel), (u32)_v);                              \
        check(_v == (sel), "pop sreg loads the selector");                                             \
    } while (0)

static void sec_segments(void)
{
    ureg r;
    puts("[segment registers]\n");
    r = PAT;
    __asm__ volatile("mov %%ds, %k0" : "+r"(r));
    printf("mov ds, r32 -> " RF "\n", (u64)r);
    r = PAT;
    __asm__ volatile("mov %%ds, %w0" : "+r"(r));
    printf("mov ds, r16 -> " RF "\n", (u64)r);
#ifdef __x86_64__
    r = PAT;
    __asm__ volatile("mov %%ds, %q0" : "+r"(r));
    printf("mov ds, r64 -> " RF "\n", (u64)r);
#endif
    union { u32 d; u16 w[2]; } mem = { 0xcccccccc };
    __asm__ volatile("mov %%ss, %0" : "+m"(mem.w[0]));
    printf("mov ss, m16 (memory was cccccccc) -> %08x\n", mem.d);
    ureg cs, ss, es, fs, gs;
    __asm__ volatile("mov %%cs, %k0; mov %%ss, %k1; mov %%es, %k2; mov %%fs, %k3; mov %%gs, %k4"
                     : "=r"(cs), "=r"(ss), "=r"(es), "=r"(fs), "=r"(gs));
    printf("cs=%04x ss=%04x es=%04x fs=%04x gs=%04x\n", (u32)cs, (u32)ss, (u32)es, (u32)fs, (u32)gs);

    /* The CPU sets the accessed bit of a descriptor when it loads it. */
    printf("GDT access byte of 0020 before load: %02x\n", gdt_access(SEL_DATA3));
    SREG_LOAD(es, SEL_DATA3);
    printf("GDT access byte of 0020 after load: %02x\n", gdt_access(SEL_DATA3));
    check(gdt_access(SEL_DATA3) == 0xf3, "segment load sets the accessed bit");
    check(SREG_LOAD(es, SEL_DATA3 | 3) == (SEL_DATA3 | 3), "RPL kept in the selector");
    SREG_LOAD(ds, SEL_CODE);
    SREG_LOAD(ds, SEL_DATA16);
    SREG_LOAD(ds, 0x0004);
    check(fault_vec < 0, "LDT data selector loads");
    SREG_LOAD(ds, SEL_NP);
    check(fault_vec == 11 && fault_err == SEL_NP, "not-present data segment -> #NP(sel)");
    SREG_LOAD(ds, 0xfff8);
    check(fault_vec == 13 && fault_err == 0xfff8, "selector beyond the GDT limit -> #GP(sel)");
    SREG_LOAD(ds, SEL_TSS_A);
    SREG_LOAD(ds, SEL_DATA | 3);
    SREG_LOAD(fs, 0);
    SREG_LOAD(gs, 0);
    SREG_LOAD(ss, 0);
    SREG_LOAD(ss, 3);
    SREG_LOAD(ss, SEL_CODE);
    SREG_LOAD(ss, SEL_DATA3);
    SREG_LOAD(ss, SEL_NP);
    SREG_LOAD(ss, SEL_EXPDOWN);
    SREG_LOAD(ss, SEL_DATA);
    check(fault_vec < 0, "ss <- flat data");
    u16 msel = SEL_DATA3;
    r = PAT;
    __asm__ volatile("mov %1, %%es; mov %%es, %k0; mov %w2, %%es" : "+r"(r) : "m"(msel), "r"((ureg)SEL_DATA));
    printf("mov es <- m16 0020: es reads %04x\n", (u32)r);
    printf("mov cs <- 0008 (8e c8): ");
    arm();
    __asm__ volatile("mov $8, %%eax\n\t" TRY(".byte 0x8e, 0xc8") : : : "eax", "memory");
    res();
    check(fault_vec == 6, "mov to cs -> #UD");

#ifdef __x86_64__
    PUSH_SREG(fs);
    PUSH_SREG(gs);
    {
        ureg d;
        u16 v;
        __asm__ volatile("mov " SP ", %1\n\tpushw %%fs\n\tsub " SP ", %1\n\tpopw %0" : "=r"(v), "=&r"(d) : : "memory");
        printf("pushw fs: %u bytes, %04x\n", (u32)d, v);
    }
    POP_SREG(fs, SEL_DATA3);
    POP_SREG(gs, SEL_DATA3);
    static const struct { u8 op; const char *name; } bad[] = {
        { 0x06, "push es" }, { 0x07, "pop es" }, { 0x0e, "push cs" }, { 0x16, "push ss" }, { 0x17, "pop ss" },
        { 0x1e, "push ds" }, { 0x1f, "pop ds" },
    };
    for (u32 i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        /* Hand-encoded: gas refuses these in 64-bit mode. rsp saved and restored around the probe. */
        u64 save;
        u8 code_op = bad[i].op;
        printf("%s (%02x): ", bad[i].name, code_op);
        arm();
        switch (code_op) {
#define BADOP(b) case b: __asm__ volatile("mov %%rsp, %0\n\t" TRY(".byte " #b) "mov %0, %%rsp" : "=&r"(save) : : "memory"); break;
        BADOP(0x06) BADOP(0x07) BADOP(0x0e) BADOP(0x16) BADOP(0x17) BADOP(0x1e) BADOP(0x1f)
#undef BADOP
        }
        res();
        check(fault_vec == 6, "push/pop of cs/ds/es/ss is invalid in 64-bit mode");
    }
#else
    PUSH_SREG(cs);
    PUSH_SREG(ds);
    PUSH_SREG(es);
    PUSH_SREG(fs);
    PUSH_SREG(gs);
    PUSH_SREG(ss);
    {
        ureg d;
        u16 v;
        __asm__ volatile("mov " SP ", %1\n\tpushw %%ds\n\tsub " SP ", %1\n\tpopw %0" : "=r"(v), "=&r"(d) : : "memory");
        printf("pushw ds: %u bytes, %04x\n", (u32)d, v);
    }
    POP_SREG(ds, SEL_DATA3);
    POP_SREG(es, SEL_DATA3);
    POP_SREG(fs, SEL_DATA3);
    POP_SREG(gs, SEL_DATA3);
    POP_SREG(ss, SEL_DATA);
    {
        ureg v;
        __asm__ volatile("pushw %w1; popw %%es; mov %%es, %k0; mov %w2, %%es"
                         : "=&r"(v) : "r"((ureg)SEL_DATA3), "r"((ureg)SEL_DATA) : "memory");
        printf("pushw/popw es (0020): reads %04x\n", (u32)v);
    }
#endif
    /* Far-pointer loads: lfs, lgs, lss (m16:32). */
    struct __attribute__((packed)) { u32 off; u16 sel; } fp = { 0x12345678, SEL_DATA3 };
    ureg off = 0, sel = 0;
    __asm__ volatile("lfs %2, %k0; mov %%fs, %k1; mov %w3, %%fs" : "=&r"(off), "=&r"(sel) : "m"(fp), "r"((ureg)SEL_DATA));
    printf("lfs {12345678, 0020} -> " RF ", fs %04x\n", (u64)off, (u32)sel);
    __asm__ volatile("lgs %2, %k0; mov %%gs, %k1; mov %w3, %%gs" : "=&r"(off), "=&r"(sel) : "m"(fp), "r"((ureg)SEL_DATA));
    printf("lgs {12345678, 0020} -> " RF ", gs %04x\n", (u64)off, (u32)sel);
    ureg sp0, sp1;
    __asm__ volatile("mov " SP ", %0\n\t"
                     "movl %%esp, %2\n\t"
                     "movw $0x10, 4+%2\n\t"
                     "lss %2, %%esp\n\t"
                     "mov " SP ", %1"
                     : "=&r"(sp0), "=&r"(sp1), "+m"(fp) : : "memory");
    printf("lss {esp, 0010}: esp %s, ss %04x\n", sp0 == sp1 ? "unchanged" : "CHANGED", fp.sel);
    check(sp0 == sp1, "lss loads esp");
}

/* ---------------------------------------------------------------- time stamp counter */

static void sec_tsc(void)
{
    u32 lo1, hi1, lo2, hi2, aux = 0xdeadbeef;
    puts("[rdtsc, rdtscp]\n");
    __asm__ volatile("rdtsc" : "=a"(lo1), "=d"(hi1));
    __asm__ volatile("rdtsc" : "=a"(lo2), "=d"(hi2));
    u64 t1 = ((u64)hi1 << 32) | lo1, t2 = ((u64)hi2 << 32) | lo2;
    printf("rdtsc twice: second >= first: %s\n", t2 >= t1 ? "yes" : "no");
    check(t2 >= t1, "TSC does not go backwards");
    wrmsr_try(0xc0000103u, 0x2a);
    arm();
    __asm__ volatile(TRY("rdtscp") : "=a"(lo2), "=d"(hi2), "+c"(aux) : : "memory");
    printf("rdtscp (TSC_AUX <- 2a): ");
    res_tail("");
    if (fault_vec < 0) {
        t2 = ((u64)hi2 << 32) | lo2;
        printf("ok, ecx=%08x, >= rdtsc: %s", aux, t2 >= t1 ? "yes" : "no");
    }
    putc('\n');
}

/* ---------------------------------------------------------------- main */

int kmain(u32 boot_magic, uptr boot_info)
{
    serial_init();
    printf("sensitive zoo, %u-bit\n", (u32)sizeof(void *) * 8);
    __asm__ volatile("sgdt %0" : "=m"(boot_gdtr));
    build_tables();
    load_idt();
    load_gdt();
    pic_init();
    sec_entry_state();
    sec_cpuid();
    sec_if();
    sec_flags();
    sec_flags2();
    sec_ports();
    sec_string_io();
    sec_hlt();
    sec_tables();
    sec_cr();
    sec_dr();
    sec_msr();
    sec_paging();
    sec_misc();
    sec_selectors();
    sec_segments();
    sec_tsc();
    if (failures) {
        printf("FAIL: %u checks failed\n", failures);
        return EXIT_FAIL;
    }
    puts("PASS\n");
    return EXIT_PASS;
}
