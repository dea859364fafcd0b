"""The CPU model guests see through CPUID: QEMU 7.2's `qemu64` under TCG, leaf for leaf."""
from __future__ import annotations

Regs = tuple[int, int, int, int]

MAX_BASIC_LEAF = 0x0000000D
MAX_EXTENDED_LEAF = 0x8000000A

# (leaf, subleaf) -> (eax, ebx, ecx, edx); subleaf None: the leaf ignores ECX. Leaves not listed in
# range read as zeros. Values are what QEMU 7.2 reports for `-cpu qemu64` with TCG (samples/cpuid).
QEMU64_LEAVES: dict[tuple[int, int | None], Regs] = {
    (0x00000000, None): (MAX_BASIC_LEAF, 0x68747541, 0x444D4163, 0x69746E65),     # "AuthenticAMD"
    (0x00000001, None): (0x00060FB1, 0x00000800, 0x80002001, 0x078BFBFD),
    (0x00000005, None): (0x00000000, 0x00000000, 0x00000003, 0x00000000),
    (0x80000000, None): (MAX_EXTENDED_LEAF, 0x68747541, 0x444D4163, 0x69746E65),
    (0x80000001, None): (0x00060FB1, 0x00000000, 0x00000005, 0x2193FBFD),
    (0x80000002, None): (0x554D4551, 0x72695620, 0x6C617574, 0x55504320),     # "QEMU Virtual CPU version 2.5+"
    (0x80000003, None): (0x72657620, 0x6E6F6973, 0x352E3220, 0x0000002B),
    (0x80000005, None): (0x01FF01FF, 0x01FF01FF, 0x40020140, 0x40020140),
    (0x80000006, None): (0x00000000, 0x42004200, 0x02008140, 0x00808140),
    (0x80000008, None): (0x00003028, 0x00000000, 0x00000000, 0x00000000),
    (0x8000000A, None): (0x00000001, 0x00000010, 0x00000000, 0x00000000),
    (0x40000000, None): (0x40000001, 0x54474354, 0x43544743, 0x47435447),     # "TCGTCGTCGTCG"
}
SUBLEAF_LEAVES = frozenset({0x4, 0x7, 0xB, 0xD})


def qemu64_cpuid(leaf: int, subleaf: int) -> Regs:
    """CPUID as QEMU computes it: out-of-range leaves answer as the highest basic leaf."""
    if 0x40000000 <= leaf <= 0x40000001:
        return QEMU64_LEAVES.get((leaf, None), (0, 0, 0, 0))
    if (leaf & 0x80000000 and leaf > MAX_EXTENDED_LEAF) or (not leaf & 0x80000000 and leaf > MAX_BASIC_LEAF):
        leaf = MAX_BASIC_LEAF
    if leaf == 0xB:   # x2APIC topology: one thread per core, one core; ECX echoes the level number
        return {0: (0, 1, 0x100, 0), 1: (0, 1, 0x201, 0)}.get(subleaf, (0, 0, subleaf & 0xFF, 0))
    key = (leaf, subleaf if leaf in SUBLEAF_LEAVES else None)
    return QEMU64_LEAVES.get(key, (0, 0, 0, 0))
