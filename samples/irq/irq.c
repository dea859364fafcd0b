/* Interrupt-driven sample kernel: own GDT/IDT/TSS, PIT through the 8259 pair and the LAPIC timer, exceptions
   resumed by fixups (singly and 1,000 in a row), ring 3 with stack switching, IF rules of gates, IST (64-bit). */
#include "irq.h"

#ifdef __x86_64__
#define BITS 64
#define SP0 "RSP0"
#define PTE_ADDR 0x000ffffffffff000ull
#else
#define BITS 32
#define SP0 "ESP0"
#endif

#define EFLAGS_IF 0x200u

static inline void cli(void) { __asm__ volatile("cli" ::: "memory"); }
static inline void sti(void) { __asm__ volatile("sti" ::: "memory"); }
static inline uptr read_flags(void) { uptr v; __asm__ volatile("pushf; pop %0" : "=r"(v)); return v; }
static inline uptr read_cr2(void) { uptr v; __asm__ volatile("mov %%cr2, %0" : "=r"(v)); return v; }
static inline uptr read_cr3(void) { uptr v; __asm__ volatile("mov %%cr3, %0" : "=r"(v)); return v; }
static inline void write_cr3(uptr v) { __asm__ volatile("mov %0, %%cr3" : : "r"(v) : "memory"); }

static int line_open; /* a report line is half printed: a failure starts a new line */

static void fail(const char *why)
{
    printf("%sFAIL: %s\n", line_open ? "\n" : "", why);
    qemu_exit(EXIT_FAIL);
}

static void check(int ok, const char *why)
{
    if (!ok)
        fail(why);
}

/* ---------------------------------------------------------------- descriptor tables */

static u64 gdt[8] __attribute__((aligned(16)));

#ifdef __x86_64__
struct gate { u16 off_lo, sel; u8 ist, type; u16 off_mid; u32 off_hi, zero; };
struct tss {
    u32 reserved0;
    u64 sp0, sp1, sp2, reserved1;
    u64 ist[7];
    u64 reserved2;
    u16 reserved3, iomap_base;
} __attribute__((packed));
#else
struct gate { u16 off_lo, sel; u8 zero, type; u16 off_hi; };
struct tss {
    u32 link, sp0, ss0, sp1, ss1, sp2, ss2, cr3, eip, eflags;
    u32 eax, ecx, edx, ebx, esp, ebp, esi, edi, es, cs, ss, ds, fs, gs, ldt;
    u16 trap, iomap_base;
};
#endif

struct dtr { u16 limit; uptr base; } __attribute__((packed));

#define IOMAP_PORTS 0x400 /* the bitmap covers ports 0-0x3ff; ports past the TSS limit are denied */
static struct {
    struct tss t;
    u8 iomap[IOMAP_PORTS / 8 + 1]; /* last byte: the all-ones terminator */
} __attribute__((packed, aligned(128))) tss_area;

static struct gate idt[256] __attribute__((aligned(16)));

static u8 ring0_stack[8192] __attribute__((aligned(16)));   /* TSS.SP0: entered from ring 3 */
static u8 user_stack[4096] __attribute__((aligned(16)));
#define RING0_TOP ((uptr)ring0_stack + sizeof(ring0_stack))
#ifdef __x86_64__
static u8 ist1_stack[4096] __attribute__((aligned(16)));    /* VEC_IST */
static u8 ist2_stack[4096] __attribute__((aligned(16)));    /* #DF */
#define IST1_TOP ((uptr)ist1_stack + sizeof(ist1_stack))
#endif

static u64 seg_desc(u32 base, u32 limit, u32 access, u32 flags)
{
    return (limit & 0xffff) | ((u64)(base & 0xffffff) << 16) | ((u64)access << 40) |
           ((u64)((limit >> 16) & 0xf) << 48) | ((u64)flags << 52) | ((u64)(base >> 24) << 56);
}

/* trap: 1 = trap gate (IF kept), 0 = interrupt gate (IF cleared); ist: 64-bit IST slot or 0 */
static void set_gate(int v, int trap, int dpl, int ist)
{
    uptr a = (uptr)isr_stubs + 16 * v;
    struct gate *g = &idt[v];
    g->off_lo = a & 0xffff;
    g->sel = SEL_KCODE;
    g->type = 0x80 | (dpl << 5) | (trap ? 0xf : 0xe);
#ifdef __x86_64__
    g->ist = ist;
    g->off_mid = (a >> 16) & 0xffff;
    g->off_hi = (u32)(a >> 32);
    g->zero = 0;
#else
    (void)ist;
    g->zero = 0;
    g->off_hi = a >> 16;
#endif
}

