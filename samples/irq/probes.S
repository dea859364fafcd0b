/* Labelled instructions that raise exceptions on purpose, and the ring-3 code; assembles as 32- or 64-bit. */
#include "irq.h"

/* A global label the C side names in its site table. */
.macro SITE name
        .globl \name
\name:
.endm

/* Ring-0 probes: clobber only eax/ecx/edx (caller-saved in both ABIs). */
        .text
        .globl probe_de
probe_de:
        movl    $1, %eax
        xorl    %edx, %edx
        xorl    %ecx, %ecx
SITE fault_de
        divl    %ecx                    /* #DE */
SITE resume_de
        ret

        .globl probe_gp
probe_gp:
        movl    $SEL_TSS, %eax
SITE fault_gp
        movw    %ax, %ds                /* a TSS selector in DS: #GP(0x28) */
SITE resume_gp
        ret

        .globl probe_pf
probe_pf:
SITE fault_pf
        movl    $1, UNMAPPED_ADDR       /* write to a not-present page: #PF(W), CR2 = UNMAPPED_ADDR */
SITE resume_pf
        ret

        .globl probe_ud
probe_ud:
SITE fault_ud
        ud2                             /* #UD */
SITE resume_ud
        ret

        .globl probe_bp
probe_bp:
SITE fault_bp
        int3                            /* #BP: a trap, reported after the int3 */
        ret

        .globl probe_int80
probe_int80:
        movl    $SYS_TRIPLE, %eax
        movl    $0x1234, %ecx
SITE sw_int80
        int     $VEC_SYSCALL
        ret

        .globl probe_ist
probe_ist:
SITE sw_int83
        int     $VEC_IST
        ret

/* Ring-3 code: runs at CPL 3 with IOPL 0, IF = 1, on its own stack; ends with int VEC_EXIT, ebx = status. */
        .section .text.user, "ax"
        .globl user_entry
user_entry:
SITE user_bp
        int3                            /* DPL 3 gate: allowed */
SITE user_cli
        cli                             /* IOPL 0: #GP(0) */
SITE user_cli_end
SITE user_hlt
        hlt                             /* privileged: #GP(0) */
SITE user_hlt_end
SITE user_int83
        int     $VEC_IST                /* DPL 0 gate: #GP(vector * 8 + 2) */
SITE user_int83_end
SITE user_in
        inb     $0x61, %al              /* port 0x61 not in the TSS I/O bitmap: #GP(0) */
SITE user_in_end
        movl    $SYS_TRIPLE, %eax
        movl    $0x77, %ecx
SITE user_sys
        int     $VEC_SYSCALL            /* DPL 3 trap gate */
        movl    $1, %ebx                /* status 1: wrong syscall result */
        cmpl    $(3 * 0x77 + 1), %eax
        jne     user_done
        /* Take USER_TICKS timer interrupts at CPL 3. Each round writes port 0x80 (allowed by the I/O bitmap),
           an I/O event, so clocks that advance on guest events move too. */
        movl    $USER_SPIN_LIMIT, %ecx
1:      outb    %al, $0x80
        cmpl    $USER_TICKS, user_phase_ticks
        jae     2f
        decl    %ecx
        jnz     1b
        movl    $2, %ebx                /* status 2: the ticks did not come */
        jmp     user_done
2:      xorl    %ebx, %ebx
user_done:
SITE user_exit
        int     $VEC_EXIT               /* back to ring 0 for good */
        ud2
