/* Interrupt/exception entry stubs for the sensitive zoo (vectors 0-63), 32- and 64-bit; all call zoo_trap(frame). */
        .text
#define HAS_ERR(n) ((n) == 8 || ((n) >= 10 && (n) <= 14) || (n) == 17 || (n) == 21 || (n) == 29 || (n) == 30)

        .macro stub n
        .p2align 4
vec_\n:
        .if !(HAS_ERR(\n))
        push    $0                      /* dummy error code */
        .endif
        push    $\n
        jmp     common
        .endm

        .altmacro
        .macro stubs from, to
        stub    \from
        .if \to-\from
        stubs   %(\from+1), \to
        .endif
        .endm

        .macro stubaddr n
#ifdef __x86_64__
        .quad   vec_\n
#else
        .long   vec_\n
#endif
        .endm
        .macro stubaddrs from, to
        stubaddr \from
        .if \to-\from
        stubaddrs %(\from+1), \to
        .endif
        .endm

        stubs   0, 31
        stubs   32, 63

#ifdef __x86_64__
common:
        push    %rax
        push    %rcx
        push    %rdx
        push    %rbx
        push    %rbp
        push    %rsi
        push    %rdi
        push    %r8
        push    %r9
        push    %r10
        push    %r11
        push    %r12
        push    %r13
        push    %r14
        push    %r15
        mov     %rsp, %rdi
        cld
        call    zoo_trap
        pop     %r15
        pop     %r14
        pop     %r13
        pop     %r12
        pop     %r11
        pop     %r10
        pop     %r9
        pop     %r8
        pop     %rdi
        pop     %rsi
        pop     %rbp
        pop     %rbx
        pop     %rdx
        pop     %rcx
        pop     %rax
        add     $16, %rsp               /* vector, error code */
        iretq
#else
common:
        pusha
        push    %ds
        push    %es
        mov     $0x10, %eax             /* flat data, whatever the probe left in ds/es */
        mov     %eax, %ds
        mov     %eax, %es
        push    %esp
        cld
        call    zoo_trap
        add     $4, %esp
        pop     %es
        pop     %ds
        popa
        add     $8, %esp                /* vector, error code */
        iret
#endif

        .section .rodata
        .p2align 3
        .globl  zoo_stubs
zoo_stubs:
        stubaddrs 0, 31
        stubaddrs 32, 63
