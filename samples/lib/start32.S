/* 32-bit entry for i386 kernels: own flat GDT, stack, then kmain(boot_magic, boot_info). */
        .code32
        .section .text.start, "ax"
        .globl _start32
_start32:
        cli
        movl    $stack_top, %esp
        movl    %eax, %esi              /* boot magic (multiboot: 0x2BADB002; PVH: 0x336ec578 in ebx's struct) */
        movl    %ebx, %edi              /* boot info pointer */
        lgdt    gdt32_desc
        ljmp    $0x08, $1f
1:      movw    $0x10, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movw    %ax, %fs
        movw    %ax, %gs
        pushl   %edi
        pushl   %esi
        call    kmain
        pushl   %eax
        call    qemu_exit
2:      hlt
        jmp     2b

        .section .rodata
        .p2align 3
gdt32:
        .quad 0
        .quad 0x00cf9a000000ffff        /* 0x08: code, flat, 32-bit */
        .quad 0x00cf92000000ffff        /* 0x10: data, flat */
gdt32_desc:
        .word gdt32_desc - gdt32 - 1
        .long gdt32

        .section .bss
        .p2align 12
        .globl stack_bottom
stack_bottom:
        .skip 16384
        .globl stack_top
stack_top:
