/* exit_loop(n): n writes of al to the COM1 scratch register; tools/bench_exit.py runs these same bytes bare. */
        .code32
        .text
        .globl exit_loop, exit_loop_body, exit_loop_body_end
exit_loop:
        movl    4(%esp), %ecx
        movw    $0x3ff, %dx
        movb    $0x5a, %al
exit_loop_body:
        outb    %al, %dx
        decl    %ecx
        jnz     exit_loop_body
exit_loop_body_end:
        ret