static void setup_tables(void)
{
    uptr tss_base = (uptr)&tss_area;
    u32 code_flags = BITS == 64 ? 0xa : 0xc; /* 64: G | L; 32: G | D */
    gdt[1] = seg_desc(0, 0xfffff, 0x9a, code_flags); /* 0x08 kernel code */
    gdt[2] = seg_desc(0, 0xfffff, 0x92, 0xc);        /* 0x10 kernel data */
    gdt[3] = seg_desc(0, 0xfffff, 0xfa, code_flags); /* 0x18 user code, DPL 3 */
    gdt[4] = seg_desc(0, 0xfffff, 0xf2, 0xc);        /* 0x20 user data, DPL 3 */
    gdt[5] = seg_desc((u32)tss_base, sizeof(tss_area) - 1, 0x89, 0); /* 0x28 available TSS */
#ifdef __x86_64__
    gdt[6] = (u64)tss_base >> 32;                    /* upper half of the 16-byte TSS descriptor */
#endif
    struct dtr g = { sizeof(gdt) - 1, (uptr)gdt };
    __asm__ volatile("lgdt %0" : : "m"(g));
    reload_segments();

    tss_area.t.sp0 = RING0_TOP;
#ifdef __x86_64__
    tss_area.t.ist[0] = IST1_TOP;
    tss_area.t.ist[1] = (uptr)ist2_stack + sizeof(ist2_stack);
#else
    tss_area.t.ss0 = SEL_KDATA;
#endif
    memset(tss_area.iomap, 0xff, sizeof(tss_area.iomap));
    tss_area.iomap[0x80 / 8] &= ~(1u << (0x80 % 8)); /* ring 3 may use port 0x80 only */
    tss_area.t.iomap_base = (u16)((uptr)tss_area.iomap - tss_base);
    __asm__ volatile("ltr %w0" : : "r"(SEL_TSS));

    for (int v = 0; v < 256; v++)
        set_gate(v, 0, 0, 0);
    set_gate(3, 0, 3, 0);              /* #BP: int3 allowed from ring 3 */
    set_gate(8, 0, 0, 2);              /* #DF on IST2 (64-bit) */
    set_gate(VEC_SYSCALL, 1, 3, 0);    /* trap gate, DPL 3 */
    set_gate(VEC_EXIT, 0, 3, 0);       /* interrupt gate, DPL 3 */
    set_gate(VEC_IST, 0, 0, 1);        /* interrupt gate, DPL 0, IST1 (64-bit) */
    struct dtr i = { sizeof(idt) - 1, (uptr)idt };
    __asm__ volatile("lidt %0" : : "m"(i));

    u16 tr;
    __asm__ volatile("str %0" : "=r"(tr));
    check(tr == SEL_TSS, "str does not read back the TSS selector");
    printf("tables: own GDT (kernel 0x08/0x10, user 0x1b/0x23, TSS 0x%02x), 256-gate IDT, TSS.%s set, "
           "I/O bitmap opens port 0x80 only\n", tr, SP0);
}

/* ---------------------------------------------------------------- paging */

#define LAPIC_BASE 0xfee00000u
#define PG_P 0x1
#define PG_RW 0x2
#define PG_US 0x4
#define PG_PWT 0x8
#define PG_PCD 0x10

extern char _end[];

#ifdef __x86_64__
static u64 pd_high[512] __attribute__((aligned(4096)));   /* 3-4 GiB */
static u64 pt_lapic[512] __attribute__((aligned(4096)));

/* The boot stub maps 0-1 GiB with 2 MiB pages, supervisor only. Open the first 2 MiB to ring 3 and add
   the LAPIC page, uncached. 1-2 GiB stays unmapped for the #PF probe. */
static void setup_paging(void)
{
    check((uptr)_end <= 0x200000, "kernel image extends past 2 MiB");
    u64 *pml4 = (u64 *)(read_cr3() & PTE_ADDR);
    u64 *pdpt = (u64 *)(uptr)(pml4[0] & PTE_ADDR);
    u64 *pd = (u64 *)(uptr)(pdpt[0] & PTE_ADDR);
    check(!(pdpt[1] & PG_P) && !(pdpt[3] & PG_P), "boot page tables map more than expected");
    pml4[0] |= PG_US;
    pdpt[0] |= PG_US;
    pd[0] |= PG_US;
    pdpt[3] = (uptr)pd_high | PG_RW | PG_P;
    pd_high[(LAPIC_BASE >> 21) & 511] = (uptr)pt_lapic | PG_RW | PG_P;
    pt_lapic[(LAPIC_BASE >> 12) & 511] = LAPIC_BASE | PG_PCD | PG_PWT | PG_RW | PG_P;
    write_cr3(read_cr3());
    printf("paging: first 2 MiB user-accessible, LAPIC page 0x%08x mapped uncached, 0x%08x not present\n",
           LAPIC_BASE, UNMAPPED_ADDR);
}
#else
static u32 pd32[1024] __attribute__((aligned(4096)));
static u32 pt_low[1024] __attribute__((aligned(4096)));   /* 0-4 MiB */
static u32 pt_lapic[1024] __attribute__((aligned(4096)));

/* Paging is off after boot: build a two-level identity map of 0-4 MiB (user-accessible) plus the LAPIC page,
   uncached, and turn it on. Everything else, UNMAPPED_ADDR included, is not present. */
static void setup_paging(void)
{
    check((uptr)_end <= 0x400000, "kernel image extends past 4 MiB");
    for (u32 i = 0; i < 1024; i++)
        pt_low[i] = (i << 12) | PG_US | PG_RW | PG_P;
    pd32[0] = (uptr)pt_low | PG_US | PG_RW | PG_P;
    pd32[LAPIC_BASE >> 22] = (uptr)pt_lapic | PG_RW | PG_P;
    pt_lapic[(LAPIC_BASE >> 12) & 1023] = LAPIC_BASE | PG_PCD | PG_PWT | PG_RW | PG_P;
    write_cr3((uptr)pd32);
    uptr cr0;
    __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
    __asm__ volatile("mov %0, %%cr0" : : "r"(cr0 | 0x80000000u) : "memory");
    printf("paging: on, 0-4 MiB identity-mapped user-accessible, LAPIC page 0x%08x mapped uncached, "
           "0x%08x not present\n", LAPIC_BASE, UNMAPPED_ADDR);
}
#endif

/* ---------------------------------------------------------------- 8259 PIC, PIT, LAPIC */

static void pic_mask(u8 master, u8 slave)
{
    outb(0x21, master);
    outb(0xa1, slave);
}

static void pic_init(void)
{
    outb(0x20, 0x11);                  /* ICW1: edge, cascade, ICW4 follows */
    outb(0xa0, 0x11);
    outb(0x21, VEC_PIC_BASE);          /* ICW2: vector base */
    outb(0xa1, VEC_PIC_BASE + 8);
    outb(0x21, 0x04);                  /* ICW3: slave on IRQ2 */
    outb(0xa1, 0x02);                  /*       slave identity 2 */
    outb(0x21, 0x01);                  /* ICW4: 8086 mode, normal EOI */
    outb(0xa1, 0x01);
    pic_mask(0xff, 0xff);
    u8 m = inb(0x21), s = inb(0xa1);
    check(m == 0xff && s == 0xff, "PIC mask registers do not read back");
    printf("pic: ICW1-4 sent, vectors 0x%02x-0x%02x, IMR reads back 0x%02x/0x%02x\n", VEC_PIC_BASE,
           VEC_PIC_BASE + 15, m, s);
}

#define PIT_DIVISOR 1193 /* 1193182 Hz / 1193 = 1000.15 Hz */

static void pit_start(void)
{
    outb(0x43, 0x34);                  /* channel 0, lobyte/hibyte, mode 2 (rate generator), binary */
    outb(0x40, PIT_DIVISOR & 0xff);
    outb(0x40, PIT_DIVISOR >> 8);
}

static void pit_poke(void)             /* latch and read channel 0: an I/O event, value unused */
{
    outb(0x43, 0x00);
    (void)inb(0x40);
    (void)inb(0x40);
}

#define LAPIC_TPR 0x080
#define LAPIC_EOI 0x0b0
#define LAPIC_SVR 0x0f0
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_LVT_LINT0 0x350
#define LAPIC_TIMER_ICR 0x380
#define LAPIC_TIMER_CCR 0x390
#define LAPIC_TIMER_DCR 0x3e0
#define LVT_MASKED 0x10000u
#define LVT_PERIODIC 0x20000u
#define LAPIC_COUNT 62500 /* with divide 16: 1 ms at QEMU's 1 GHz APIC clock */

