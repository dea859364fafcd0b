/* #DF entry: report the error code and the saved frame, then end the run from C (no return). */
        .text
        .globl df_entry
df_entry:
#ifdef __x86_64__
        movq    (%rsp), %rdi            /* error code */
        movq    8(%rsp), %rsi           /* saved rip */
        call    double_fault
#else
        pushl   4(%esp)                 /* saved eip */
        pushl   4(%esp)                 /* error code */
        call    double_fault
#endif
1:      hlt
        jmp     1b
