/* PVH boot note: XEN_ELFNOTE_PHYS32_ENTRY (18) names the 32-bit entry point. */
        .section .note.pvh, "a", @note
        .p2align 2
        .long 4                 /* namesz: "Xen\0" */
        .long 4                 /* descsz */
        .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
        .asciz "Xen"
        .long _start32
        .p2align 2