static inline u32 lapic_read(u32 reg) { return *(volatile u32 *)(uptr)(LAPIC_BASE + reg); }
static inline void lapic_write(u32 reg, u32 v) { *(volatile u32 *)(uptr)(LAPIC_BASE + reg) = v; }

static void lapic_poke(void)           /* read the current count: an MMIO event, value unused */
{
    (void)lapic_read(LAPIC_TIMER_CCR);
}

/* ---------------------------------------------------------------- interrupt and exception handling */

/* Labelled instructions: where a fault resumes (0 for traps and software interrupts), what is expected there. */
struct site {
    const char *at, *resume, *name;
    u32 vector, error;
};

static const struct site sites[] = {
    { fault_de, resume_de, "fault_de", 0, 0 },
    { fault_gp, resume_gp, "fault_gp", 13, SEL_TSS },
    { fault_pf, resume_pf, "fault_pf", 14, 0x2 },          /* not present, write, supervisor */
    { fault_ud, resume_ud, "fault_ud", 6, 0 },
    { fault_bp, 0, "fault_bp", 3, 0 },
    { sw_int80, 0, "sw_int80", VEC_SYSCALL, 0 },
    { sw_int83, 0, "sw_int83", VEC_IST, 0 },
    { user_bp, 0, "user_bp", 3, 0 },
    { user_cli, user_cli_end, "user_cli", 13, 0 },
    { user_hlt, user_hlt_end, "user_hlt", 13, 0 },
    { user_int83, user_int83_end, "user_int83", 13, VEC_IST * 8 + 2 }, /* IDT bit set */
    { user_in, user_in_end, "user_in", 13, 0 },
    { user_sys, 0, "user_sys", VEC_SYSCALL, 0 },
    { user_exit, 0, "user_exit", VEC_EXIT, 0 },
};
#define NSITES (sizeof(sites) / sizeof(sites[0]))

static const struct site *site_at(uptr ip)
{
    for (u32 i = 0; i < NSITES; i++)
        if ((uptr)sites[i].at == ip)
            return &sites[i];
    return 0;
}

/* Prints ip as label+offset: the site that raised `vector` if ip is at most 16 bytes past one (a trap or
   software interrupt reports the next instruction), else the nearest site label before ip. */
static void where(uptr ip, uptr vector)
{
    const struct site *best = 0;
    for (int pass = 0; pass < 2 && !best; pass++)
        for (u32 i = 0; i < NSITES; i++)
            if ((uptr)sites[i].at <= ip && ip - (uptr)sites[i].at < 16 && (pass || sites[i].vector == vector) &&
                (!best || sites[i].at > best->at))
                best = &sites[i];
    if (best)
        printf("%s+%u", best->name, (u32)(ip - (uptr)best->at));
    else
        printf("0x%p", (void *)ip);
}

static const char *vec_name(uptr v)
{
    static const char *const names[32] = {
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#CSO", "#TS", "#NP", "#SS", "#GP",
        "#PF", "#15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP",
    };
    if (v < 32 && names[v])
        return names[v];
    return v == VEC_SYSCALL ? "int 0x80" : v == VEC_IST ? "int 0x83" : v == VEC_EXIT ? "int 0x81" : "vector";
}

static int has_error_code(uptr v)
{
    return v == 8 || (v >= 10 && v <= 14) || v == 17 || v == 21 || v == 29 || v == 30;
}

static int selector_error(uptr v)      /* #TS #NP #SS #GP: error code = selector index | TI | IDT | EXT */
{
    return v >= 10 && v <= 13;
}

/* One recorded exception or software interrupt (timer interrupts are only counted). */
struct event {
    uptr vector, error, ip, cs, ss, cr2, saved_flags, frame_top;
    int if_inside; /* EFLAGS.IF as the handler found it */
};

static struct event last;             /* the most recent event */
static struct event ev_log[16];       /* the first events since the log was cleared */
static u32 nlog, events;
static u32 exc_count[32], exc_bad;    /* per-vector counts; events whose error code or CR2 was not expected */

static volatile u32 pit_ticks, pit_target, lapic_ticks, lapic_target;
volatile u32 user_phase_ticks;         /* read by the ring-3 loop in probes.S */
static volatile u32 user_phase;        /* PIT ticks count only when taken at CPL 3 */
static u32 timer_if_set, user_tick_bad, stray_irqs, spurious;

static void fatal(struct frame *f, const char *why)
{
    printf("FAIL: %s: vector 0x%x (%s) err=0x%x at ", why, (u32)f->vector, vec_name(f->vector), (u32)f->error);
    where(f->ip, f->vector);
    printf(" cs=0x%x", (u32)f->cs);
    if (f->vector == 14)
        printf(" cr2=0x%p", (void *)read_cr2());
    putc('\n');
    qemu_exit(EXIT_FAIL);
}

static void pic_irq(u32 irq, int user, uptr top, struct frame *f)
{
    if (irq == 0) {
        if (user && (top != RING0_TOP || f->cs != SEL_UCODE || (f->ss & 0xffff) != SEL_UDATA))
            user_tick_bad++;
        if (user_phase) {
            if (user && user_phase_ticks < USER_TICKS && ++user_phase_ticks == USER_TICKS)
                outb(0x21, 0xff);      /* stop at the target: the count stays exact */
        } else if (pit_ticks < pit_target && ++pit_ticks == pit_target) {
            outb(0x21, 0xff);
        }
    } else {
        stray_irqs++;
    }
    if (irq >= 8)
        outb(0xa0, 0x20);              /* EOI to the slave, then the master */
    outb(0x20, 0x20);
}

/* Error codes naming an IDT entry (bit 1) hold the vector in bits 15:3. QEMU 7.2 TCG puts vector * 16 + 2
   there in 64-bit mode (fixed in later QEMU); accept both, and print only the vector (print_event). */
static u32 idt_err_quirk;

static int error_ok(uptr vector, uptr got, u32 want)
{
    if (got == want)
        return 1;
    if (BITS == 64 && selector_error(vector) && (want & 2) && got == (((uptr)want >> 3) << 4 | 2)) {
        idt_err_quirk++;
        return 1;
    }
    return 0;
}

void isr_dispatch(struct frame *f)
{
    uptr v = f->vector;
    int user = (f->cs & 3) == 3;
    int if_inside = (read_flags() & EFLAGS_IF) != 0;
    uptr top = (uptr)(&f->ss + 1);     /* where the CPU started pushing, if it pushed SS:SP */

    if (v >= VEC_PIC_BASE && v < VEC_PIC_BASE + 16) {
        timer_if_set += if_inside;
        pic_irq(v - VEC_PIC_BASE, user, top, f);
        return;
    }
    if (v == VEC_LAPIC_TIMER) {
        timer_if_set += if_inside;
        if (lapic_ticks < lapic_target && ++lapic_ticks == lapic_target) {
            lapic_write(LAPIC_LVT_TIMER, LVT_MASKED | VEC_LAPIC_TIMER);   /* stop at the target */
            lapic_write(LAPIC_TIMER_ICR, 0);
        }
        lapic_write(LAPIC_EOI, 0);
        return;
    }
    if (v == VEC_SPURIOUS) {
        spurious++;                    /* no EOI for the spurious vector */
        return;
    }

    struct event e = { v, f->error, f->ip, f->cs & 0xffff, 0, v == 14 ? read_cr2() : 0, f->flags, top, if_inside };
    if (user || BITS == 64)
        e.ss = f->ss & 0xffff;
    last = e;
    if (nlog < sizeof(ev_log) / sizeof(ev_log[0]))
        ev_log[nlog++] = e;
    events++;

    if (v == VEC_SYSCALL) {
        f->ax = f->ax == SYS_TRIPLE ? 3 * (u32)f->cx + 1 : 0xffffffffu;
        return;
    }
    if (v == VEC_IST)
        return;
    if (v == VEC_EXIT) {
        if (!user)
            fatal(f, "exit vector from ring 0");
        f->ax = f->bx;                 /* the status becomes enter_user's return value */
        f->ip = (uptr)ring3_return;
        f->cs = SEL_KCODE;
        f->flags = 0x2;                /* IF = 0 */
#ifdef __x86_64__
        f->sp = kernel_sp_saved;
        f->ss = SEL_KDATA;
#else
        f->ds = f->es = f->fs = f->gs = SEL_KDATA;
#endif
        return;
    }
    if (v < 32) {
        /* #BP is a trap: the saved ip is after the int3. Faults resume at the site's resume label. */
        const struct site *s = site_at(v == 3 ? f->ip - 1 : f->ip);
        if (!s || s->vector != v || (v != 3 && !s->resume))
            fatal(f, "unexpected exception");
        exc_count[v]++;
        if (!error_ok(v, f->error, s->error) || (v == 14 && e.cr2 != UNMAPPED_ADDR))
            exc_bad++;
        if (s->resume)
            f->ip = (uptr)s->resume;
        return;
    }
    fatal(f, "unexpected interrupt");
}

