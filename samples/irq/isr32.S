/* 32-bit interrupt entry stubs, the common save/restore path, segment reload and the iret into ring 3. */
#include "irq.h"

        .code32
        .text

/* One 16-byte stub per vector: push a dummy error code where the CPU pushes none, push the vector. */
        .p2align 4
        .globl isr_stubs
isr_stubs:
        vec = 0
        .rept 256
        .if (vec == 8) || (vec >= 10 && vec <= 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
        .else
        pushl   $0
        .endif
        pushl   $vec
        jmp     isr_common
        .org    isr_stubs + 16 * (vec + 1), 0xcc   /* fails to assemble if a stub outgrew 16 bytes */
        vec = vec + 1
        .endr

/* Save registers and data selectors (struct frame), load kernel data selectors, call isr_dispatch(frame). */
isr_common:
        pushal
        pushl   %ds
        pushl   %es
        pushl   %fs
        pushl   %gs
        movw    $SEL_KDATA, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %fs
        movw    %ax, %gs
        movl    %esp, %eax
        pushl   %eax
        cld
        call    isr_dispatch
        addl    $4, %esp
        popl    %gs
        popl    %fs
        popl    %es
        popl    %ds
        popal
        addl    $8, %esp
        iretl

/* After lgdt: reload CS with a far jump, and the data selectors. */
        .globl reload_segments
reload_segments:
        ljmp    $SEL_KCODE, $1f
1:      movw    $SEL_KDATA, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movw    %ax, %fs
        movw    %ax, %gs
        ret

/* uptr enter_user(entry, user_sp): keep callee-saved registers and ESP, iret to ring 3 with IF = 1. */
        .globl enter_user
enter_user:
        pushl   %ebp
        pushl   %ebx
        pushl   %esi
        pushl   %edi
        movl    %esp, kernel_sp_saved
        movl    20(%esp), %eax          /* entry */
        movl    24(%esp), %edx          /* user_sp */
        movw    $SEL_UDATA, %cx         /* ring 3 needs DPL 3 data selectors */
        movw    %cx, %ds
        movw    %cx, %es
        movw    %cx, %fs
        movw    %cx, %gs
        pushl   $SEL_UDATA              /* SS */
        pushl   %edx                    /* ESP */
        pushl   $0x202                  /* EFLAGS: IF, IOPL 0 */
        pushl   $SEL_UCODE              /* CS */
        pushl   %eax                    /* EIP */
        iretl

/* The VEC_EXIT handler irets here at CPL 0 (no stack switch back: reload ESP) with eax = status. */
        .globl ring3_return
ring3_return:
        movl    kernel_sp_saved, %esp
        popl    %edi
        popl    %esi
        popl    %ebx
        popl    %ebp
        ret

        .data
        .p2align 2
        .globl kernel_sp_saved
kernel_sp_saved:
        .long 0
