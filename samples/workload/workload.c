/* CPU-bound workload with critical sections and port I/O at a build-time density, self-checked by matrix jump-ahead. */
#include "kernel.h"

/*
 * Build-time knobs (sample.toml `defines`):
 *   WORK         LCG iterations between two sync points (the density knob)
 *   BLOCKS       number of sync points (total iterations = WORK * BLOCKS)
 *   DO_CLI       1: each sync point runs a cli..sti and a pushf;cli..popf critical section
 *   DO_PIO       1: each sync point does outb 0x80 and inb 0x21 (PIC mask register)
 *   DO_STRINGIO  1: each sync point does rep outsb of STRING_LEN bytes to port 0x80 and
 *                rep insb of STRING_LEN bytes from an unassigned port
 *
 * The checksum is verified by an independent computation in this kernel: the work loop and the
 * sync points are affine maps on the state vector (x, s, t, u, 1) over Z/2^64, so the final state
 * equals (S * P^WORK)^BLOCKS applied to the seed, computed by square-and-multiply of 5x5 matrices.
 * No host-side constant is involved, so any WORK/BLOCKS combination checks itself.
 */
#ifndef WORK
#define WORK 25000
#endif
#ifndef BLOCKS
#define BLOCKS 1000
#endif
#ifndef DO_CLI
#define DO_CLI 1
#endif
#ifndef DO_PIO
#define DO_PIO 1
#endif
#ifndef DO_STRINGIO
#define DO_STRINGIO 0
#endif

#define STRING_LEN 512
#define POST_PORT 0x80          /* POST diagnostic port: writes are ignored */
#define PIC1_DATA 0x21          /* master PIC interrupt mask register */
#define PIC2_DATA 0xa1
#define UNASSIGNED_PORT 0x2f0   /* nothing decodes it on QEMU's pc machine: reads all-ones */
#define EFLAGS_IF 0x200u

/* Knuth's MMIX LCG constants */
#define LCG_A 6364136223846793005ull
#define LCG_C 1442695040888963407ull
#define SEED 0x0123456789abcdefull

/* Updated only inside the critical sections, so they live in memory like real shared state. */
static u64 shared_t, shared_u;
#if DO_STRINGIO
static u8 out_buf[STRING_LEN], in_buf[STRING_LEN];
#endif

static inline u64 save_flags_cli(void)
{
    u64 flags;
    __asm__ volatile("pushfq; popq %0; cli" : "=r"(flags) : : "memory");
    return flags;
}

static inline void restore_flags(u64 flags)
{
    __asm__ volatile("pushq %0; popfq" : : "r"(flags) : "memory", "cc");
}

static inline u64 read_flags(void)
{
    u64 flags;
    __asm__ volatile("pushfq; popq %0" : "=r"(flags) : : "memory");
    return flags;
}

typedef u64 mat[5][5];

static void mat_mul(mat r, mat a, mat b)
{
    mat t;
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 5; j++) {
            u64 v = 0;
            for (int k = 0; k < 5; k++)
                v += a[i][k] * b[k][j];
            t[i][j] = v;
        }
    memcpy(r, t, sizeof(mat));
}

static void mat_pow(mat r, mat m, u64 n)
{
    mat base;
    memcpy(base, m, sizeof(mat));
    memset(r, 0, sizeof(mat));
    for (int i = 0; i < 5; i++)
        r[i][i] = 1;
    for (; n; n >>= 1) {
        if (n & 1)
            mat_mul(r, r, base);
        mat_mul(base, base, base);
    }
}

/* Expected final (x, s, t, u) from the seed, without running the loop. */
static void expected_state(u64 out[4])
{
    /* one iteration: x' = A x + C; s' = s + A x + C  (t, u unchanged) */
    mat p = {
        { LCG_A, 0, 0, 0, LCG_C },
        { LCG_A, 1, 0, 0, LCG_C },
        { 0, 0, 1, 0, 0 },
        { 0, 0, 0, 1, 0 },
        { 0, 0, 0, 0, 1 },
    };
    /* one sync point: t' = t + s; u' = u + t' */
    mat s = {
        { 1, 0, 0, 0, 0 },
        { 0, 1, 0, 0, 0 },
        { 0, 1, 1, 0, 0 },
        { 0, 1, 1, 1, 0 },
        { 0, 0, 0, 0, 1 },
    };
    mat pw, blk, all;
    mat_pow(pw, p, WORK);
    mat_mul(blk, s, pw);
    mat_pow(all, blk, BLOCKS);
    u64 v0[5] = { SEED, 0, 0, 0, 1 };
    for (int i = 0; i < 4; i++) {
        u64 v = 0;
        for (int k = 0; k < 5; k++)
            v += all[i][k] * v0[k];
        out[i] = v;
    }
}