/* ---------------------------------------------------------------- tests */

static void print_event(const char *tag, const struct event *e)
{
    printf("%s: %s", tag, vec_name(e->vector));
    if (selector_error(e->vector) && (e->error & 2)) {
        uptr vec = e->error >> 3;      /* an IDT entry; QEMU's 64-bit vector * 16 form decodes past 0xff */
        printf(" err=(IDT vector 0x%02x)", (u32)(vec > 0xff ? vec >> 1 : vec));
    }
    else if (has_error_code(e->vector))
        printf(" err=0x%04x", (u32)e->error);
    if (e->vector == 14)
        printf(" cr2=0x%08x", (u32)e->cr2);
    printf(" at ");
    where(e->ip, e->vector);
}

/* Runs one probe that must raise `vector` with the saved ip at `ip`, and reports it. */
static void one_exception(void (*probe)(void), u32 vector, const char *ip, const char *note)
{
    u32 before = events;
    probe();
    check(events == before + 1, "no exception recorded");
    print_event("exc", &last);
    line_open = 1;
    check(last.vector == vector, "wrong vector");
    check(last.ip == (uptr)ip, "wrong saved instruction pointer");
    check(exc_bad == 0, "wrong error code or CR2");
    printf(", %s\n", note);
    line_open = 0;
}

static void test_exceptions(void)
{
    one_exception(probe_de, 0, fault_de, "resumed after the div");
    one_exception(probe_gp, 13, fault_gp, "resumed after the mov to ds");
    one_exception(probe_pf, 14, fault_pf, "resumed after the store");
    one_exception(probe_ud, 6, fault_ud, "resumed after the ud2");
    one_exception(probe_bp, 3, fault_bp + 1, "a trap: saved ip is after the int3");
    u32 before = events;
    u32 r = probe_int80();
    check(events == before + 1 && last.vector == VEC_SYSCALL && last.ip == (uptr)sw_int80 + 2,
          "int 0x80 not delivered as expected");
    check(r == 3 * 0x1234 + 1, "int 0x80 returned the wrong value");
    printf("int: int 0x80 at ");
    where(last.ip, last.vector);
    printf(" from CPL %u: call %u(0x1234) returned 0x%x\n", (u32)(last.cs & 3), SYS_TRIPLE, r);
}

/* An interrupt gate clears IF, a trap gate keeps it; both save the caller's IF. */
static void test_gates(void)
{
    sti();
    probe_int80();
    cli();
    struct event trap = last;
    sti();
    probe_ist();
    cli();
    struct event intr = last;
    printf("gates: int 0x80 (trap gate): IF=%u inside, saved IF=%u; int 0x83 (interrupt gate): IF=%u inside, "
           "saved IF=%u\n", trap.if_inside, (u32)(trap.saved_flags >> 9) & 1, intr.if_inside,
           (u32)(intr.saved_flags >> 9) & 1);
    check(trap.if_inside && !intr.if_inside, "IF inside a gate is wrong");
    check((trap.saved_flags & intr.saved_flags & EFLAGS_IF) != 0, "saved IF is wrong");
#ifdef __x86_64__
    check(intr.frame_top == IST1_TOP, "int 0x83 did not run on the IST1 stack");
    check(intr.ss == SEL_KDATA, "saved SS of a same-privilege interrupt is wrong");
    printf("ist: int 0x83 from CPL 0 ran on the IST1 stack (frame pushed from TSS.IST1), saved ss=0x%x\n",
           (u32)intr.ss);
#endif
}

#define STRESS_FAULTS 500
#define STRESS_TRAPS 500

