/* 64-bit interrupt entry stubs, the common save/restore path, segment reload and the iret into ring 3. */
#include "irq.h"

        .code64
        .text

/* One 16-byte stub per vector: push a dummy error code where the CPU pushes none, push the vector. */
        .p2align 4
        .globl isr_stubs
isr_stubs:
        vec = 0
        .rept 256
        .if (vec == 8) || (vec >= 10 && vec <= 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
        .else
        pushq   $0
        .endif
        pushq   $vec
        jmp     isr_common
        .org    isr_stubs + 16 * (vec + 1), 0xcc   /* fails to assemble if a stub outgrew 16 bytes */
        vec = vec + 1
        .endr

/* Save all general registers (struct frame), call isr_dispatch(frame), restore, drop vector and error code. */
isr_common:
        pushq   %rax
        pushq   %rbx
        pushq   %rcx
        pushq   %rdx
        pushq   %rsi
        pushq   %rdi
        pushq   %rbp
        pushq   %r8
        pushq   %r9
        pushq   %r10
        pushq   %r11
        pushq   %r12
        pushq   %r13
        pushq   %r14
        pushq   %r15
        movq    %rsp, %rdi              /* the CPU aligned the frame to 16 bytes; 22 qwords keep it so */
        cld
        call    isr_dispatch
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %r11
        popq    %r10
        popq    %r9
        popq    %r8
        popq    %rbp
        popq    %rdi
        popq    %rsi
        popq    %rdx
        popq    %rcx
        popq    %rbx
        popq    %rax
        addq    $16, %rsp
        iretq

/* After lgdt: reload CS with a far return, and the data selectors. */
        .globl reload_segments
reload_segments:
        pushq   $SEL_KCODE
        leaq    1f(%rip), %rax
        pushq   %rax
        lretq
1:      movw    $SEL_KDATA, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movw    %ax, %fs
        movw    %ax, %gs
        ret

/* uptr enter_user(entry, user_sp): keep callee-saved registers and RSP, iretq to ring 3 with IF = 1. */
        .globl enter_user
enter_user:
        pushq   %rbx
        pushq   %rbp
        pushq   %r12
        pushq   %r13
        pushq   %r14
        pushq   %r15
        movq    %rsp, kernel_sp_saved
        pushq   $SEL_UDATA              /* SS */
        pushq   %rsi                    /* RSP */
        pushq   $0x202                  /* RFLAGS: IF, IOPL 0 */
        pushq   $SEL_UCODE              /* CS */
        pushq   %rdi                    /* RIP */
        iretq

/* The VEC_EXIT handler irets here at CPL 0 with rax = status. */
        .globl ring3_return
ring3_return:
        movq    kernel_sp_saved, %rsp
        movw    $SEL_KDATA, %cx         /* iretq to CPL 3 nulled the data selectors */
        movw    %cx, %ds
        movw    %cx, %es
        movw    %cx, %fs
        movw    %cx, %gs
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %rbp
        popq    %rbx
        ret

        .data
        .p2align 3
        .globl kernel_sp_saved
kernel_sp_saved:
        .quad 0
