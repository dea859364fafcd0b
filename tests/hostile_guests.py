"""Hostile guests for tests/test_hostile_guests.py: tiny PVH kernels (32/64-bit), Keystone and guestgen's ELF writer.

Every guest boots the same way (own GDT and IDT, the PIC remapped to 0x20/0x28 with every line
masked, long mode over an identity map of the first 4 GiB for 64-bit guests), runs one *body* and
exits through isa-debug-exit with value 0 (status 1). Its IDT sends vectors 0x20-0x2f (PIC) and
0x30-0x3f (local APIC) to handlers that count in ``IRQ_COUNT``, acknowledge and return; every other
vector prints ``vector XX`` and exits with the vector as the value (status ``2 * vector + 1``).

A body reads its arguments from the parameter block ``PARAMS`` (16 little-endian u64 slots), which
the test fills in the ELF (``with_params``) or in guest RAM after boot. The guests print with
``out dx, al`` and exit with ``out 0xf4, al``, so pvtranslate finds sensitive instructions to
translate in every one of them.
"""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import keystone

from pvtranslate.elfwrite import read_layout
from pvtranslate.guestgen import _elf, _pvh_note, _Section

TEXT = 0x100000                      # the PVH note, then the code
CODE = TEXT + 0x20
MAIN64 = TEXT + 0x200                # 64-bit guests: long-mode code after the 32-bit boot stub
DATA = 0x200000
GDT, GDTR, IDTR = DATA, DATA + 0x80, DATA + 0x90
PARAMS = DATA + 0x100                # 16 u64 slots
IRQ_COUNT = DATA + 0x200             # u32: interrupts taken
STRINGS = DATA + 0x300
IDT = DATA + 0x1000
PML4, PDPT, PDS = DATA + 0x2000, DATA + 0x3000, DATA + 0x4000   # PDS: four page directories (4 GiB)
STACK_TOP = DATA + 0xA000
SCRATCH = DATA + 0xA000              # a page the two-VM guests fill
DATA_SIZE = 0xB000
SEL_CODE32, SEL_DATA, SEL_CODE64 = 0x08, 0x10, 0x18
LAPIC_EOI = 0xFEE000B0

MESSAGES = {"hello": b"hostile guest\n", "vector": b"vector ", "after": b"after\n", "clean": b"clean\n",
            "corrupted": b"corrupted\n", "irqs": b"irqs "}


def _strings() -> tuple[bytes, dict[str, int]]:
    blob, where = b"", {}
    for name, text in MESSAGES.items():
        where[name] = STRINGS + len(blob)
        blob += text + b"\0"
    return blob, where