/* 500 faults in a row (#DE, #GP, #PF, #UD in turn) then 500 int3: each one resumed by the handler. */
static void test_stress(void)
{
    static void (*const mixed[4])(void) = { probe_de, probe_gp, probe_pf, probe_ud };
    memset(exc_count, 0, sizeof(exc_count));
    u32 before = events;
    for (u32 i = 0; i < STRESS_FAULTS; i++)
        mixed[i & 3]();
    for (u32 i = 0; i < STRESS_TRAPS; i++)
        probe_bp();
    u32 n = events - before;
    check(n == STRESS_FAULTS + STRESS_TRAPS, "stress: exception count is wrong");
    check(exc_count[0] == STRESS_FAULTS / 4 && exc_count[13] == STRESS_FAULTS / 4 &&
          exc_count[14] == STRESS_FAULTS / 4 && exc_count[6] == STRESS_FAULTS / 4 &&
          exc_count[3] == STRESS_TRAPS, "stress: per-vector counts are wrong");
    check(exc_bad == 0, "stress: an error code or CR2 was wrong");
    printf("stress: %u exceptions taken and resumed: %u #DE, %u #GP, %u #PF, %u #UD, then %u #BP\n", n,
           exc_count[0], exc_count[13], exc_count[14], exc_count[6], exc_count[3]);
}

#define POLL_LIMIT 2000000

/* Waits until *count reaches target. First polls for the first tick (bounded; each round is an I/O or MMIO
   access, so event-driven clocks advance), then sleeps with sti;hlt, one wake-up per tick. */
static void wait_ticks(volatile u32 *count, u32 target, void (*poke)(void), const char *what)
{
    u32 n;
    sti();
    for (n = 0; *count == 0; n++) {
        if (n == POLL_LIMIT) {
            cli();
            printf("FAIL: %s: no interrupt came\n", what);
            qemu_exit(EXIT_FAIL);
        }
        poke();
    }
    cli();
    for (n = 0; *count < target; n++) {
        if (n == 2 * target + 16) {
            printf("FAIL: %s: too many wake-ups without a tick\n", what);
            qemu_exit(EXIT_FAIL);
        }
        __asm__ volatile("sti; hlt; cli" ::: "memory");
    }
}

#define PIT_TICKS 500
#define LAPIC_TICKS 500

static void test_pit(void)
{
    pit_ticks = 0;
    pit_target = PIT_TICKS;
    pit_start();
    printf("pit: channel 0, mode 2, divisor %u (1000 Hz), IRQ0 -> vector 0x%02x\n", PIT_DIVISOR, VEC_PIC_BASE);
    pic_mask(0xfe, 0xff);              /* IRQ0 only; the handler masks it again at the target */
    wait_ticks(&pit_ticks, PIT_TICKS, pit_poke, "PIT");
    pic_mask(0xff, 0xff);
    check(pit_ticks == PIT_TICKS, "PIT tick count is wrong");
    check(timer_if_set == 0, "IF was set inside a timer handler");
    check(stray_irqs == 0, "an unexpected PIC interrupt arrived");
    printf("timer: %u PIT ticks via sti;hlt, each with EOI; IF=0 in every handler (interrupt gate)\n", pit_ticks);
}

static void test_lapic(void)
{
    lapic_ticks = 0;
    lapic_target = LAPIC_TICKS;
    lapic_write(LAPIC_TPR, 0);
    lapic_write(LAPIC_SVR, 0x100 | VEC_SPURIOUS);    /* software enable */
    lapic_write(LAPIC_LVT_LINT0, 0x700);              /* ExtINT: the 8259 keeps reaching the CPU */
    lapic_write(LAPIC_TIMER_DCR, 0x3);                /* divide by 16 */
    lapic_write(LAPIC_LVT_TIMER, LVT_PERIODIC | VEC_LAPIC_TIMER);
    check(lapic_read(LAPIC_SVR) == (0x100 | VEC_SPURIOUS), "LAPIC SVR does not read back");
    check(lapic_read(LAPIC_TIMER_DCR) == 0x3, "LAPIC divide register does not read back");
    check(lapic_read(LAPIC_LVT_TIMER) == (LVT_PERIODIC | VEC_LAPIC_TIMER), "LAPIC LVT timer does not read back");
    lapic_write(LAPIC_TIMER_ICR, LAPIC_COUNT);
    printf("lapic: SVR=0x%03x, LVT timer 0x%05x (periodic, vector 0x%02x), divide 16, initial count %u, "
           "PIC masked\n", lapic_read(LAPIC_SVR), LVT_PERIODIC | VEC_LAPIC_TIMER, VEC_LAPIC_TIMER, LAPIC_COUNT);
    wait_ticks(&lapic_ticks, LAPIC_TICKS, lapic_poke, "LAPIC timer");
    check(lapic_ticks == LAPIC_TICKS, "LAPIC tick count is wrong");
    check(lapic_read(LAPIC_LVT_TIMER) == (LVT_MASKED | VEC_LAPIC_TIMER) && lapic_read(LAPIC_TIMER_ICR) == 0,
          "LAPIC timer did not stop");
    check(timer_if_set == 0, "IF was set inside a timer handler");
    printf("timer: %u LAPIC timer ticks via sti;hlt, each with EOI; IF=0 in every handler\n", lapic_ticks);
}

