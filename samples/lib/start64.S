/* 32-bit entry that builds identity page tables (1 GiB, 2 MiB pages), enters long mode, calls kmain(boot_magic, boot_info). */
        .code32
        .section .text.start, "ax"
        .globl _start32
_start32:
        cli
        movl    $stack_top, %esp
        movl    %eax, %esi
        movl    %ebx, %edi
        /* PML4[0] -> PDPT, PDPT[0] -> PD, PD[i] = i * 2 MiB | PS|RW|P */
        movl    $pdpt, %eax
        orl     $0x3, %eax
        movl    %eax, pml4
        movl    $pd, %eax
        orl     $0x3, %eax
        movl    %eax, pdpt
        xorl    %ecx, %ecx
1:      movl    %ecx, %eax
        shll    $21, %eax
        orl     $0x83, %eax
        movl    %eax, pd(,%ecx,8)
        incl    %ecx
        cmpl    $512, %ecx
        jne     1b
        movl    %cr4, %eax
        orl     $0x20, %eax             /* PAE */
        movl    %eax, %cr4
        movl    $pml4, %eax
        movl    %eax, %cr3
        movl    $0xC0000080, %ecx       /* EFER.LME */
        rdmsr
        orl     $0x100, %eax
        wrmsr
        movl    %cr0, %eax
        orl     $0x80000001, %eax       /* PG | PE */
        movl    %eax, %cr0
        lgdt    gdt64_desc
        ljmp    $0x08, $long_mode

        .code64
long_mode:
        movw    $0x10, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movw    %ax, %fs
        movw    %ax, %gs
        movl    $stack_top, %esp
        /* edi = boot info, esi = magic: kmain(magic, info) */
        xchgl   %esi, %edi
        call    kmain
        movl    %eax, %edi
        call    qemu_exit
2:      hlt
        jmp     2b

        .section .rodata
        .p2align 3
gdt64:
        .quad 0
        .quad 0x00af9a000000ffff        /* 0x08: code, 64-bit */
        .quad 0x00cf92000000ffff        /* 0x10: data */
gdt64_desc:
        .word gdt64_desc - gdt64 - 1
        .long gdt64

        .section .bss
        .p2align 12
pml4:   .skip 4096
pdpt:   .skip 4096
pd:     .skip 4096
        .globl stack_bottom
stack_bottom:
        .skip 16384
        .globl stack_top
stack_top:
