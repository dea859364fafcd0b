/* Multiboot v1 header: page-aligned modules, memory map wanted; load layout from the ELF headers. */
        .set MB1_MAGIC, 0x1BADB002
        .set MB1_FLAGS, 0x00000003
        .section .multiboot, "a"
        .p2align 2
        .long MB1_MAGIC
        .long MB1_FLAGS
        .long -(MB1_MAGIC + MB1_FLAGS)