/* What each ring-3 event must look like, in order. */
struct expect {
    u32 vector;
    const char *ip;
    int if_inside;
    const char *note;
};

static void test_ring3(void)
{
    const struct expect want[] = {
        { 3, user_bp + 1, 0, "int3 through a DPL 3 gate" },
        { 13, user_cli, 0, "cli at CPL 3 with IOPL 0" },
        { 13, user_hlt, 0, "hlt at CPL 3" },
        { 13, user_int83, 0, "int 0x83 at CPL 3 through a DPL 0 gate" },
        { 13, user_in, 0, "in from port 0x61, not in the I/O bitmap" },
        { VEC_SYSCALL, user_sys + 2, 1, "syscall through a DPL 3 trap gate" },
        { VEC_EXIT, user_exit + 2, 0, "exit through a DPL 3 interrupt gate" },
    };
    const u32 nwant = sizeof(want) / sizeof(want[0]);

    user_phase_ticks = 0;
    user_phase = 1;
    pit_start();
    pic_mask(0xfe, 0xff);
    nlog = 0;
    printf("ring3: iret to cs=0x%x ss=0x%x with IF=1 IOPL=0, TSS.%s = top of a dedicated ring-0 stack\n",
           SEL_UCODE, SEL_UDATA, SP0);
    uptr status = enter_user(user_entry, user_stack + sizeof(user_stack));
    pic_mask(0xff, 0xff);
    user_phase = 0;

    check(nlog == nwant, "ring3: wrong number of events");
    for (u32 i = 0; i < nwant; i++) {
        const struct event *e = &ev_log[i];
        check(e->vector == want[i].vector && e->ip == (uptr)want[i].ip, "ring3: unexpected event");
        check(e->cs == SEL_UCODE && e->ss == SEL_UDATA, "ring3: saved CS/SS are not the user selectors");
        check(e->frame_top == RING0_TOP, "ring3: the handler did not run on the TSS stack");
        check(e->if_inside == want[i].if_inside, "ring3: wrong IF inside the handler");
        print_event("ring3", e);
        printf(": %s; cs=0x%x ss=0x%x (RPL 3), frame on TSS.%s stack, IF=%u inside\n", want[i].note,
               (u32)e->cs, (u32)e->ss, SP0, e->if_inside);
    }
    check(exc_bad == 0, "ring3: a #GP error code was wrong");
    check(status != 1, "ring3: the syscall returned the wrong value");
    check(status != 2, "ring3: no timer interrupts came while in ring 3");
    check(status == 0, "ring3: bad exit status");
    check(user_tick_bad == 0, "ring3: a timer interrupt from CPL 3 had the wrong frame or stack");
    check(timer_if_set == 0, "IF was set inside a timer handler");
    printf("ring3: %u PIT ticks taken at CPL 3 (spinning on out 0x80), each on the TSS.%s stack\n",
           user_phase_ticks, SP0);
    printf("ring3: back in ring 0 via int 0x81, exit status %u\n", (u32)status);
}

int kmain(u32 boot_magic, uptr boot_info)
{
    serial_init();
    printf("irq%u: interrupts, exceptions and privilege transitions in %u-bit mode\n", BITS, BITS);
    setup_tables();
    pic_init();
    setup_paging();
    test_exceptions();
    test_gates();
    test_stress();
    test_pit();
    test_lapic();
    test_ring3();
    u32 timers = pit_ticks + lapic_ticks + user_phase_ticks;
    check(timers >= 1000, "fewer than 1000 timer interrupts");
    check(stray_irqs == 0, "an unexpected PIC interrupt arrived");
    printf("total: %u timer interrupts (%u PIT + %u LAPIC + %u PIT in ring 3), %u exceptions and software "
           "interrupts\n", timers, pit_ticks, lapic_ticks, user_phase_ticks, events);
    puts("PASS\n");
    return EXIT_PASS;
}
