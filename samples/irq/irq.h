/* Shared declarations of the interrupt sample: selectors, vectors, the ISR register frame, asm entry points. */
#ifndef IRQ_H
#define IRQ_H

/* GDT layout (own table): null, kernel code/data, user code/data (DPL 3), TSS (64-bit: two slots). */
#define SEL_KCODE 0x08
#define SEL_KDATA 0x10
#define SEL_UCODE 0x1b
#define SEL_UDATA 0x23
#define SEL_TSS 0x28

/* Vectors. 0x82 is left alone on purpose: it is the PV hypercall vector of the translator's ABI. */
#define VEC_PIC_BASE 0x20        /* 8259 master 0x20-0x27, slave 0x28-0x2f */
#define VEC_LAPIC_TIMER 0x40
#define VEC_SYSCALL 0x80         /* DPL 3 trap gate: eax = call number, ecx = argument, result in eax */
#define VEC_EXIT 0x81            /* DPL 3 interrupt gate: ends the ring-3 phase, ebx = status */
#define VEC_IST 0x83             /* DPL 0 interrupt gate; on IST1 in 64-bit mode */
#define VEC_SPURIOUS 0xff        /* LAPIC spurious-interrupt vector */

#define SYS_TRIPLE 1             /* syscall: returns 3 * ecx + 1 */
#define USER_TICKS 10            /* timer interrupts the ring-3 code waits to take at CPL 3 */
#define USER_SPIN_LIMIT 20000000 /* bound on the ring-3 wait loop */
#define UNMAPPED_ADDR 0x40000000 /* not mapped in either build: the #PF probe writes here */

#ifndef __ASSEMBLER__
#include "kernel.h"

/* What the ISR stubs leave on the stack, lowest address first; isr_dispatch gets a pointer to it. */
struct frame {
#ifdef __x86_64__
    u64 r15, r14, r13, r12, r11, r10, r9, r8, bp, di, si, dx, cx, bx, ax;
#else
    u32 gs, fs, es, ds;                     /* upper 16 bits of these slots are undefined */
    u32 di, si, bp, sp_pusha, bx, dx, cx, ax;
#endif
    uptr vector, error, ip, cs, flags;
    uptr sp, ss; /* pushed by the CPU always in 64-bit mode; in 32-bit mode only on a privilege change */
};

void isr_dispatch(struct frame *f);
extern char isr_stubs[];                     /* 256 stubs, 16 bytes apart */
void reload_segments(void);                  /* far jump to SEL_KCODE, data selectors SEL_KDATA */
uptr enter_user(void (*entry)(void), void *user_sp);   /* iret to ring 3; returns the exit status */
extern char ring3_return[];                  /* where the VEC_EXIT handler resumes ring 0 */
extern uptr kernel_sp_saved;

/* Probes (probes.S): each provokes one event at a labelled instruction. */
void probe_de(void), probe_gp(void), probe_pf(void), probe_ud(void), probe_bp(void);
u32 probe_int80(void);
void probe_ist(void);
void user_entry(void);
extern char fault_de[], resume_de[], fault_gp[], resume_gp[], fault_pf[], resume_pf[];
extern char fault_ud[], resume_ud[], fault_bp[], sw_int80[], sw_int83[];
extern char user_bp[], user_cli[], user_cli_end[], user_hlt[], user_hlt_end[], user_int83[], user_int83_end[];
extern char user_in[], user_in_end[], user_sys[], user_exit[];
#endif

#endif