def _regs(bits: int) -> dict[str, str]:
    p = "r" if bits == 64 else "e"
    env = {k: p + k for k in ("ax", "bx", "cx", "dx", "si", "di", "bp", "sp")}
    env.update(ptr="qword" if bits == 64 else "dword", iret="iretq" if bits == 64 else "iretd", W=str(bits // 8))
    return env


# --------------------------------------------------------------------------- bodies

def body_hypercall(bits: int) -> list[str]:
    """Registers popped from PARAMS (ax cx dx bx bp si di, then r8-r15 in 64-bit, then sp) and a jump to the
    address in PARAMS[15]. (Absolute operands go through a register or a pop: Keystone 0.9.2 encodes a
    64-bit ``mov reg, [abs]`` as RIP-relative.)"""
    names = ["ax", "cx", "dx", "bx", "bp", "si", "di"] + ([f"r{n}" for n in range(8, 15)] if bits == 64 else [])
    lines = [f"mov {{sp}}, {PARAMS:#x}"]
    for slot, name in enumerate(names):
        lines.append("pop " + (name if name.startswith("r") and name[1:].isdigit() else "{%s}" % name))
        if bits == 32:
            lines.append("add esp, 4")                      # the slots are 8 bytes wide
    lines += [f"mov {{sp}}, {PARAMS + 8 * 14:#x}", "pop {sp}", f"jmp {{ptr}} ptr [{PARAMS + 8 * 15:#x}]"]
    return lines


def body_own_int(vector: int) -> list[str]:
    return ["int3" if vector == 3 else f"int {vector:#x}"]


def body_overwrite() -> list[str]:
    """Copy PARAMS[1] bytes from PARAMS[2] (or fill with the byte PARAMS[3] if it is 0) to PARAMS[0]."""
    return [f"mov {{bx}}, {PARAMS:#x}", "mov {di}, {ptr} ptr [{bx}]", "mov {cx}, {ptr} ptr [{bx} + 8]",
            "mov {si}, {ptr} ptr [{bx} + 16]", "mov al, byte ptr [{bx} + 24]", "cld",
            "test {si}, {si}", "jz ow_fill", "rep movsb", "jmp ow_done", "ow_fill:", "rep stosb", "ow_done:",
            "mov {si}, {after}", "call puts"]


def body_storm() -> list[str]:
    """PIT channel 0 at divisor PARAMS[0] (rate generator) on IRQ0, and/or the local APIC timer (periodic,
    vector 0x30, initial count PARAMS[1], 0: off); IF on for PARAMS[2] port writes, then print the count."""
    return [f"mov {{bp}}, {PARAMS:#x}", "mov {ax}, {ptr} ptr [{bp}]", "test {ax}, {ax}", "jz storm_apic",
            "mov al, 0x34", "out 0x43, al", "mov al, byte ptr [{bp}]", "out 0x40, al",
            "mov al, byte ptr [{bp} + 1]", "out 0x40, al", "mov al, 0xfe", "out 0x21, al",
            "storm_apic:", "mov {cx}, {ptr} ptr [{bp} + 8]", "test {cx}, {cx}", "jz storm_go",
            "mov ebx, 0xfee003e0", "mov dword ptr [{bx}], 0xb",            # divide by 1
            "mov ebx, 0xfee00320", "mov dword ptr [{bx}], 0x20030",        # periodic, vector 0x30
            "mov ebx, 0xfee00380", "mov dword ptr [{bx}], ecx",            # initial count
            "storm_go:", "mov {cx}, {ptr} ptr [{bp} + 16]", "sti",
            "storm_loop:", "out 0x80, al", "dec {cx}", "jnz storm_loop", "cli",
            "mov {si}, {irqs}", "call puts", f"mov {{bp}}, {IRQ_COUNT:#x}", "mov ebx, dword ptr [{bp}]", "shr ebx, 8",
            "call puthex8", "mov ebx, dword ptr [{bp}]", "call puthex8", "mov al, 10", "mov dx, 0x3f8", "out dx, al"]


def body_runaway(kind: str) -> list[str]:
    return {"spin": ["runaway: jmp runaway"],
            "io": ["runaway: out 0x80, al", "jmp runaway"],
            "rep-outs": [f"mov {{si}}, {DATA:#x}", f"mov {{bx}}, {PARAMS:#x}", "mov ecx, dword ptr [{bx}]",
                         "mov dx, 0x80", "rep outsb"],
            "hlt-storm": ["mov al, 0x34", "out 0x43, al", "mov al, 2", "out 0x40, al", "xor al, al",
                          "out 0x40, al", "mov al, 0xfe", "out 0x21, al", "sti", "runaway: hlt", "jmp runaway"]}[kind]


def body_access(write: bool) -> list[str]:
    """Read (or write 0x5a5a5a5a to) the dword at the linear address PARAMS[0]."""
    op = "mov dword ptr [{bx}], 0x5a5a5a5a" if write else "mov eax, dword ptr [{bx}]"
    return [f"mov {{bp}}, {PARAMS:#x}", "mov {bx}, {ptr} ptr [{bp}]", op, "mov {si}, {after}", "call puts"]


def body_access64_mapped(write: bool) -> list[str]:
    """64-bit: map the 2 MiB page at physical PARAMS[1] at linear 1 GiB, then access linear 1 GiB + PARAMS[0]."""
    op = "mov dword ptr [rbx], 0x5a5a5a5a" if write else "mov eax, dword ptr [rbx]"
    return [f"mov rbp, {PARAMS:#x}", "mov rax, qword ptr [rbp + 8]", "or rax, 0x83", f"mov rbx, {PDS + 0x1000:#x}",
            "mov qword ptr [rbx], rax", "mov rax, cr3", "mov cr3, rax", "mov rbx, qword ptr [rbp]",
            "mov rax, 0x40000000", "add rbx, rax", op, "mov {si}, {after}", "call puts"]


def body_fill_and_watch(value: int) -> list[str]:
    """Check SCRATCH is all zero (print clean or corrupted), fill it with ``value``, then check it forever."""
    return [f"mov {{si}}, {SCRATCH:#x}", "mov ecx, 1024", "fw_zero:", "cmp dword ptr [{si}], 0", "jne fw_bad",
            "add {si}, 4", "dec ecx", "jnz fw_zero", "mov {si}, {clean}", "call puts",
            f"mov {{di}}, {SCRATCH:#x}", "mov ecx, 1024", f"mov eax, {value:#x}", "cld", "rep stosd",
            "fw_watch:", f"mov {{si}}, {SCRATCH:#x}", "mov ecx, 1024",
            "fw_check:", f"cmp dword ptr [{{si}}], {value:#x}", "jne fw_bad", "add {si}, 4", "dec ecx",
            "jnz fw_check", "jmp fw_watch",
            "fw_bad:", "mov {si}, {corrupted}", "call puts", "mov al, 0x7f", "jmp exit"]


# --------------------------------------------------------------------------- assembly and the image

@dataclass(frozen=True)
class HostileGuest:
    bits: int
    elf: bytes
    labels: dict[str, int]

    def write(self, path) -> None:
        with open(path, "wb") as fh:
            fh.write(self.elf)


def _assemble(lines: list[str], base: int, bits: int, want: list[str]) -> tuple[bytes, dict[str, int]]:
    ks = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64 if bits == 64 else keystone.KS_MODE_32)
    word = ".quad" if bits == 64 else ".long"
    src = "\n".join(lines + [f"{word} {name}" for name in want])
    try:
        encoded, _ = ks.asm(src, base)
    except keystone.KsError as exc:
        raise RuntimeError(f"Keystone cannot assemble the hostile guest: {exc}\n{src}") from exc
    code = bytes(encoded)
    size = 8 if bits == 64 else 4
    tail = code[len(code) - size * len(want):]
    labels = {name: int.from_bytes(tail[i * size:(i + 1) * size], "little") for i, name in enumerate(want)}
    return code[:len(code) - size * len(want)], labels


def _vector_lines(bits: int) -> list[str]:
    lines = []
    for v in range(256):
        lines.append(f"vec_{v}:")
        if 0x20 <= v < 0x40:
            lines += ["push {ax}", f"mov {{ax}}, {IRQ_COUNT:#x}", "inc dword ptr [{ax}]"]
            if v < 0x30:
                lines += ["mov al, 0x20"] + (["out 0xa0, al"] if v >= 0x28 else []) + ["out 0x20, al"]
            else:
                lines += [f"mov {{ax}}, {LAPIC_EOI:#x}", "mov dword ptr [{ax}], 0"]
            lines += ["pop {ax}", "{iret}"]
        else:
            lines += [f"mov ebx, {v:#x}", "jmp vec_common"]
    return lines


def _main_lines(bits: int, body: list[str]) -> list[str]:
    pic = []
    for port, value in ((0x20, 0x11), (0xA0, 0x11), (0x21, 0x20), (0xA1, 0x28), (0x21, 4), (0xA1, 2), (0x21, 1),
                        (0xA1, 1), (0x21, 0xFF), (0xA1, 0xFF)):
        pic += [f"mov al, {value:#x}", f"out {port:#x}, al"]
    return ["main:", f"mov eax, {SEL_DATA:#x}", "mov ds, eax", "mov es, eax", "mov ss, eax", "mov fs, eax",
            "mov gs, eax", f"mov {{sp}}, {STACK_TOP:#x}", f"lidt [{IDTR:#x}]", *pic, "mov {si}, {hello}",
            "call puts", *body, "xor eax, eax",
            "exit:", "out 0xf4, al", "exit_spin:", "jmp exit_spin",
            "puts:", "push {ax}", "push {dx}", "puts_loop:", "mov al, byte ptr [{si}]", "test al, al", "jz puts_done",
            "mov dx, 0x3f8", "out dx, al", "inc {si}", "jmp puts_loop", "puts_done:", "pop {dx}", "pop {ax}", "ret",
            "puthex8:", "push {ax}", "push {cx}", "push {dx}", "mov dx, 0x3f8", "mov cl, bl", "shr cl, 4",
            "call nibble", "mov cl, bl", "call nibble", "pop {dx}", "pop {cx}", "pop {ax}", "ret",
            "nibble:", "mov al, cl", "and al, 0xf", "add al, 0x30", "cmp al, 0x39", "jbe nibble_out", "add al, 7",
            "nibble_out:", "out dx, al", "ret",
            "vec_common:", "mov {si}, {vector}", "call puts", "call puthex8", "mov al, 10", "mov dx, 0x3f8",
            "out dx, al", "mov eax, ebx", "jmp exit",
            *_vector_lines(bits)]


def _fill(lines: list[str], env: dict[str, str]) -> list[str]:
    out = []
    for line in lines:
        for key, value in env.items():
            line = line.replace("{" + key + "}", value)
        out.append(line)
    return out


def _data(bits: int, labels: dict[str, int]) -> bytes:
    data = bytearray(DATA_SIZE)
    gdt = struct.pack("<4Q", 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF, 0x00AF9A000000FFFF)
    data[0:len(gdt)] = gdt
    struct.pack_into("<HQ", data, GDTR - DATA, len(gdt) - 1, GDT)
    gate = 16 if bits == 64 else 8
    struct.pack_into("<HQ", data, IDTR - DATA, 256 * gate - 1, IDT)
    for v in range(256):
        off = labels[f"vec_{v}"]
        if bits == 64:
            entry = struct.pack("<HHBBHII", off & 0xFFFF, SEL_CODE64, 0, 0x8E, (off >> 16) & 0xFFFF, off >> 32, 0)
        else:
            entry = struct.pack("<HHBBH", off & 0xFFFF, SEL_CODE32, 0, 0x8E, off >> 16)
        data[IDT - DATA + v * gate:IDT - DATA + (v + 1) * gate] = entry
    if bits == 64:                       # identity map of the first 4 GiB, 2 MiB pages
        struct.pack_into("<Q", data, PML4 - DATA, PDPT | 3)
        for i in range(4):
            struct.pack_into("<Q", data, PDPT - DATA + 8 * i, (PDS + 0x1000 * i) | 3)
        for i in range(4 * 512):
            struct.pack_into("<Q", data, PDS - DATA + 8 * i, (i << 21) | 0x83)
    struct.pack_into("<Q", data, PARAMS - DATA + 8 * 14, STACK_TOP)      # a sane stack unless told otherwise
    blob, _ = _strings()
    data[STRINGS - DATA:STRINGS - DATA + len(blob)] = blob
    return bytes(data)


_LABELS = ["main", "exit", "puts", "puthex8", "nibble", "vec_common"] + [f"vec_{v}" for v in range(256)]


def build(bits: int, body: list[str]) -> HostileGuest:
    """A PVH guest running ``body`` (asm lines with {ax}..{sp}, {ptr}, {iret} and message names)."""
    env = _regs(bits) | {name: hex(addr) for name, addr in _strings()[1].items()}
    if bits == 64:
        boot = [f"mov esp, {STACK_TOP:#x}", f"lgdt [{GDTR:#x}]", "mov eax, cr4", "or eax, 0x20", "mov cr4, eax",
                f"mov eax, {PML4:#x}", "mov cr3, eax", "mov ecx, 0xc0000080", "rdmsr", "or eax, 0x100", "wrmsr",
                "mov eax, cr0", "or eax, 0x80000000", "mov cr0, eax",
                ".byte " + ", ".join(f"{b:#x}" for b in b"\xea" + struct.pack("<IH", MAIN64, SEL_CODE64))]
        stub, _ = _assemble(boot, CODE, 32, [])
        if CODE + len(stub) > MAIN64:
            raise RuntimeError("the 64-bit boot stub overruns the main code")
        main, labels = _assemble(_fill(_main_lines(64, body), env), MAIN64, 64,
                                 _LABELS)
        text = stub.ljust(MAIN64 - CODE, b"\xcc") + main
    else:
        main_va = CODE + 0x20
        boot = [f"mov esp, {STACK_TOP:#x}", f"lgdt [{GDTR:#x}]",
                ".byte " + ", ".join(f"{b:#x}" for b in b"\xea" + struct.pack("<IH", main_va, SEL_CODE32))]
        stub, _ = _assemble(boot, CODE, 32, [])
        main, labels = _assemble(_fill(_main_lines(32, body), env), main_va, 32,
                                 _LABELS)
        text = stub.ljust(main_va - CODE, b"\xcc") + main
    segments = [[_Section(".note.pvh", TEXT, _pvh_note(bits, CODE), "an"), _Section(".text", CODE, text, "ax")],
                [_Section(".data", DATA, _data(bits, labels), "aw")]]
    # a function symbol per routine and vector stub, so that the translator finds the code only the IDT reaches
    starts = sorted(labels.values()) + [CODE + len(text)]
    symbols = [(name, va, starts[starts.index(va) + 1] - va) for name, va in labels.items()]
    elf = _elf(bits, CODE, segments, symbols)
    return HostileGuest(bits, elf, labels)


def params_offset(elf: bytes) -> int:
    """File offset of PARAMS in a guest (or its translation): through the PT_LOAD that maps DATA."""
    return read_layout(io.BytesIO(elf)).file_offset(PARAMS, 16 * 8)


def with_params(elf: bytes, values: dict[int, int]) -> bytes:
    """``elf`` with PARAMS slot -> value written in."""
    out = bytearray(elf)
    base = params_offset(elf)
    for slot, value in values.items():
        struct.pack_into("<Q", out, base + 8 * slot, value & (2 ** 64 - 1))
    return bytes(out)