int kmain(u32 boot_magic, uptr boot_info)
{
    serial_init();
    printf("workload: WORK=%u BLOCKS=%u cli=%u pio=%u stringio=%u\n",
           (u32)WORK, (u32)BLOCKS, (u32)DO_CLI, (u32)DO_PIO, (u32)DO_STRINGIO);

    /* Mask every PIC line, then run with IF=1: sti is then harmless without an IDT. */
    outb(PIC1_DATA, 0xff);
    outb(PIC2_DATA, 0xff);
    __asm__ volatile("cli" ::: "memory");
    u32 if_after_cli = (read_flags() & EFLAGS_IF) != 0;
    __asm__ volatile("sti" ::: "memory");
    u32 if_after_sti = (read_flags() & EFLAGS_IF) != 0;
    printf("IF after cli %u, after sti %u\n", if_after_cli, if_after_sti);
    if (if_after_cli != 0 || if_after_sti != 1) {
        puts("FAIL: IF does not follow cli/sti\n");
        return EXIT_FAIL;
    }

    u64 x = SEED, s = 0;
    u64 n_iter = 0, n_crit = 0, n_pio = 0, n_strings = 0, n_if_errors = 0;
    u64 pic_mask_sum = 0, string_in_sum = 0;
#if DO_STRINGIO
    for (int i = 0; i < STRING_LEN; i++)
        out_buf[i] = (u8)(i * 7 + 3);
#endif

    for (u32 blk = 0; blk < BLOCKS; blk++) {
        for (u32 i = 0; i < WORK; i++) {
            x = x * LCG_A + LCG_C;
            s += x;
        }
        n_iter += WORK;
#if DO_CLI
        __asm__ volatile("cli" ::: "memory");
        shared_t += s;
        __asm__ volatile("sti" ::: "memory");
        u64 flags = save_flags_cli();
        shared_u += shared_t;
        restore_flags(flags);
        n_if_errors += !(flags & EFLAGS_IF);
        n_crit += 2;
#else
        shared_t += s;
        shared_u += shared_t;
#endif
#if DO_PIO
        outb(POST_PORT, (u8)x);
        pic_mask_sum += inb(PIC1_DATA);
        n_pio += 2;
#endif
#if DO_STRINGIO
        memcpy(out_buf, &x, sizeof(x));         /* vary the outgoing data */
        memset(in_buf, 0, STRING_LEN);
        const u8 *src = out_buf;
        u8 *dst = in_buf;
        uptr cnt = STRING_LEN;
        __asm__ volatile("rep outsb" : "+S"(src), "+c"(cnt) : "d"((u16)POST_PORT) : "memory");
        cnt = STRING_LEN;
        __asm__ volatile("rep insb" : "+D"(dst), "+c"(cnt) : "d"((u16)UNASSIGNED_PORT) : "memory");
        for (int i = 0; i < STRING_LEN; i++)
            string_in_sum += in_buf[i];
        n_strings += 2;
#endif
    }

    u64 exp[4];
    expected_state(exp);
    printf("iterations: %llu\n", n_iter);
    printf("critical sections: %llu (cli/sti %llu, pushf/cli/popf %llu)\n", n_crit, n_crit / 2, n_crit / 2);
    printf("port I/O: %llu (outb 0x80 %llu, inb 0x21 %llu)\n", n_pio, n_pio / 2, n_pio / 2);
    printf("string I/O: %llu (rep outsb 0x80 %llu, rep insb 0x%x %llu, %u bytes each)\n",
           n_strings, n_strings / 2, (u32)UNASSIGNED_PORT, n_strings / 2, (u32)STRING_LEN);
    printf("checksum: x=%016llx s=%016llx t=%016llx u=%016llx\n", x, s, shared_t, shared_u);
    printf("expected: x=%016llx s=%016llx t=%016llx u=%016llx (matrix jump-ahead)\n",
           exp[0], exp[1], exp[2], exp[3]);

    const char *fail = 0;
    if (n_iter != (u64)WORK * BLOCKS)
        fail = "iteration count";
    else if (n_crit != (DO_CLI ? 2ull * BLOCKS : 0))
        fail = "critical section count";
    else if (n_pio != (DO_PIO ? 2ull * BLOCKS : 0))
        fail = "port I/O count";
    else if (n_strings != (DO_STRINGIO ? 2ull * BLOCKS : 0))
        fail = "string I/O count";
    else if (n_if_errors)
        fail = "pushf saw IF=0 outside a critical section";
    else if (pic_mask_sum != (DO_PIO ? 0xffull * BLOCKS : 0))
        fail = "inb 0x21 did not read back the mask 0xff";
    else if (string_in_sum != (DO_STRINGIO ? 0xffull * STRING_LEN * BLOCKS : 0))
        fail = "rep insb from the unassigned port did not read all-ones";
    else if (x != exp[0] || s != exp[1] || shared_t != exp[2] || shared_u != exp[3])
        fail = "checksum mismatch";
    if (fail) {
        printf("FAIL: %s\n", fail);
        return EXIT_FAIL;
    }
    puts("PASS\n");
    return EXIT_PASS;
}
