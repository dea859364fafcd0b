"""guestgen: owns building tiny bootable test guests (PVH ELF32/ELF64) that run catalog instructions and print digests.

A guest is generated in pure Python: Keystone assembles it (two passes, so that label addresses can
be used as immediates), Capstone checks every sensitive instruction it placed and that no other one
slipped in, and a small ELF writer wraps it with a PVH note (Xen note 18, 32-bit entry) and a symbol
table whose FUNC symbols carry sizes, so the translator sees function ends. 32-bit guests stay in
protected mode without paging; 64-bit guests switch to long mode themselves over identity page
tables (first GiB, 2 MiB pages, user bit set so that ring-3 round trips work).

A guest runs a sequence of *cases*. Each case executes one catalog instruction in one operand form
(a ``Variant``) in one placement ``Context``, from seeded register values and flags, and prints::

    c<n> f=<flags> sp=<rsp - start> h=<hash of the GPRs and selectors> k=<checksum>[ x=<extra>...]

``f`` is pushed by a ``pushf`` right after the instruction: in pv mode that pushf is translated
too and shows the *virtual* IF, which is what "guest-visible" means. ``h`` hashes all GPRs (masked
where the value is time: rdtsc's eax/edx) and the six selectors; ``k`` checksums the data buffer,
the low buffer, the GDT and the live part of the stack; ``x=`` are per-form read-backs (the control
register, MSR, port or segment base just written). A fault prints ``!<vector> e=<error code> ip=<address>`` and
the digest of the registers at the fault, then the guest goes on with the next case (an unexpected
fault elsewhere prints ``UNEXPECTED`` and exits with status 0x7f). ``verbose=True`` also prints
every register and selector (``r=``, ``s=``). Each case ends by restoring what it changed (segments,
flags, CRs, MSRs, tables). The console ends with ``PASS`` (isa-debug-exit, status 1); output is
line-buffered and written with one ``rep outsb`` per line, which keeps pv runs fast.

Set-ups that need more than registers: the timer (PIT through the remapped PIC, IRQ0 only) ends
``hlt``; ring 3 (sysexit, sysret, iret to CPL 3) comes back through a DPL-3 gate, int 0x30;
``iret16`` returns to a 16-bit IP, so it lands in a low page (0x3000, which QEMU's firmware leaves
intact). Not generated, on purpose: ``hlt`` with IF=0 (nothing can wake it: the VMM reports a dead
halt), ``popf`` with TF=1 (the trap lands after the next instruction, which under translation is a
trampoline's), segment-limit faults (Unicorn, like QEMU's TCG, checks no limits), reserved CR4 bits
(Unicorn accepts them, QEMU 7.2 hangs), sysret to compatibility mode (needs 32-bit code inside a
64-bit guest). Instructions qemu64 lacks (monitor, mwait, xsetbv, xgetbv, invpcid, clac, stac,
rdtscp, rdpmc, sysexit in long mode) are generated and expected to raise #UD.

Everything a fuzzer needs is public: ``variants_for(entry, bits)``, ``Context``, ``CaseSpec``,
``build_guest(cases, bits, seed)``, ``parse_console``; ``entry_guest(entry, bits)`` is the
per-entry guest of tests/pvtranslate/test_generated_equivalence.py. ``python -m pvtranslate.guestgen
ENTRY BITS --verbose`` writes one. The fuzzer (``pvtranslate.fuzzgen``) hangs its random code on a
case with ``CaseSpec.weave`` (a ``Weave``: lines before and after the instruction, with the labels
``@SITE`` and ``@POST`` and its own functions) and gives each case its own register seed
(``CaseSpec.draw_seed``, so that dropping a case leaves the others' values alone); a guest with a
weave also seeds and checksums ``FUZZ_BUF``, the woven code's memory. Guests without one are
byte-identical to what they were before these hooks.
"""

from __future__ import annotations

import enum
import functools
import random
import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import capstone
import keystone

from pvtranslate.catalog import CANDIDATE_IDS, ENTRIES, classify

__all__ = [
    "GuestGenError",
    "Context",
    "Variant",
    "Weave",
    "CaseSpec",
    "Case",
    "Guest",
    "CONTEXTS",
    "variants_for",
    "entries_for",
    "build_guest",
    "entry_guest",
    "parse_console",
    "encode",
    "PASS_MARKER",
]

PASS_MARKER = b"PASS\n"


class GuestGenError(Exception):
    """The generator could not build the guest it was asked for (an assembler quirk, a bad spec)."""


# --------------------------------------------------------------------------- the machine layout

LOW_CODE = 0x3000           # iret16 landing pads: a 16-bit IP must reach them (QEMU keeps 0x3000-0x5fff intact)
LOW_DATA = 0x4000           # a low stack (64-bit iretw pops a 16-bit SP) and a low buffer (a16 string I/O)
LOW_STACK_TOP = LOW_DATA + 0x800
LOW_BUF = LOW_DATA + 0x800
TEXT = 0x100000            # the PVH note, then the code
CODE = TEXT + 0x20          # the entry: 32-bit boot code
MAIN64 = TEXT + 0x100       # 64-bit guests: long-mode code after the 32-bit boot stub
DATA = 0x200000

PML4, PDPT, PD = DATA + 0x0000, DATA + 0x1000, DATA + 0x2000
GDT = DATA + 0x3000
GDT_ALT = DATA + 0x3100     # an identical copy at another address (lgdt cases)
LDT = DATA + 0x3200
TSS_A, TSS_B = DATA + 0x3300, DATA + 0x3380
GDTR_MAIN, GDTR_ALT, IDTR_MAIN, IDTR_ALT = (DATA + 0x3400 + 16 * i for i in range(4))   # pseudo-descriptors
IDT = DATA + 0x3800
V_CASE = DATA + 0x4000      # current case number
V_RESUME = DATA + 0x4008    # where a fault or a ring-3 return continues (0: unexpected, exit)
V_SREGS = DATA + 0x4010     # cs ss ds es fs gs captured with the registers
V_TICKS = DATA + 0x4020     # timer interrupts taken
V_CR0 = DATA + 0x4028       # control registers as booted (restores)
V_CR4 = DATA + 0x4030
V_SAVE = DATA + 0x4038      # a case's saved MSR value (restores)
HEXDIGITS = DATA + 0x4080
STRINGS = DATA + 0x4100
BUF = DATA + 0x4800         # the data buffer: seeded, written by cases, checksummed
BUF_SIZE = 256
MASKS = DATA + 0x5000       # per case, per register: AND mask applied before hashing
MAX_CASES = 64
FUZZ_BUF = DATA + 0x7000    # woven code's memory (guests with a Weave only): seeded, checksummed
FUZZ_SIZE = 256
STACK_TOP = DATA + 0xA000
CASE_SP = STACK_TOP - 0x40  # every case starts here; the 64 bytes above are a seeded canary
STACK_WINDOW = 256          # the checksum covers the stack from the instruction's sp if within this
KSTACK_TOP = DATA + 0xB000  # TSS rsp0: ring-3 round trips come back on it
USTACK_TOP = DATA + 0xC000  # ring-3 stack (sysexit, iret to ring 3)
DATA_SIZE = 0xC000
UNMAPPED = 0x80000000       # 64-bit guests map only the first GiB

# GDT selectors (both modes; system descriptors take 16 bytes)
SEL_CODE, SEL_DATA = 0x08, 0x10
SEL_UCODE32, SEL_UDATA, SEL_UCODE64, SEL_UDATA2 = 0x18, 0x20, 0x28, 0x30
SEL_DATA_ALT = 0x38         # flat data, another selector value
SEL_TSS_A, SEL_TSS_B, SEL_LDT, SEL_GATE = 0x40, 0x50, 0x60, 0x70
SEL_DATA_BASE40 = 0x80      # data with base 0x40: shows whether a segment override is honoured
SEL_NOT_PRESENT = 0x88
SEL_DATA16 = 0x90           # 16-bit data, limit 0xffff
GDT_LIMIT = 0x97
IDT_VECTORS = 64
IRQ_BASE = 0x20             # PIC remapped here; IRQ0 is the timer that ends hlt
USER_RETURN_VECTOR = 0x30   # DPL-3 gate: ring-3 code comes back to ring 0 through it

MSR_EFER, MSR_STAR, MSR_KERNEL_GS_BASE, MSR_GS_BASE = 0xC0000080, 0xC0000081, 0xC0000102, 0xC0000101
MSR_SYSENTER_CS = 0x174
PORT_COM1, PORT_SCRATCH, PORT_UNASSIGNED = 0x3F8, 0x3FF, 0x2E0

_GPRS = {64: ("rax", "rcx", "rdx", "rbx", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"),
         32: ("eax", "ecx", "edx", "ebx", "ebp", "esi", "edi")}
_SREG_ORDER = ("cs", "ss", "ds", "es", "fs", "gs")


# --------------------------------------------------------------------------- the public spec

class Context(enum.Enum):
    """Where the sensitive instruction sits relative to control flow."""

    PLAIN = "plain"          # straight-line code
    BRANCH = "branch"        # the target of a jump, and immediately followed by another jump's target
    FUNC_RET = "func-ret"    # the last instruction of a called function, before its ret
    FUNC_END = "func-end"    # the last instruction of a function symbol; the next function follows


CONTEXTS: tuple[Context, ...] = tuple(Context)


@dataclass(frozen=True)
class Variant:
    """One operand form of one catalog entry, with the set-up that makes it meaningful.

    Asm lines are Intel syntax with ``{NAME}`` placeholders (addresses of this module, register
    names ``{ax}``..``{sp}``, ``{W}``); a line starting with ``!`` is a sensitive instruction: it
    is encoded and checked like ``insn`` and counted as a placed site.
    """

    form: str                              # what is special about it, e.g. "r32 <- cr0", "port 0x3ff"
    insn: str                              # Capstone syntax; prefixes "o16 "/"a32 "/"a16 " add 66/67
    prepare: tuple[str, ...] = ()          # before the registers are seeded (machine state)
    operands: tuple[str, ...] = ()         # after seeding: the operand registers (may change flags)
    stack: tuple[tuple[int, object], ...] = ()  # (bytes, value) pushed right before the instruction
    if_on: bool = False                    # IF=1 before the instruction (an sti in the set-up)
    df: bool = False                       # DF=1 before the instruction
    masks: Mapping[str, int] = field(default_factory=dict)  # register -> mask (values that are time)
    extras: tuple[tuple[str, ...], ...] = ()  # after the digest: each leaves a value in eax/rax, printed x=
    restore: tuple[str, ...] = ()          # after the extras: undo machine-state changes
    expect: int | None = None              # the vector the instruction raises natively, None: completes
    pushes: bool = False                   # leaves words on the stack: function contexts enter by jmp


@dataclass(frozen=True)
class Weave:
    """Code woven around one case's sensitive instruction (the fuzzer's, ``pvtranslate.fuzzgen``).

    Lines are asm for ``_Chunk.line``: ``{NAME}`` placeholders, ``!`` for a sensitive instruction,
    ``{rip:ADDR}`` for a RIP-relative operand of any instruction. ``@name`` is a label local to the
    case (``@name:`` on its own line defines it); the emitter defines ``@SITE`` (the sensitive
    instruction) and ``@POST`` (the start of ``after``). ``before`` runs after the flags are set up
    and the words the instruction pops are built, immediately before it (in the ``BRANCH`` context:
    before the flags are set up); ``after`` right after the instruction completes (after the return
    of a function context), before the capture. ``functions`` are ``(name, lines, sized)``, placed
    after the main flow, a sized FUNC symbol when ``sized``. The weaver keeps the instruction's
    preconditions: this module does not check them.
    """

    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    functions: tuple[tuple[str, tuple[str, ...], bool], ...] = ()


@dataclass(frozen=True)
class CaseSpec:
    entry: str
    variant: Variant
    context: Context
    weave: Weave | None = None             # fuzzer code around the instruction
    draw_seed: int | None = None           # registers and flags from their own seed (else the guest's stream)


@dataclass(frozen=True)
class Case:
    """One generated case: its spec, number and where its sensitive instruction is."""

    index: int
    entry: str
    form: str
    context: Context
    expect: int | None
    insn_va: int
    insn_bytes: bytes
    text: str                              # Capstone's disassembly of the placed instruction

    def describe(self) -> str:
        fault = f", expect #{self.expect}" if self.expect is not None else ""
        where = f"{self.context.value} @ {self.insn_va:#x}"
        return f"c{self.index:x} {self.entry} [{self.form}] {where}: {self.text}{fault}"


@dataclass(frozen=True)
class Guest:
    bits: int
    seed: int
    elf: bytes
    cases: tuple[Case, ...]
    sites: Mapping[int, str]               # every sensitive instruction placed: va -> catalog entry name
    labels: Mapping[str, int] = field(default_factory=dict)   # every label of the code: name -> va

    def write(self, path) -> None:
        with open(path, "wb") as fh:
            fh.write(self.elf)


# --------------------------------------------------------------------------- encoding one instruction

_KS: dict[int, keystone.Ks] = {}
_CS: dict[int, capstone.Cs] = {}

# Forms Keystone 0.9.2 cannot assemble (or assembles as something else): Capstone text -> bytes.
_RAW: dict[tuple[int, str], str] = {
    (64, "sysretq"): "480f07", (64, "sysret"): "0f07", (32, "sysret"): "0f07",
    (64, "sysexitq"): "480f35", (64, "sysexit"): "0f35", (32, "sysexit"): "0f35",
    (64, "lsl rax, ecx"): "480f03c1", (64, "lsl r9, word ptr [rbx]"): "4c0f030b",
    (64, "lar rax, ecx"): "480f02c1", (32, "lsl eax, word ptr [ebx]"): "0f0303",
    (64, "lsl eax, word ptr [rbx]"): "0f0303",
    (32, "invpcid eax, xmmword ptr [ebx]"): "660f388203",
    (64, "pushfw"): "669c", (64, "popfw"): "669d",
}


def _ks(bits: int) -> keystone.Ks:
    if bits not in _KS:
        _KS[bits] = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64 if bits == 64 else keystone.KS_MODE_32)
    return _KS[bits]


def _cs(bits: int) -> capstone.Cs:
    if bits not in _CS:
        md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64 if bits == 64 else capstone.CS_MODE_32)
        md.detail = True
        _CS[bits] = md
    return _CS[bits]


def _text_of(insn) -> str:
    return f"{insn.mnemonic} {insn.op_str}".strip()


def _decode_one(code: bytes, bits: int, va: int = 0):
    insns = list(_cs(bits).disasm(code, va, 1))
    if not insns or insns[0].size != len(code):
        raise GuestGenError(f"{code.hex()} does not decode as one {bits}-bit instruction")
    return insns[0]


_PREFIX_BYTES = {"o16": b"\x66", "a32": b"\x67", "a16": b"\x67"}


@functools.lru_cache(maxsize=4096)
def encode(text: str, bits: int, va: int = 0) -> bytes:
    """The bytes of one instruction written in Capstone's syntax, checked by decoding them again.

    Keystone adds a spurious operand-size prefix to some 32-bit system instructions (lgdt [m],
    push es, ...) and cannot assemble a few forms; both are corrected here, and any other
    disagreement between what was asked and what Capstone reads back raises ``GuestGenError``.
    """
    prefix = b""
    body = text
    while body.split(" ", 1)[0] in _PREFIX_BYTES:
        word, body = body.split(" ", 1)
        prefix += _PREFIX_BYTES[word]
    if (bits, body) in _RAW:
        code = bytes.fromhex(_RAW[(bits, body)])
    else:
        try:
            enc, _ = _ks(bits).asm(body, va)
        except keystone.KsError as exc:
            raise GuestGenError(f"Keystone cannot assemble {body!r} ({bits}-bit): {exc}; add it to _RAW") from exc
        code = bytes(enc or b"")
        if code[:1] == b"\x66":
            try:  # Keystone's spurious 66 (32-bit "sgdt [ebx]" -> 66 0f 01 03): drop it when it changes nothing
                if _text_of(_decode_one(code[1:], bits, va)) == _text_of(_decode_one(code, bits, va)):
                    code = code[1:]
            except GuestGenError:
                pass
    code = prefix + code
    insn = _decode_one(code, bits, va)
    if not prefix and _text_of(insn) != body:
        raise GuestGenError(f"{bits}-bit {body!r} came out as {code.hex()} = {_text_of(insn)!r}")
    return code


# --------------------------------------------------------------------------- the assembler frame

class _Chunk:
    """Code assembled at one address in one mode; labels are collected to read their addresses back."""

    def __init__(self, name: str, base: int, bits: int, addr: Callable[[str], int], env: Mapping[str, object]):
        self.name, self.base, self.bits, self.addr, self.env = name, base, bits, addr, env
        self.lines: list[str] = []
        self.labels: list[str] = []
        self.sites: list[tuple[str, str]] = []   # (label, expected entry or "" for any)
        self.funcs: list[tuple[str, str]] = []   # (start label, end label)
        self._n = 0

    def fresh(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self.name}_{self._n}"

    def label(self, name: str) -> None:
        self.lines.append(f"{name}:")
        self.labels.append(name)

    def asm(self, *lines: str) -> None:
        self.lines.extend(lines)

    def sensitive(self, text: str, entry: str = "") -> str:
        """Place one sensitive instruction (Capstone syntax); ``{rip:ADDR}`` makes a RIP-relative operand."""
        lbl = self.fresh("S")
        self.label(lbl)
        m = re.search(r"\{rip:(\w+)\}", text)
        if m:
            target = int(m.group(1), 0)
            probe = encode(text.replace(m.group(0), "rip + 0x7fffffff"), self.bits)
            here = self.addr(lbl)
            disp = (target - (here + len(probe))) & 0xFFFFFFFF
            disp_s = disp - (1 << 32) if disp & 0x80000000 else disp
            text = text.replace(m.group(0), f"rip {'+' if disp_s >= 0 else '-'} {abs(disp_s):#x}")
            code = encode(text, self.bits, here)
            if len(code) != len(probe):
                raise GuestGenError(f"RIP-relative {text!r} changed size")
        else:
            code = encode(text, self.bits)
        self.lines.append(".byte " + ", ".join(f"{b:#x}" for b in code))
        self.sites.append((lbl, entry))
        return lbl

    def func(self, name: str, body: Callable[[], None]) -> None:
        """A function symbol with a size: [name, name_end)."""
        self.label(name)
        body()
        self.label(name + "_end")
        self.funcs.append((name, name + "_end"))

    def line(self, text: str) -> None:
        """An asm line with ``{NAME}`` placeholders; a leading ``!`` marks a sensitive instruction;
        ``{rip:ADDR}`` makes a RIP-relative operand (64-bit)."""
        text = _fmt(text, self.env)
        if text.startswith("!"):
            self.sensitive(text[1:])
        elif "{rip:" in text:
            self.rip_relative(text)
        else:
            self.lines.append(text)

    def rip_relative(self, text: str) -> None:
        """An ordinary instruction with a ``{rip:ADDR}`` operand, the displacement computed from its own address."""
        m = re.search(r"\{rip:(\w+)\}", text)
        assert m is not None
        target = int(m.group(1), 0)
        try:
            probe, _ = _ks(self.bits).asm(text.replace(m.group(0), "rip + 0x7fffffff"), 0)
        except keystone.KsError as exc:
            raise GuestGenError(f"Keystone cannot assemble {text!r} ({self.bits}-bit): {exc}") from exc
        lbl = self.fresh("R")
        self.label(lbl)
        disp = (target - (self.addr(lbl) + len(probe or b""))) & 0xFFFFFFFF
        disp_s = disp - (1 << 32) if disp & 0x80000000 else disp
        self.lines.append(text.replace(m.group(0), f"rip {'+' if disp_s >= 0 else '-'} {abs(disp_s):#x}"))

    def assemble(self) -> tuple[bytes, dict[str, int]]:
        word, fmt = (".quad", "<Q") if self.bits == 64 else (".long", "<I")
        table = [f"{word} {lbl}" for lbl in self.labels]
        src = "\n".join(self.lines + table)
        try:
            enc, _ = _ks(self.bits).asm(src, self.base)
        except keystone.KsError as exc:
            raise GuestGenError(f"Keystone cannot assemble chunk {self.name}: {exc}") from exc
        code = bytes(enc or b"")
        size = struct.calcsize(fmt)
        n = len(self.labels)
        addrs = struct.unpack(f"<{n}{fmt[1]}", code[len(code) - n * size:]) if n else ()
        return code[: len(code) - n * size], dict(zip(self.labels, addrs))


# --------------------------------------------------------------------------- register and asm helpers

def _regs(bits: int) -> dict[str, object]:
    """Placeholders for asm templates: {ax}.. full-width registers, {W} word size, {ptr}, {pushf}..."""
    p = "r" if bits == 64 else "e"
    env: dict[str, object] = {k: p + k for k in ("ax", "bx", "cx", "dx", "si", "di", "bp", "sp")}
    env.update(W=bits // 8, ptr="qword" if bits == 64 else "dword", pushf="pushfq" if bits == 64 else "pushfd",
               popf="popfq" if bits == 64 else "popfd", iret="iretq" if bits == 64 else "iretd", bits=bits)
    for name, value in globals().items():
        if name.isupper() and isinstance(value, int):
            env[name] = hex(value)
    return env


def _fmt(line: str, env: Mapping[str, object]) -> str:
    """Fill ``{NAME}`` placeholders (``{rip:ADDR}`` is left for ``_Chunk.sensitive``)."""
    return re.sub(r"\{(\w+)\}", lambda m: str(env[m.group(1)]), line)


# --------------------------------------------------------------------------- variants per catalog entry

def _selectors_cycle(bits: int) -> list[tuple[int, str]]:
    """Selectors for lar/lsl/verr/verw and what they are."""
    return [(SEL_CODE, "code"), (SEL_DATA, "data"), (SEL_TSS_A | 0, "busy TSS"), (SEL_LDT, "LDT"),
            (SEL_GATE, "call gate"), (SEL_UDATA | 3, "DPL3 data"), (0x04, "LDT entry 0"), (0, "null"),
            (0xFFF8, "beyond the limit"), (SEL_NOT_PRESENT, "not present"), (SEL_DATA16 | 1, "16-bit data, RPL1")]


def _rdmsr_extra(msr: int) -> tuple[str, ...]:
    return (f"mov ecx, {msr:#x}", "!rdmsr", "{EDXEAX}")   # {EDXEAX}: edx:eax printed as one value (see _expand)


def _save_msr(msr: int) -> tuple[str, ...]:
    return (f"mov ecx, {msr:#x}", "!rdmsr", "mov ebx, {V_SAVE}", "mov dword ptr [{bx}], eax",
            "mov dword ptr [{bx} + 4], edx")


def _restore_msr(msr: int) -> tuple[str, ...]:
    return (f"mov ecx, {msr:#x}", "mov ebx, {V_SAVE}", "mov eax, dword ptr [{bx}]", "mov edx, dword ptr [{bx} + 4]",
            "!wrmsr")


_PCI_ADDRESS = ("mov eax, 0x80000000", "mov edx, 0xcf8", "!out dx, eax")
_PCI_RESET = ("xor eax, eax", "mov edx, 0xcf8", "!out dx, eax")
_PCI_LINE = ("mov eax, 0x8000003c", "mov edx, 0xcf8", "!out dx, eax")   # host bridge: interrupt line (writable)
_CMOS_INDEX_0F = ("mov al, 0xf", "!out 0x70, al")
_SCRATCH_PUT = ("mov al, 0x5a", "mov edx, 0x3ff", "!out dx, al")
_SCRATCH_GET = ("mov edx, 0x3ff", "xor eax, eax", "!in al, dx")
_RESTORE_CR0 = ("mov ebx, {V_CR0}", "mov {ax}, {ptr} ptr [{bx}]", "!mov cr0, {ax}")
_RESTORE_CR4 = ("mov ebx, {V_CR4}", "mov {ax}, {ptr} ptr [{bx}]", "!mov cr4, {ax}")
_SET_CR4_DE = {32: ("!mov eax, cr4", "or eax, 8", "!mov cr4, eax"), 64: ("!mov rax, cr4", "or eax, 8", "!mov cr4, rax")}
_TIME = {"ax": 0xFFFFFFFF00000000, "dx": 0xFFFFFFFF00000000}   # rdtsc: only the (zero) upper halves are compared


def _mem(bits: int) -> str:
    return "rbx" if bits == 64 else "ebx"


def _v_flags(entry: str, bits: int) -> list[Variant]:
    w = {"pushf16": 2, "pushfd": 4, "pushfq": 8, "popf16": 2, "popfd": 4, "popfq": 8}[entry]
    if (w == 4 and bits == 64) or (w == 8 and bits == 32):
        return []
    text = {2: "pushf" if entry.startswith("push") else "popf", 4: entry, 8: entry}[w]
    if bits == 64 and w == 2:
        text = "o16 pushfq" if entry.startswith("push") else "o16 popfq"
    if entry.startswith("push"):
        upper = ("push 0x243602", "!" + ("popfq" if bits == 64 else "popfd"))   # ID|AC|IOPL3|DF|IF
        return [Variant("IF=0", text, pushes=True),
                Variant("IF=1", text, if_on=True, pushes=True),
                Variant("ID|AC|IOPL3|DF|IF set", text, prepare=upper, pushes=True)]
    images = [(0x0AD7 | 0x200, "IF=1, arithmetic flags"), (0x3402, "IOPL3|DF, IF=0"), (0x4802, "NT|OF")]
    if w >= 4:
        images += [(0x00243602, "ID|AC|IOPL3|DF|IF"), (0xFFFFFEFF, "every bit but TF")]
    if w == 8:
        images += [(0xFFFFFFFF80000AD5, "upper 32 bits set")]
    out = [Variant(f"pop {v & ((1 << 8 * w) - 1):#x} ({what})", text, stack=((w, v),)) for v, what in images]
    out.append(Variant("IF=1 before, pop 0x2", text, stack=((w, 2),), if_on=True))
    return out


def _v_port(entry: str, bits: int) -> list[Variant]:
    name, form = entry.split(".")
    width = int(name[-2:] if name[-2:].isdigit() else name[-1])
    acc = {8: "al", 16: "ax", 32: "eax"}[width]
    out: list[Variant] = []
    if name.startswith("in"):
        if form == "imm8":
            ports = [(0x80, "port 0x80 (reads all ones)"), (0xE0, "unassigned 0xe0")]
            if width == 8:
                ports = [(0x71, "CMOS 0x0f")] + ports
            for port, what in ports:
                prep = _CMOS_INDEX_0F if port == 0x71 else ()
                out.append(Variant(what, f"in {acc}, {port:#x}", prepare=prep))
        else:
            cases = {8: [(PORT_SCRATCH, "COM1 scratch", _SCRATCH_PUT), (0x3FD, "COM1 LSR", ()),
                         (PORT_UNASSIGNED, "unassigned", ()), (0xCFC, "PCI data", _PCI_ADDRESS),
                         (0x71, "CMOS data", _CMOS_INDEX_0F)],
                     16: [(0xCFC, "PCI vendor", _PCI_ADDRESS), (0xCFE, "PCI device", _PCI_ADDRESS),
                          (PORT_UNASSIGNED, "unassigned", ())],
                     32: [(0xCF8, "PCI address latch", _PCI_ADDRESS), (0xCFC, "PCI id", _PCI_ADDRESS),
                          (PORT_UNASSIGNED, "unassigned", ())]}[width]
            for port, what, prep in cases:
                rest = _PCI_RESET if prep is _PCI_ADDRESS else ()
                out.append(Variant(what, f"in {acc}, dx", prepare=prep, operands=(f"mov dx, {port:#x}",),
                                   restore=rest))
    else:
        if form == "imm8":
            ports = [(0x80, "port 0x80")]
            if width == 8:
                ports += [(0x70, "CMOS index"), (0x21, "PIC mask")]
            else:
                ports += [(0xE0, "unassigned 0xe0")]
            for port, what in ports:
                ops, extras = (), ()
                if port == 0x70:
                    ops, extras = ("mov al, 0xf",), (("xor eax, eax", "!in al, 0x71"),)
                elif port == 0x21:
                    ops, extras = ("mov al, 0xff",), (("xor eax, eax", "!in al, 0x21"),)
                out.append(Variant(what, f"out {port:#x}, {acc}", operands=ops, extras=extras))
        else:
            cases = {8: [(PORT_SCRATCH, "COM1 scratch", (), (_SCRATCH_GET,)), (0x80, "port 0x80", (), ()),
                         (0x71, "CMOS data 0x0f", _CMOS_INDEX_0F,
                          (("mov al, 0xf", "!out 0x70, al", "xor eax, eax", "!in al, 0x71"),))],
                     16: [(0x80, "port 0x80", (), ()), (PORT_UNASSIGNED, "unassigned", (), ())],
                     32: [(0xCF8, "PCI address latch", (), (("mov edx, 0xcf8", "!in eax, dx"),)),
                          (0x80, "port 0x80", (), ())]}[width]
            for port, what, prep, extras in cases:
                rest = _PCI_RESET if port == 0xCF8 else ()
                ops = (f"mov dx, {port:#x}",) + (("or eax, 0x80000000",) if port == 0xCF8 else ())
                out.append(Variant(what, f"out dx, {acc}", prepare=prep, operands=ops, extras=extras, restore=rest))
    return out


def _string_text(op: str, size: str, bits: int, addr: int, seg: str = "") -> str:
    """Capstone's text for ins/outs: insb byte ptr es:[edi], dx / outsd dx, dword ptr [rsi]."""
    ptr = {"b": "byte", "w": "word", "d": "dword"}[size]
    reg = {64: {"ins": "rdi", "outs": "rsi"}, 32: {"ins": "edi", "outs": "esi"},
           16: {"ins": "di", "outs": "si"}}[addr][op]
    if op == "ins":
        es = "es:" if bits == 32 else ""
        return f"ins{size} {ptr} ptr {es}[{reg}], dx"
    return f"outs{size} dx, {ptr} ptr {seg}[{reg}]"


def _v_string(entry: str, bits: int) -> list[Variant]:
    rep = entry.startswith("rep.")
    name = entry.split(".")[-1]
    op, size = ("ins", name[3]) if name.startswith("ins") else ("outs", name[4])
    index = "di" if op == "ins" else "si"
    R = "r" if bits == 64 else "e"
    pfx = "rep " if rep else ""
    if op == "ins":
        ports = {"b": (PORT_SCRATCH, "COM1 scratch", _SCRATCH_PUT, ()),
                 "w": (0xCFC, "PCI data", _PCI_ADDRESS, _PCI_RESET),
                 "d": (0xCFC, "PCI data", _PCI_ADDRESS, _PCI_RESET)}[size]
    else:
        ports = {"b": (PORT_SCRATCH, "COM1 scratch", (), ()), "w": (0x80, "port 0x80", (), ()),
                 "d": (PORT_UNASSIGNED, "unassigned", (), ())}[size]
    port, pname, prep, rest = ports
    extras = ((_SCRATCH_GET),) if op == "outs" and port == PORT_SCRATCH else ()
    count = (f"mov {R}cx, 3",) if rep else ()
    plain = _string_text(op, size, bits, bits)
    out = [
        Variant(f"{pname}, DF=0", pfx + plain, prepare=prep, restore=rest, extras=extras,
                operands=(f"mov {R}{index}, {BUF + 0x20:#x}", f"mov dx, {port:#x}", *count)),
        Variant(f"{pname}, DF=1", pfx + plain, prepare=prep, restore=rest, extras=extras, df=True,
                operands=(f"mov {R}{index}, {BUF + 0x90:#x}", f"mov dx, {port:#x}", *count)),
        Variant("unassigned port", pfx + plain, operands=(f"mov {R}{index}, {BUF + 0x40:#x}",
                                                          f"mov dx, {PORT_UNASSIGNED:#x}", *count)),
    ]
    if rep:
        out.append(Variant("count 0", pfx + plain, operands=(f"mov {R}{index}, {BUF + 0x40:#x}",
                                                             f"mov dx, {PORT_UNASSIGNED:#x}", f"mov {R}cx, 0")))
        out.append(Variant("repne", "repne " + plain, operands=(f"mov {R}{index}, {BUF + 0x50:#x}",
                                                                f"mov dx, {PORT_UNASSIGNED:#x}", f"mov {R}cx, 2")))
    if op == "outs":  # the data read is observable: COM1 scratch, the PCI interrupt line, the PCI address latch
        seg_text = pfx + _string_text(op, size, bits, bits, "fs:")
        to_fs = (f"mov eax, {SEL_DATA_BASE40:#x}", "!mov fs, eax")
        sink = {"b": ((), PORT_SCRATCH, _SCRATCH_GET, ()),
                "w": (_PCI_LINE, 0xCFC, ("mov edx, 0xcfc", "xor eax, eax", "!in ax, dx"),
                      _PCI_LINE + ("xor eax, eax", "mov edx, 0xcfc", "!out dx, ax") + _PCI_RESET),
                "d": ((), 0xCF8, ("mov edx, 0xcf8", "!in eax, dx"), _PCI_RESET)}[size]
        prep, port, readback, rest = sink
        out.append(Variant(f"fs: override, base 0x40, to port {port:#x}", seg_text, prepare=to_fs + prep,
                           operands=(f"mov {R}si, {BUF:#x}", f"mov dx, {port:#x}", *count), extras=(readback,),
                           restore=rest))
    # address-size prefix: 64-bit uses edi/ecx (upper halves stay random); 32-bit uses di/cx
    if bits == 64:
        ops = (f"mov {index}, 0", f"shl r{index}, 32", f"or r{index}, {BUF + 0x60:#x}", "mov dx, 0x2e0",
               *(("mov rcx, 0x1234567800000002",) if rep else ()))
        a_text = _string_text(op, size, 64, 32)
    else:
        ops = (f"mov {index}, {LOW_BUF + 0x10:#x}", "mov dx, 0x2e0", *(("mov cx, 2",) if rep else ()))
        a_text = _string_text(op, size, 32, 16)
    out.append(Variant("address-size prefix", "a32 " + pfx + a_text if bits == 64 else "a16 " + pfx + a_text,
                       operands=ops))
    return out


def _v_table_store(entry: str, bits: int) -> list[Variant]:
    """sgdt / sidt: memory destinations in BUF."""
    m = _mem(bits)
    out = [Variant("[reg]", f"{entry} [{m}]", operands=(f"mov {m}, {BUF + 0x60:#x}",)),
           Variant("[reg + disp8]", f"{entry} [{m} + 0x10]", operands=(f"mov {m}, {BUF + 0x60:#x}",)),
           Variant("[base + index*2 + disp]", f"{entry} [{m} + {'rcx' if bits == 64 else 'ecx'}*2 + 8]",
                   operands=(f"mov {m}, {BUF + 0x70:#x}", f"mov {'rcx' if bits == 64 else 'ecx'}, 4")),
           Variant("o16", f"o16 {entry} [{m}]", operands=(f"mov {m}, {BUF + 0x80:#x}",))]
    if bits == 64:
        out.append(Variant("[rip + disp32]", f"{entry} [{{rip:{BUF + 0xA0:#x}}}]"))
        out.append(Variant("unmapped destination", f"{entry} [rbx]", operands=(f"mov ebx, {UNMAPPED:#x}",),
                           expect=14))
    else:
        out.append(Variant("[disp32]", f"{entry} [{BUF + 0xA0:#x}]"))
        # (no segment-limit fault variant: Unicorn, like QEMU's TCG, does not check segment limits)
    return out


def _v_selector_store(entry: str, bits: int) -> list[Variant]:
    """sldt / str / smsw: register and memory destinations."""
    m = _mem(bits)
    out = [Variant("r16", f"{entry} ax"), Variant("r32", f"{entry} eax"),
           Variant("m16", f"{entry} word ptr [{m}]", operands=(f"mov {m}, {BUF + 0xB0:#x}",))]
    if bits == 64:
        out += [Variant("r64", f"{entry} rax"), Variant("r9 (REX.B)", f"{entry} r9"),
                Variant("r9w", f"{entry} r9w"),
                Variant("m16, unmapped", f"{entry} word ptr [rbx]", operands=(f"mov ebx, {UNMAPPED:#x}",),
                        expect=14)]
    else:
        out += [Variant("r32 edi", f"{entry} edi")]
    return out


def _v_ctrl_read(entry: str, bits: int) -> list[Variant]:
    reg = entry.split(".")[-1]
    if reg == "cr8" and bits == 32:
        return []
    R = "r" if bits == 64 else "e"
    dests = [f"{R}ax", f"{R}bp"] + (["r9", "r14"] if bits == 64 else ["edi"])
    prep: tuple[str, ...] = ()
    rest: tuple[str, ...] = ()
    if reg == "cr2":
        prep = ("mov eax, 0x12345000", f"!mov cr2, {R}ax")
    elif reg == "cr8":
        prep, rest = ("mov eax, 5", "!mov cr8, rax"), ("xor eax, eax", "!mov cr8, rax")
    elif reg.startswith("dr"):
        n = int(reg[2:])
        value = {0: 0x1000, 1: 0x2008, 2: 0x300C, 3: 0x4000, 4: 0xFFFF0FF1, 5: 0x00F10400,
                 6: 0xFFFF0FF2, 7: 0x00F20400}[n]
        wr = {4: 6, 5: 7}.get(n, n)
        prep = (f"mov eax, {value:#x}", f"!mov dr{wr}, {R}ax")
        rest = ("xor eax, eax", f"!mov dr{wr}, {R}ax") if wr < 4 else \
            ((f"mov eax, {0xFFFF0FF0:#x}", f"!mov dr6, {R}ax") if wr == 6 else ("mov eax, 0x400", f"!mov dr7, {R}ax"))
    out = [Variant(f"to {d}", f"mov {d}, {reg}", prepare=prep, restore=rest) for d in dests]
    if reg in ("dr4", "dr5"):  # aliases of dr6/dr7 unless CR4.DE is set: then #UD
        out.append(Variant("CR4.DE=1", f"mov {R}ax, {reg}", prepare=_SET_CR4_DE[bits], restore=_RESTORE_CR4,
                           expect=6))
    return out


def _v_ctrl_write(entry: str, bits: int) -> list[Variant]:
    reg = entry.split(".")[-1]
    if reg == "cr8" and bits == 32:
        return []
    R = "r" if bits == 64 else "e"
    src2 = "r10" if bits == 64 else "esi"
    readback = ((f"!mov {R}ax, {reg}",),) if reg != "cr8" else (("!mov rax, cr8",),)
    if reg == "cr0":
        rest = _RESTORE_CR0
        return [Variant("toggle TS", f"mov cr0, {R}ax", operands=(f"!mov {R}ax, cr0", "xor eax, 8"),
                        extras=readback, restore=rest),
                Variant(f"toggle MP|AM|WP from {src2}", f"mov cr0, {src2}",
                        operands=(f"!mov {src2}, cr0", f"xor {src2 + 'd' if bits == 64 else src2}, 0x50002"),
                        extras=readback, restore=rest),
                Variant("unchanged", f"mov cr0, {R}ax", operands=(f"!mov {R}ax, cr0",), extras=readback),
                Variant("NW without CD (no #GP on this CPU model)", f"mov cr0, {R}ax",
                        operands=(f"!mov {R}ax, cr0", "or eax, 0x20000000"), extras=readback, restore=rest)]
    if reg == "cr2":
        return [Variant("seeded value", f"mov cr2, {R}ax", extras=readback),
                Variant(f"from {src2}", f"mov cr2, {src2}", extras=readback)]
    if reg == "cr3":
        if bits == 64:
            return [Variant("reload the same tables", "mov cr3, rax", operands=(f"mov eax, {PML4:#x}",),
                            extras=readback),
                    Variant("PWT|PCD set", "mov cr3, r10", operands=(f"mov r10d, {PML4 | 0x18:#x}",),
                            extras=readback, restore=(f"mov eax, {PML4:#x}", "!mov cr3, rax"))]
        return [Variant("paging off: any value", "mov cr3, eax", operands=("mov eax, 0x12345000",), extras=readback,
                        restore=("xor eax, eax", "!mov cr3, eax")),
                Variant("from esi", "mov cr3, esi", operands=("mov esi, 0x5000",), extras=readback,
                        restore=("xor eax, eax", "!mov cr3, eax"))]
    if reg == "cr4":
        rest = _RESTORE_CR4
        return [Variant("toggle TSD|PCE|OSFXSR", f"mov cr4, {R}ax", operands=(f"!mov {R}ax, cr4", "xor eax, 0x304"),
                        extras=readback, restore=rest),
                Variant(f"toggle PGE from {src2}", f"mov cr4, {src2}",
                        operands=(f"!mov {src2}, cr4", f"xor {src2 + 'd' if bits == 64 else src2}, 0x80"),
                        extras=readback, restore=rest)]
        # (no reserved-bit variant: Unicorn accepts any CR4 value, and QEMU 7.2 hangs on one)
    if reg == "cr8":
        rest = ("xor eax, eax", "!mov cr8, rax")
        return [Variant("TPR 3", "mov cr8, rax", operands=("mov eax, 3",), extras=readback, restore=rest),
                Variant("TPR 15 from r10", "mov cr8, r10", operands=("mov r10d, 15",), extras=readback, restore=rest)]
    n = int(reg[2:])
    target = {4: 6, 5: 7}.get(n, n)
    if target < 4:
        values = [(0x12345678, "address"), (0x00ABC000, "another")]
        clear = ("xor eax, eax", f"!mov dr{target}, {R}ax")
    elif target == 6:
        values = [(0xFFFF0FF5, "B0|B2"), (0xFFFF4FF0, "BS")]
        clear = (f"mov eax, {0xFFFF0FF0:#x}", f"!mov dr6, {R}ax")
    else:
        values = [(0x00F10400, "RW/LEN bits, no enables"), (0x00000700, "LE|GE, no enables")]
        clear = ("mov eax, 0x400", f"!mov dr7, {R}ax")
    out = [Variant(f"{what}", f"mov {reg}, {R}ax", operands=(f"mov eax, {v:#x}",), extras=((f"!mov {R}ax, {reg}",),),
                   restore=clear) for v, what in values]
    out.append(Variant(f"{values[0][1]} from {src2}", f"mov {reg}, {src2}",
                       operands=(f"mov {src2}, {values[0][0]:#x}",), extras=((f"!mov {R}ax, {reg}",),), restore=clear))
    if bits == 64 and target in (6, 7):  # QEMU raises #GP(0) for dr6/dr7 and their dr4/dr5 aliases
        out.append(Variant("bits 63:32 set", f"mov {reg}, rax", operands=("mov rax, 0x100000400",), restore=clear,
                           expect=13))
    if n in (4, 5):
        out.append(Variant("CR4.DE=1", f"mov {reg}, {R}ax", prepare=_SET_CR4_DE[bits], restore=_RESTORE_CR4,
                           expect=6))
    return out


def _v_table_load(entry: str, bits: int) -> list[Variant]:
    """lgdt / lidt: the same table, a copy elsewhere, a shorter IDT limit."""
    m = _mem(bits)
    main, alt = (GDTR_MAIN, GDTR_ALT) if entry == "lgdt" else (IDTR_MAIN, IDTR_ALT)
    store = "sgdt" if entry == "lgdt" else "sidt"
    readback = ((f"mov ebx, {BUF + 0xE0:#x}", f"!{store} [{m}]", f"mov {'rax' if bits == 64 else 'eax'}, "
                 f"{'qword' if bits == 64 else 'dword'} ptr [{m} + 2]"),)
    restore = (f"mov ebx, {main:#x}", f"!{entry} [{m}]")
    out = [Variant("[reg], the same table", f"{entry} [{m}]", operands=(f"mov {m}, {main:#x}",), extras=readback),
           Variant("[reg + disp], another copy", f"{entry} [{m} + 0x10]", operands=(f"mov {m}, {alt - 0x10:#x}",),
                   extras=readback, restore=restore),
           Variant("o16", f"o16 {entry} [{m}]", operands=(f"mov {m}, {alt:#x}",), extras=readback, restore=restore)]
    if bits == 64:
        out.append(Variant("[rip + disp32]", f"{entry} [{{rip:{alt:#x}}}]", extras=readback, restore=restore))
        out.append(Variant("unmapped operand", f"{entry} [rbx]", operands=(f"mov ebx, {UNMAPPED:#x}",), expect=14))
    else:
        out.append(Variant("[disp32]", f"{entry} [{alt:#x}]", extras=readback, restore=restore))
        out.append(Variant("es: override", f"{entry} es:[ebx]", operands=(f"mov ebx, {main:#x}",), extras=readback))
    return out


def _v_ldt_tr(entry: str, bits: int) -> list[Variant]:
    m = _mem(bits)
    reg = "r9w" if bits == 64 else "cx"
    if entry == "lldt":
        readback = (("xor eax, eax", "!sldt eax"),)
        restore = (f"mov eax, {SEL_LDT:#x}", "!lldt ax")
        sels = [(SEL_LDT, "LDT", None), (0, "null", None), (SEL_DATA, "a data descriptor", 13),
                (SEL_TSS_B, "a TSS", 13)]
    else:
        readback = (("xor eax, eax", "!str eax"),)
        restore = (f"mov ebx, {GDT:#x}", "mov byte ptr [{bx} + 0x45], 0x89", "mov byte ptr [{bx} + 0x55], 0x89",
                   f"mov eax, {SEL_TSS_A:#x}", "!ltr ax")
        sels = [(SEL_TSS_B, "available TSS", None), (SEL_TSS_A, "busy TSS", 13), (SEL_DATA, "data", 13),
                (0, "null (QEMU loads it, no #GP)", None)]
    out = []
    for i, (sel, what, expect) in enumerate(sels):
        if i % 3 == 0:
            out.append(Variant(f"ax = {what}", f"{entry} ax", operands=(f"mov eax, {sel:#x}",), extras=readback,
                               restore=restore, expect=expect))
        elif i % 3 == 1:
            out.append(Variant(f"m16 = {what}", f"{entry} word ptr [{m}]",
                               operands=(f"mov {m}, {BUF + 0xC0:#x}", f"mov word ptr [{m}], {sel:#x}"),
                               extras=readback, restore=restore, expect=expect))
        else:
            out.append(Variant(f"{reg} = {what}", f"{entry} {reg}", operands=(f"mov {reg}, {sel:#x}",),
                               extras=readback, restore=restore, expect=expect))
    return out


def _v_lmsw_clts(entry: str, bits: int) -> list[Variant]:
    R = "r" if bits == 64 else "e"
    readback = ((f"!mov {R}ax, cr0",),)
    if entry == "clts":
        return [Variant("TS set", "clts", prepare=(f"!mov {R}ax, cr0", "or eax, 8", f"!mov cr0, {R}ax"),
                        extras=readback, restore=_RESTORE_CR0),
                Variant("TS clear", "clts", extras=readback, restore=_RESTORE_CR0)]
    m = _mem(bits)
    reg = "r9w" if bits == 64 else "si"
    full = "r9" if bits == 64 else "esi"
    return [Variant("ax: toggle TS", "lmsw ax", operands=(f"!mov {R}ax, cr0", "xor eax, 8"), extras=readback,
                    restore=_RESTORE_CR0),
            Variant("ax = 0: PE stays", "lmsw ax", operands=("xor eax, eax",), extras=readback, restore=_RESTORE_CR0),
            Variant("m16: MP|EM|TS", "lmsw word ptr [" + m + "]",
                    operands=(f"mov {m}, {BUF + 0xC8:#x}", f"mov word ptr [{m}], 0xf"), extras=readback,
                    restore=_RESTORE_CR0),
            Variant(f"{reg}: toggle MP", f"lmsw {reg}", operands=(f"!mov {full}, cr0", f"xor {reg}, 2"),
                    extras=readback, restore=_RESTORE_CR0)]


def _v_msr(entry: str, bits: int) -> list[Variant]:
    if entry == "rdmsr":
        msrs = [(MSR_EFER, "EFER", None), (MSR_SYSENTER_CS, "SYSENTER_CS", None), (0x1B, "APIC_BASE", None),
                (0x1A0, "MISC_ENABLE", None), (0x277, "PAT", None), (MSR_STAR, "STAR", None),
                (MSR_KERNEL_GS_BASE, "KERNEL_GS_BASE", None), (0x10, "TSC (masked: time)", None),
                (0x12345, "unknown MSR", None)]
        out = []
        for msr, what, expect in msrs:
            masks = {"ax": 0, "dx": 0} if msr == 0x10 else {}
            out.append(Variant(what, "rdmsr", operands=(f"mov ecx, {msr:#x}",), masks=masks, expect=expect))
        return out
    writes = [(MSR_SYSENTER_CS, "SYSENTER_CS", "mov eax, 0x1234", "xor edx, edx", None),
              (0x175, "SYSENTER_ESP", "mov eax, 0x5678", "xor edx, edx", None),
              (MSR_STAR, "STAR", "mov eax, 0x9abc", "mov edx, 0x230010", None),
              (MSR_KERNEL_GS_BASE, "KERNEL_GS_BASE", f"mov eax, {BUF:#x}", "xor edx, edx", None),
              (0x1A0, "MISC_ENABLE (emulated)", "mov eax, 0x81", "xor edx, edx", None),
              (MSR_EFER, "EFER: toggle NXE", None, None, None),
              (0x12345, "unknown MSR", "mov eax, 1", "xor edx, edx", None)]
    if bits == 64:
        writes.append((MSR_KERNEL_GS_BASE, "KERNEL_GS_BASE non-canonical (no #GP in QEMU)", "xor eax, eax",
                       "mov edx, 0x12345678", None))
    out = []
    for msr, what, lo, hi, expect in writes:
        if lo is None:
            ops = (f"mov ecx, {msr:#x}", "!rdmsr", "xor eax, 0x800")
        else:
            ops = (f"mov ecx, {msr:#x}", lo, hi)
        out.append(Variant(what, "wrmsr", prepare=_save_msr(msr), operands=ops, extras=(_rdmsr_extra(msr),),
                           restore=_restore_msr(msr), expect=expect))
    return out


def _v_simple(entry: str, bits: int) -> list[Variant]:
    """Instructions with no operands worth varying, and the ones qemu64 does not have."""
    R = "r" if bits == 64 else "e"
    m = _mem(bits)
    if entry in ("wbinvd", "invd"):
        return [Variant("IF=0", entry), Variant("IF=1", entry, if_on=True)]
    if entry == "monitor":
        return [Variant("eax/rax = buffer (qemu64: no MONITOR)", "monitor", operands=(f"mov {R}ax, {BUF:#x}",
                                                                                  "xor ecx, ecx", "xor edx, edx"),
                        expect=6)]
    if entry == "mwait":
        return [Variant("qemu64: no MWAIT", "mwait", operands=("xor eax, eax", "xor ecx, ecx"), expect=6)]
    if entry in ("xsetbv", "xgetbv"):
        ops = ("xor ecx, ecx", "mov eax, 1", "xor edx, edx") if entry == "xsetbv" else ("xor ecx, ecx",)
        return [Variant("XCR0 (CR4.OSXSAVE=0, qemu64: no XSAVE)", entry, operands=ops, expect=6)]
    if entry == "invpcid":
        return [Variant("type 0 (qemu64: no INVPCID)", f"invpcid {R}ax, xmmword ptr [{m}]",
                        operands=("xor eax, eax", f"mov {m}, {BUF:#x}"), expect=6)]
    if entry in ("clac", "stac"):
        return [Variant("qemu64: no SMAP", entry, expect=6)]
    if entry == "rdpmc":
        return [Variant("counter 0", "rdpmc", operands=("xor ecx, ecx",), masks={"ax": 0, "dx": 0}, expect=6)]
    if entry == "rdtsc":
        return [Variant("IF=0 (eax/edx masked: time)", "rdtsc", masks=_TIME),
                Variant("IF=1 (eax/edx masked: time)", "rdtsc", if_on=True, masks=_TIME)]
    if entry == "rdtscp":
        return [Variant("eax/edx masked: time", "rdtscp", masks=_TIME, expect=6)]
    if entry == "cpuid":
        leaves = [(0, 0, "leaf 0"), (1, 0, "leaf 1"), (7, 0, "leaf 7.0"), (0xD, 1, "leaf 0xd.1"),
                  (0x80000001, 0, "leaf 0x80000001"), (0x40000000, 0, "hypervisor leaf"),
                  (0x1234, 0, "out of range")]
        out = []
        for leaf, sub, what in leaves:
            if bits == 64:  # cpuid reads eax/ecx only: the upper halves are random
                ops = ("shl rax, 32", f"or rax, {leaf:#x}" if leaf < 0x80000000 else f"mov eax, {leaf:#x}",
                       "shl rcx, 32", f"or rcx, {sub:#x}")
            else:
                ops = (f"mov eax, {leaf:#x}", f"mov ecx, {sub:#x}")
            out.append(Variant(what, "cpuid", operands=ops))
        return out
    if entry == "hlt":
        return [Variant("IF=1, the timer IRQ0 ends it", "hlt", if_on=True,
                        prepare=("mov al, 0xfe", "!out 0x21, al"), extras=((f"mov ebx, {V_TICKS:#x}",
                                                                            "mov eax, dword ptr [" + m + "]"),),
                        restore=("mov al, 0xff", "!out 0x21, al"))]
    if entry == "invlpg":
        out = [Variant("[reg]", f"invlpg byte ptr [{m}]", operands=(f"mov {m}, {BUF:#x}",)),
               Variant("[base + index*4 + 8]", f"invlpg byte ptr [{m} + {R}cx*4 + 8]",
                       operands=(f"mov {m}, {BUF:#x}", "mov ecx, 0x100")),
               Variant("unmapped address", f"invlpg byte ptr [{m}]", operands=(f"mov {m}, {UNMAPPED:#x}",))]
        if bits == 64:
            out.append(Variant("[rip + disp32]", f"invlpg byte ptr [{{rip:{BUF:#x}}}]"))
        else:
            out.append(Variant("[disp32]", f"invlpg byte ptr [{BUF:#x}]"))
        return out
    if entry == "swapgs":
        if bits == 32:
            return []
        read_both = (("mov ecx, 0xc0000101", "!rdmsr", "{EDXEAX}"), ("mov ecx, 0xc0000102", "!rdmsr", "{EDXEAX}"))
        setup = ("mov ecx, 0xc0000102", f"mov eax, {BUF:#x}", "xor edx, edx", "!wrmsr")
        clear = ("mov ecx, 0xc0000102", "xor eax, eax", "xor edx, edx", "!wrmsr",
                 "mov ecx, 0xc0000101", "!wrmsr")
        return [Variant("KERNEL_GS_BASE = buffer", "swapgs", prepare=setup, extras=read_both, restore=clear),
                Variant("then read gs:[0]", "swapgs", prepare=setup,
                        extras=(("xor ebx, ebx", "mov rax, qword ptr gs:[rbx]"),) + read_both, restore=clear)]
    raise GuestGenError(f"no variants for {entry!r}")


def _v_descriptor_query(entry: str, bits: int) -> list[Variant]:
    m = _mem(bits)
    if entry in ("lar", "lsl"):
        forms = [("r32, r32", f"{entry} eax, ecx", "ecx"), ("r16, r16", f"{entry} ax, cx", "ecx"),
                 ("r32, m16", f"{entry} eax, word ptr [{m}]", None)]
        if bits == 64:
            forms += [("r64, m16", f"{entry} r9, word ptr [rbx]" if entry == "lsl" else "lar r9, word ptr [rbx]", None),
                      ("r11d, r12d", f"{entry} r11d, r12d", "r12d"), ("r64, r32", f"{entry} rax, ecx", "ecx")]
    else:
        forms = [("r16", f"{entry} ax", "eax"), ("m16", f"{entry} word ptr [{m}]", None)]
        if bits == 64:
            forms.append(("r9w", f"{entry} r9w", "r9d"))
    out = []
    for i, (sel, what) in enumerate(_selectors_cycle(bits)):
        form, text, src = forms[i % len(forms)]
        ops = (f"mov {src}, {sel:#x}",) if src else (f"mov {m}, {BUF + 0xD0:#x}", f"mov word ptr [{m}], {sel:#x}")
        out.append(Variant(f"{form}, {what} {sel:#x}", text, operands=ops))
    return out


def _v_sreg(entry: str, bits: int) -> list[Variant]:
    kind, sreg = entry.rsplit(".", 1)
    legacy_only = sreg in ("es", "cs", "ss", "ds") and kind in ("push", "pop")
    if bits == 64 and legacy_only:
        return []
    m = _mem(bits)
    alt = () if sreg == "cs" else (f"mov eax, {SEL_DATA_ALT:#x}", f"!mov {sreg}, eax")
    if kind == "mov.from":
        out = [Variant("r32", f"mov eax, {sreg}"), Variant("r16", f"mov ax, {sreg}"),
               Variant("m16", f"mov word ptr [{m}], {sreg}", operands=(f"mov {m}, {BUF + 0xD8:#x}",))]
        if bits == 64:
            out += [Variant("r64", f"mov rax, {sreg}"), Variant("r9 (REX.B)", f"mov r9, {sreg}"),
                    Variant("r9w", f"mov r9w, {sreg}")]
        if alt:
            out.append(Variant(f"r32 after mov {sreg}, 0x38", f"mov esi, {sreg}", prepare=alt))
        return out
    if kind == "push":
        out = [Variant("native width", f"push {sreg}", pushes=True),
               Variant("o16", f"o16 push {sreg}", pushes=True)]
        if alt:
            out.append(Variant(f"after mov {sreg}, 0x38", f"push {sreg}", prepare=alt, pushes=True))
        return out
    W = bits // 8
    sels = [(SEL_DATA_ALT, "alternate flat data", None), (SEL_DATA, "kernel data", None)]
    if sreg != "ss" or bits == 64:
        sels.append((0, "null", None))
    if sreg in ("fs", "gs"):
        sels.append((SEL_DATA_BASE40, "base 0x40", None))
    sels += [(SEL_NOT_PRESENT, "not present", 12 if sreg == "ss" else 11), (0xFFF8, "beyond the GDT limit", 13)]
    if sreg == "ss":
        sels += [(SEL_CODE, "code segment", 13), (SEL_UDATA | 3, "DPL3 data", 13)]

    def read_through(sel: int) -> tuple[tuple[str, ...], ...]:
        """fs/gs with base 0x40: read through the segment (before the reset), so the base is visible too."""
        if sel != SEL_DATA_BASE40:
            return ()
        return ((f"mov ebx, {BUF:#x}", f"mov eax, dword ptr {sreg}:[{m}]"),)

    out = []
    if kind == "pop":
        for i, (sel, what, expect) in enumerate(sels):
            o16 = i % 3 == 2
            out.append(Variant(f"{'o16 ' if o16 else ''}{what} {sel:#x}", ("o16 " if o16 else "") + f"pop {sreg}",
                               stack=((2 if o16 else W, sel),), expect=expect, extras=read_through(sel)))
        return out
    forms = [("r32", f"mov {sreg}, eax", ("mov eax, {sel}",)), ("r16", f"mov {sreg}, ax", ("mov eax, {sel}",)),
             ("m16", f"mov {sreg}, word ptr [{m}]", (f"mov {m}, {BUF + 0xDC:#x}", f"mov word ptr [{m}], {{sel}}"))]
    if bits == 64:
        forms += [("r9d", f"mov {sreg}, r9d", ("mov r9d, {sel}",)), ("r64", f"mov {sreg}, rax", ("mov eax, {sel}",))]
    for i, (sel, what, expect) in enumerate(sels):
        form, text, ops = forms[i % len(forms)]
        out.append(Variant(f"{form} = {what} {sel:#x}", text, operands=tuple(o.replace("{sel}", hex(sel)) for o in ops),
                           expect=expect, extras=read_through(sel)))
    return out


def _v_iret(entry: str, bits: int) -> list[Variant]:
    if entry == "iretq" and bits == 32:
        return []
    text = {"iret16": "iret", "iretd": "iretd", "iretq": "iretq"}[entry]
    w = {"iret16": 2, "iretd": 4, "iretq": 8}[entry]
    images = [(0x0AD7 | 0x200, "IF=1"), (0x08D6, "IF=0, arithmetic flags"), (0x3602, "IOPL3|DF|IF")]
    out = []
    for flags, what in images:
        ip = "pad" if w == 2 else "resume"
        frame: list[tuple[int, object]] = [(w, ip), (w, SEL_CODE), (w, flags)]
        if bits == 64:  # 64-bit mode always pops SS:RSP
            frame += [(w, "low_sp" if w == 2 else "sp_after"), (w, SEL_DATA)]
        out.append(Variant(f"same ring, {what}", text, stack=tuple(reversed(frame)), expect=None))
    if w != 2:  # to ring 3, which comes back through int 0x30
        user, cs = ("user64", SEL_UCODE64 | 3) if bits == 64 else ("user32", SEL_UCODE32 | 3)
        frame = [(w, user), (w, cs), (w, 0x0202), (w, USTACK_TOP), (w, SEL_UDATA | 3)]
        out.append(Variant("to ring 3", text, stack=tuple(reversed(frame))))
    return out


def _v_sys(entry: str, bits: int) -> list[Variant]:
    if entry in ("sysretq", "sysexitq") and bits == 32:
        return []
    star = (f"mov ecx, {MSR_STAR:#x}", "xor eax, eax", f"mov edx, {(SEL_UCODE32 << 16) | SEL_CODE:#x}", "!wrmsr")
    sce_on = (f"mov ecx, {MSR_EFER:#x}", "!rdmsr", "or eax, 1", "!wrmsr")
    sce_off = (f"mov ecx, {MSR_EFER:#x}", "!rdmsr", "and eax, 0xfffffffe", "!wrmsr")
    star_clear = (f"mov ecx, {MSR_STAR:#x}", "xor eax, eax", "xor edx, edx", "!wrmsr")
    R = "r" if bits == 64 else "e"
    if entry in ("sysret", "sysretq"):
        text = entry
        fault = Variant("EFER.SCE=0", text, operands=(f"mov {R}cx, {{user32}}" if entry == "sysret" else
                                                       "mov rcx, {user64}",), expect=6)
        if entry == "sysret" and bits == 64:
            return [fault]   # returns to compatibility mode: not generated (needs 32-bit code in a 64-bit guest)
        user = "user64" if entry == "sysretq" else "user32"
        ops = (f"mov {R}cx, {{{user}}}",) + (("mov r11d, 0x202",) if bits == 64 else ())
        return [Variant("EFER.SCE=1, to ring 3", text, prepare=star + sce_on, operands=ops,
                        restore=sce_off + star_clear), fault]
    # sysexit / sysexitq: SYSENTER_CS = 0x08 since boot
    user = "user64" if bits == 64 else "user32"
    ops = (f"mov {R}dx, {{{user}}}", f"mov {R}cx, {USTACK_TOP:#x}")
    if bits == 64:  # qemu64 is an AMD CPU: sysenter/sysexit are #UD in long mode
        return [Variant("long mode on an AMD CPU", entry, operands=ops, expect=6)]
    cs_zero = (f"mov ecx, {MSR_SYSENTER_CS:#x}", "xor eax, eax", "xor edx, edx", "!wrmsr")
    cs_back = (f"mov ecx, {MSR_SYSENTER_CS:#x}", f"mov eax, {SEL_CODE:#x}", "xor edx, edx", "!wrmsr")
    return [Variant("to ring 3", "sysexit", operands=ops),
            Variant("SYSENTER_CS = 0", "sysexit", prepare=cs_zero, operands=ops, restore=cs_back, expect=13)]


def _v_if(entry: str, bits: int) -> list[Variant]:
    if entry == "cli":
        return [Variant("IF=1", "cli", if_on=True), Variant("IF=0", "cli")]
    return [Variant("IF=0", "sti"), Variant("IF=1", "sti", if_on=True)]


def variants_for(entry: str, bits: int) -> list[Variant]:
    """The operand forms generated for ``entry`` in ``bits``-bit code ([] if it does not exist there)."""
    if entry in ("cli", "sti"):
        return _v_if(entry, bits)
    if entry in ("pushf16", "pushfd", "pushfq", "popf16", "popfd", "popfq"):
        return _v_flags(entry, bits)
    if entry.startswith(("in8", "in16", "in32", "out8", "out16", "out32")):
        return _v_port(entry, bits)
    if re.fullmatch(r"(rep\.)?(ins|outs)[bwd]", entry):
        return _v_string(entry, bits)
    if entry in ("sgdt", "sidt"):
        return _v_table_store(entry, bits)
    if entry in ("sldt", "str", "smsw"):
        return _v_selector_store(entry, bits)
    if entry.startswith("mov.from.cr") or entry.startswith("mov.from.dr"):
        return _v_ctrl_read(entry, bits)
    if entry.startswith("mov.to.cr") or entry.startswith("mov.to.dr"):
        return _v_ctrl_write(entry, bits)
    if entry in ("lgdt", "lidt"):
        return _v_table_load(entry, bits)
    if entry in ("lldt", "ltr"):
        return _v_ldt_tr(entry, bits)
    if entry in ("lmsw", "clts"):
        return _v_lmsw_clts(entry, bits)
    if entry in ("rdmsr", "wrmsr"):
        return _v_msr(entry, bits)
    if entry in ("lar", "lsl", "verr", "verw"):
        return _v_descriptor_query(entry, bits)
    if re.fullmatch(r"(mov\.from|mov\.to|push|pop)\.(es|cs|ss|ds|fs|gs)", entry):
        return _v_sreg(entry, bits)
    if entry in ("iret16", "iretd", "iretq"):
        return _v_iret(entry, bits)
    if entry in ("sysret", "sysretq", "sysexit", "sysexitq"):
        return _v_sys(entry, bits)
    return _v_simple(entry, bits)


def entries_for(bits: int) -> list[str]:
    """Catalog entries that exist in ``bits``-bit code, in catalog order."""
    return [e.name for e in ENTRIES if variants_for(e.name, bits)]


# --------------------------------------------------------------------------- scaffolding code

_ERROR_CODE_VECTORS = frozenset((8, 10, 11, 12, 13, 14, 17, 21, 29, 30))
_STRINGS = {"S_F": " f=", "S_SP": " sp=", "S_H": " h=", "S_K": " k=", "S_X": " x=", "S_R": " r=", "S_S": " s=",
            "S_FAULT": " !", "S_E": " e=", "S_IP": " ip=", "S_UNEXP": " UNEXPECTED\n", "S_PASS": PASS_MARKER.decode()}
V_BLOCK = DATA + 0x4040     # the digest's inputs: register block and the instruction's stack pointer
V_SPI = DATA + 0x4048
V_LINE = DATA + 0x4400      # the console line being built: length, then the bytes
LINE_MAX = 0x300


def _string_addresses() -> dict[str, int]:
    out, at = {}, STRINGS
    for name, text in _STRINGS.items():
        out[name] = at
        at += len(text) + 1
    out["S_BANNER"] = at
    return out


def _capture(bits: int) -> list[str]:
    """Right after the instruction: all GPRs, then the flags (pushf: the virtual IF in pv), then 6 selector slots."""
    pushes = [f"push {r}" for r in _GPRS[bits]]
    return pushes + ["!{pushf}", "lea {sp}, [{sp} - 6*{W}]", "call F_capture"]


def _sregs_to_slots(base_disp: int) -> list[str]:
    """Store cs ss ds es fs gs into the slots at [sp + base_disp] (stack-relative: DS may be null)."""
    out = []
    for k, sreg in enumerate(_SREG_ORDER):
        out += [f"!mov eax, {sreg}", f"mov dword ptr [{{sp}} + {base_disp} + {k}*{{W}}], eax"]
    return out


def _helpers(c: _Chunk, bits: int, verbose: bool, fuzz_area: bool = False) -> None:
    """Printing, digest, fault and ring-3 return paths; everything a case calls. ``fuzz_area``: the
    checksum covers the woven code's buffer too."""
    W = bits // 8
    nreg = len(_GPRS[bits])
    block = (nreg + 1) * W
    L = c.line

    def emit(*lines: str) -> None:
        for line in lines:
            L(line)

    # Output is line-buffered and written with one rep outsb per line: in pv that is one hypercall per
    # line instead of one per character (the console is most of a pv run's time).
    c.func("F_putc", lambda: emit(
        "push {dx}", "push {bx}", "mov ebx, {V_LINE}", "mov edx, dword ptr [{bx}]",
        "mov byte ptr [{bx} + {dx} + 8], al", "inc edx", "mov dword ptr [{bx}], edx", "cmp al, 10", "je L_putc_flush",
        f"cmp edx, {LINE_MAX}", "jb L_putc_done", "L_putc_flush:", "call F_flush", "L_putc_done:", "pop {bx}",
        "pop {dx}", "ret"))
    c.func("F_flush", lambda: emit(
        "push {ax}", "push {cx}", "push {dx}", "push {si}", "mov esi, {V_LINE}", "mov ecx, dword ptr [{si}]",
        "mov dword ptr [{si}], 0", "add esi, 8", f"mov edx, {PORT_COM1:#x}", "cld", "!rep outsb dx, byte ptr [{si}]",
        "pop {si}", "pop {dx}", "pop {cx}", "pop {ax}", "ret"))
    c.func("F_puthex", lambda: emit(
        "push {bx}", "push {si}", "mov {bx}, {ax}", "mov esi, ecx",
        "L_puthex_loop:", "dec esi", "mov ecx, esi", "shl ecx, 2", "mov {ax}, {bx}", "shr {ax}, cl", "and eax, 15",
        "movzx eax, byte ptr [{ax} + {HEXDIGITS}]", "call F_putc", "test esi, esi", "jnz L_puthex_loop",
        "pop {si}", "pop {bx}", "ret"))
    def putnum() -> None:  # {ax}: printed in as few hex digits as it takes (the console is the slow part in pv)
        emit("push {bx}", "push {si}", "mov {bx}, {ax}", f"mov esi, {2 * W}",
             "L_putnum_skip:", "cmp esi, 1", "je L_putnum_print", "mov ecx, esi", "dec ecx", "shl ecx, 2",
             "mov {ax}, {bx}", "shr {ax}, cl", "and eax, 15", "jnz L_putnum_print", "dec esi", "jmp L_putnum_skip",
             "L_putnum_print:", "mov ecx, esi", "mov {ax}, {bx}", "pop {si}", "pop {bx}", "jmp F_puthex")
    c.func("F_putnum", putnum)
    c.func("F_putsigned", lambda: emit(  # {ax} as a signed number: -8, 0, 10
        "test {ax}, {ax}", "jns F_putnum", "neg {ax}", "push {ax}", "mov al, 0x2d", "call F_putc", "pop {ax}",
        "jmp F_putnum"))
    c.func("F_puts", lambda: emit(
        "push {si}", "L_puts_loop:", "mov al, byte ptr [{si}]", "test al, al", "jz L_puts_done", "call F_putc",
        "inc {si}", "jmp L_puts_loop", "L_puts_done:", "pop {si}", "ret"))
    c.func("F_print_x", lambda: emit("push {ax}", "mov esi, {S_X}", "call F_puts", "pop {ax}", "call F_putnum", "ret"))
    c.func("F_case_begin", lambda: emit(
        "mov ebx, {V_CASE}", "mov dword ptr [{bx}], eax", "mov ebx, {V_RESUME}", "mov {ptr} ptr [{bx}], {cx}",
        "push {ax}", "mov al, 0x63", "call F_putc", "pop {ax}", "mov ecx, 2", "call F_puthex", "ret"))
    c.func("F_case_end", lambda: emit("mov al, 10", "call F_putc", "ret"))
    def reload(*sregs: str) -> list[str]:
        """Load the kernel data selector into each of ``sregs`` that holds another (a load is a hypercall in pv)."""
        out = []
        for sreg in sregs:
            same = c.fresh("L_same")
            out += [f"!mov eax, {sreg}", f"cmp ax, {SEL_DATA:#x}", f"je {same}", f"mov eax, {SEL_DATA:#x}",
                    f"!mov {sreg}, eax", f"{same}:"]
        return out

    c.func("F_reset", lambda: emit(*reload("ds", "es", "fs", "gs", "ss"), "push 2", "!{popf}", "ret"))
    c.func("F_no_resume", lambda: emit("mov ebx, {V_RESUME}", "mov {ptr} ptr [{bx}], 0", "ret"))
    c.func("F_resume", lambda: emit(
        "mov ebx, {V_RESUME}", "mov {ax}, {ptr} ptr [{bx}]", "test {ax}, {ax}", "jz L_unexpected",
        "mov {sp}, {CASE_SP}", "jmp {ax}",
        "L_unexpected:", "mov esi, {S_UNEXP}", "call F_puts", "mov al, 0x3f", "!out 0xf4, al",
        "L_unexpected_spin:", "jmp L_unexpected_spin"))
    c.func("F_capture", lambda: emit(
        *_sregs_to_slots(W), "lea {si}, [{sp} + {W}]", f"lea {{di}}, [{{si}} + {6 * W + block}]", "xor edx, edx",
        "jmp F_finish"))

    def finish() -> None:
        emit(*reload("ds", "es"), "mov ebx, {V_SREGS}")
        for k in range(6):
            emit(f"mov eax, dword ptr [{{si}} + {k * W}]", f"mov word ptr [{{bx}} + {2 * k}], ax")
        emit(f"lea {{si}}, [{{si}} + {6 * W}]", "mov ebx, {V_BLOCK}", "mov {ptr} ptr [{bx}], {si}",
             "mov ebx, {V_SPI}", "mov {ptr} ptr [{bx}], {di}", "test {dx}, {dx}", "jz F_digest",
             "push {dx}", "mov esi, {S_FAULT}", "call F_puts", "mov {dx}, {ptr} ptr [{sp}]",
             "mov {ax}, {ptr} ptr [{dx}]", "mov ecx, 2", "call F_puthex",
             "mov esi, {S_E}", "call F_puts", "mov {dx}, {ptr} ptr [{sp}]", "mov {ax}, {ptr} ptr [{dx} + {W}]",
             "call F_putnum",
             "mov esi, {S_IP}", "call F_puts", "pop {dx}", "mov {ax}, {ptr} ptr [{dx} + 2*{W}]",
             "call F_putnum", "jmp F_digest")
    c.func("F_finish", finish)

    def digest() -> None:
        emit("mov esi, {S_F}", "call F_puts", "mov ebx, {V_BLOCK}", "mov {bx}, {ptr} ptr [{bx}]",
             "mov eax, dword ptr [{bx}]", "call F_putnum",
             "mov esi, {S_SP}", "call F_puts", "mov ebx, {V_SPI}", "mov {ax}, {ptr} ptr [{bx}]",
             "sub {ax}, {CASE_SP}", "call F_putsigned",
             # hash of the masked registers (block slots 1..n) and the selectors
             "mov ebx, {V_CASE}", "mov ebx, dword ptr [{bx}]", f"imul ebx, ebx, {nreg * W}", "add ebx, {MASKS}",
             "mov esi, {V_BLOCK}", "mov {si}, {ptr} ptr [{si}]", "xor eax, eax", "mov ecx, 1",
             "L_hash_loop:", "mov {dx}, {ptr} ptr [{si} + {cx}*{W}]", "and {dx}, {ptr} ptr [{bx} + {cx}*{W} - {W}]",
             "imul eax, eax, 31", "add eax, edx")
        if bits == 64:
            emit("shr rdx, 32", "imul eax, eax, 31", "add eax, edx")
        emit("inc ecx", f"cmp ecx, {nreg}", "jbe L_hash_loop", "mov esi, {V_SREGS}", "xor ecx, ecx",
             "L_hash_sregs:", "movzx edx, word ptr [{si} + {cx}*2]", "imul eax, eax, 31", "add eax, edx", "inc ecx",
             "cmp ecx, 6", "jb L_hash_sregs",
             "push {ax}", "mov esi, {S_H}", "call F_puts", "pop {ax}", "mov ecx, 8", "call F_puthex",
             "call F_checksum", "push {ax}", "mov esi, {S_K}", "call F_puts", "pop {ax}", "mov ecx, 8",
             "call F_puthex")
        if verbose:  # every register (masked), in rax, rcx, ... order, and the selectors
            emit("mov esi, {S_R}", "call F_puts", f"mov ecx, {nreg}",
                 "L_verbose_regs:", "push {cx}", "mov ebx, {V_CASE}", "mov ebx, dword ptr [{bx}]",
                 f"imul ebx, ebx, {nreg * W}", "add ebx, {MASKS}", "mov esi, {V_BLOCK}",
                 "mov {si}, {ptr} ptr [{si}]", "mov {ax}, {ptr} ptr [{si} + {cx}*{W}]",
                 "and {ax}, {ptr} ptr [{bx} + {cx}*{W} - {W}]", f"mov ecx, {2 * W}", "call F_puthex",
                 "mov al, 0x2c", "call F_putc", "pop {cx}", "dec ecx", "jnz L_verbose_regs",
                 "mov esi, {S_S}", "call F_puts", "xor ecx, ecx",
                 "L_verbose_sregs:", "push {cx}", "mov esi, {V_SREGS}", "movzx eax, word ptr [{si} + {cx}*2]",
                 "mov ecx, 4", "call F_puthex", "mov al, 0x3a", "call F_putc", "pop {cx}", "inc ecx", "cmp ecx, 6",
                 "jb L_verbose_sregs")
        emit("ret")
    c.func("F_digest", digest)
    fuzz_ck = ("mov esi, {FUZZ_BUF}", f"mov ecx, {FUZZ_SIZE}", "call F_ck") if fuzz_area else ()
    c.func("F_checksum", lambda: emit(
        "xor eax, eax", "mov esi, {BUF}", f"mov ecx, {BUF_SIZE}", "call F_ck", *fuzz_ck, "mov esi, {LOW_BUF}",
        f"mov ecx, {BUF_SIZE}", "call F_ck", "mov esi, {GDT}",
        f"mov ecx, {GDT_LIMIT + 1}", "call F_ck", "mov ebx, {V_SPI}", "mov {si}, {ptr} ptr [{bx}]",
        f"mov ebx, {CASE_SP - STACK_WINDOW:#x}", "cmp {si}, {bx}", "jb L_ck_clamp", "mov ebx, {STACK_TOP}",
        "cmp {si}, {bx}", "jbe L_ck_have", "L_ck_clamp:", "mov esi, {CASE_SP}", "L_ck_have:", "mov ecx, {STACK_TOP}",
        "sub ecx, esi", "call F_ck", "ret"))
    c.func("F_ck", lambda: emit(
        "L_ck_loop:", "test ecx, ecx", "jz L_ck_done", "movzx edx, byte ptr [{si}]", "imul eax, eax, 31",
        "add eax, edx", "inc {si}", "dec ecx", "jmp L_ck_loop", "L_ck_done:", "ret"))

    # faults: vector stubs -> F_fault; the frame's flags stand in for pushf; then resume with the next case
    vec_off = 6 * W + block
    frame_flags = nreg * W + 4 * W          # after the GPR pushes: vector, error, ip, cs, flags
    if bits == 64:
        sp_at_fault = (f"mov rdi, qword ptr [rsp + {vec_off + 5 * W}]",)   # the frame's rsp
    else:
        sp_at_fault = (f"lea edi, [esp + {vec_off + 5 * W}]",)            # above eip, cs, eflags
    c.func("F_fault", lambda: emit(
        *(f"push {r}" for r in _GPRS[bits]), f"push {{ptr}} ptr [{{sp}} + {frame_flags}]",
        "lea {sp}, [{sp} - 6*{W}]", *_sregs_to_slots(0), "mov {si}, {sp}", *sp_at_fault,
        f"lea {{dx}}, [{{sp}} + {vec_off}]", "call F_finish", "jmp F_resume"))
    for v in range(IDT_VECTORS):
        if v in (IRQ_BASE, USER_RETURN_VECTOR):
            continue
        c.func(f"F_isr_{v}", lambda v=v: emit(*(() if v in _ERROR_CODE_VECTORS else ("push 0",)), f"push {v}",
                                               "jmp F_fault"))
    c.func("F_irq0", lambda: emit("push {ax}", "push {bx}", "mov al, 0x20", "!out 0x20, al", "mov ebx, {V_TICKS}",
                                  "inc dword ptr [{bx}]", "pop {bx}", "pop {ax}", "!{iret}"))
    # ring 3: the user stub captures like a case does, then int 0x30 brings it back to ring 0
    user = "F_user64" if bits == 64 else "F_user32"
    c.func(user, lambda: emit(*(f"push {r}" for r in _GPRS[bits]), "!{pushf}", "lea {sp}, [{sp} - 6*{W}]",
                              *_sregs_to_slots(0), "mov {si}, {sp}", f"int {USER_RETURN_VECTOR:#x}"))
    c.func("F_user_return", lambda: emit(f"lea {{di}}, [{{si}} + {6 * W + block}]", "xor edx, edx", "call F_finish",
                                         "jmp F_resume"))
    c.func("F_gate_target", lambda: emit("ret"))


def _boot(c: _Chunk, bits: int, main_va: int, stack_first: bool = True) -> None:
    """The PVH entry (32-bit protected mode, paging off): own GDT; 64-bit guests enter long mode.

    ``stack_first``: load esp before anything else. The PVH entry leaves esp undefined, and the
    translator's lowerings push on the guest's stack; ``False`` starts with lgdt, as Linux's
    pvh_start_xen does."""
    def body() -> None:
        if stack_first:
            c.asm(f"mov esp, {CASE_SP:#x}")
        c.line(f"!lgdt [{GDTR_MAIN:#x}]")
        if bits == 64:
            for line in ("!mov eax, cr4", "or eax, 0x20", "!mov cr4, eax", f"mov eax, {PML4:#x}", "!mov cr3, eax",
                         f"mov ecx, {MSR_EFER:#x}", "!rdmsr", "or eax, 0x100", "!wrmsr", "!mov eax, cr0",
                         "or eax, 0x80000000", "!mov cr0, eax"):
                c.line(line)
        c.asm(".byte " + ", ".join(f"{b:#x}" for b in b"\xea" + struct.pack("<IH", main_va, SEL_CODE)))  # ljmp
    c.func("_start", body)


def _main_prologue(c: _Chunk, bits: int) -> None:
    for line in (f"mov eax, {SEL_DATA:#x}", "!mov ds, eax", "!mov es, eax", "!mov fs, eax", "!mov gs, eax",
                 "!mov ss, eax", "mov {sp}, {CASE_SP}", "mov ebx, {IDTR_MAIN}", "!lidt [{bx}]",
                 "!mov {ax}, cr0", "mov ebx, {V_CR0}", "mov {ptr} ptr [{bx}], {ax}",
                 "!mov {ax}, cr4", "mov ebx, {V_CR4}", "mov {ptr} ptr [{bx}], {ax}"):
        c.line(line)
    # PIC pair: vectors 0x20/0x28, everything masked (the hlt case unmasks IRQ0 for itself)
    for port, value in ((0x20, 0x11), (0xA0, 0x11), (0x21, IRQ_BASE), (0xA1, IRQ_BASE + 8), (0x21, 4), (0xA1, 2),
                        (0x21, 1), (0xA1, 1), (0x21, 0xFF), (0xA1, 0xFF)):
        c.line(f"mov al, {value:#x}")
        c.line(f"!out {port:#x}, al")
    for line in (f"mov eax, {SEL_TSS_A:#x}", "!ltr ax", f"mov eax, {SEL_LDT:#x}", "!lldt ax",
                 f"mov ecx, {MSR_SYSENTER_CS:#x}", f"mov eax, {SEL_CODE:#x}", "xor edx, edx", "!wrmsr",
                 "mov esi, {S_BANNER}", "call F_puts"):
        c.line(line)


# --------------------------------------------------------------------------- one case

@dataclass(frozen=True)
class _Draw:
    """The random values of one case, drawn once so both assembler passes agree."""

    seeds: tuple[int, ...]
    ah: int          # SF ZF AF PF CF for sahf
    of: int


def _expand(line: str, bits: int) -> list[str]:
    if line == "{EDXEAX}":
        return ["shl rdx, 32", "mov eax, eax", "or rax, rdx"] if bits == 64 else \
            ["push edx", "call F_print_x", "pop eax"]
    return [line]


class _CaseEmitter:
    """Writes each case into the main chunk (its function-context pieces later, its iret16 pad into the low chunk)."""

    def __init__(self, main: _Chunk, low: _Chunk, bits: int, addr: Callable[[str], int]):
        self.main, self.low, self.bits, self.addr = main, low, bits, addr
        self.sp = "rsp" if bits == 64 else "esp"
        self.deferred: list[Callable[[], None]] = []
        self.insn_labels: dict[int, str] = {}

    def lines(self, chunk: _Chunk, lines: Iterable[str]) -> None:
        for line in lines:
            for part in _expand(line, self.bits):
                chunk.line(part)

    def stack_setup(self, chunk: _Chunk, items: Sequence[tuple[int, object]], value_of: Callable[[str], int]) -> None:
        """Build the words the instruction pops with lea + mov (neither touches the flags already set up)."""
        if not items:
            return
        total = sum(w for w, _ in items)
        chunk.asm(f"lea {self.sp}, [{self.sp} - {total}]")
        off = total
        for width, value in items:
            off -= width
            v = (value_of(value) if isinstance(value, str) else value) & ((1 << 8 * width) - 1)
            for k in range(0, width, 4):
                piece = min(4, width - k)
                part = (v >> 8 * k) & ((1 << 8 * piece) - 1)
                chunk.asm(f"mov {'word' if piece == 2 else 'dword'} ptr [{self.sp} + {off + k}], {part:#x}")

    def case(self, n: int, spec: CaseSpec, draw: _Draw) -> None:
        c, v, bits, W = self.main, spec.variant, self.bits, self.bits // 8
        after, resume, target = f"A_{n}", f"R_{n}", f"T_{n}"
        fn, fn_tail, fn_ret, pad = f"F_fn_{n}", f"F_fnt_{n}", f"L_fnret_{n}", f"P_pad_{n}"
        in_function = spec.context in (Context.FUNC_RET, Context.FUNC_END)
        enters_by_call = in_function and not v.pushes
        # where an iret frame returns to, and the stack pointer the instruction leaves
        resume_at = {Context.PLAIN: after, Context.BRANCH: after, Context.FUNC_RET: fn_ret,
                     Context.FUNC_END: fn_tail}[spec.context]
        fixed = {"sp_after": CASE_SP - (W if enters_by_call else 0), "low_sp": LOW_STACK_TOP}
        labels = {"resume": resume_at, "pad": pad, "user64": "F_user64", "user32": "F_user32"}
        value_of = lambda name: fixed[name] if name in fixed else self.addr(labels[name])  # noqa: E731

        c.asm(f"mov {self.sp}, {CASE_SP:#x}", f"mov eax, {n}", f"mov ecx, {self.addr(resume):#x}",
              "call F_case_begin")
        self.lines(c, v.prepare)
        for reg, value in zip(_GPRS[bits], draw.seeds):
            c.asm(f"mov {reg}, {value:#x}")
        self.lines(c, v.operands)
        if v.if_on:
            c.sensitive("sti")
        if v.df:
            c.asm("std")
        w = spec.weave
        if w is not None and spec.context is Context.BRANCH:   # the flags set next decide the "never" jcc
            self.weave(c, n, w.before)
        ax = _GPRS[bits][0]
        c.asm(f"push {ax}", "mov al, 0x7f", f"add al, {draw.of}", f"mov ah, {draw.ah:#x}", "sahf", f"pop {ax}")

        def place(chunk: _Chunk) -> None:
            self.stack_setup(chunk, v.stack, value_of)
            if w is not None:
                self.weave(chunk, n, w.before)
                chunk.label(f"W{n}_SITE")
            self.insn_labels[n] = chunk.sensitive(_fmt(v.insn, chunk.env), spec.entry)

        if spec.context is Context.PLAIN:
            place(c)
        elif spec.context is Context.BRANCH:    # the words to pop go first: the instruction itself is the target
            self.stack_setup(c, v.stack, value_of)
            never = "jae" if draw.ah & 1 else "jb"        # not taken under the flags just set
            c.asm(f"{never} {after}", f"jmp {target}", "int3")
            c.label(target)
            if w is not None:
                c.label(f"W{n}_SITE")
            self.insn_labels[n] = c.sensitive(_fmt(v.insn, c.env), spec.entry)
        else:
            c.asm(f"{'call' if enters_by_call else 'jmp'} {fn}")
            leave = "ret" if enters_by_call else f"jmp {after}"

            def function() -> None:
                if spec.context is Context.FUNC_RET:
                    c.func(fn, lambda: (place(c), c.label(fn_ret), c.asm(leave)))
                else:
                    c.func(fn, lambda: place(c))
                    c.func(fn_tail, lambda: c.asm(leave))
            self.deferred.append(function)
        c.label(after)
        if w is not None:
            c.label(f"W{n}_POST")
            self.weave(c, n, w.after)
            for name, body, sized in w.functions:
                self.deferred.append(lambda name=name, body=body, sized=sized: self.weave_function(n, name, body, sized))
        self.lines(c, _capture(bits))
        c.label(resume)
        c.asm(f"mov {self.sp}, {CASE_SP:#x}", "call F_no_resume")
        for snippet in v.extras:
            self.lines(c, snippet)
            c.asm("call F_print_x")
        c.asm("call F_reset")
        self.lines(c, v.restore)
        c.asm("call F_case_end")
        if any(value == "pad" for _w, value in v.stack):   # iret16 lands in low memory: capture there
            low = self.low
            low.func(pad, lambda: (self.lines(low, _capture(bits)[:-1]),
                                   low.asm(f"call {self.addr('F_capture'):#x}", f"jmp {self.addr(resume):#x}")))


    _LOCAL = re.compile(r"@(\w+)")

    def weave(self, chunk: _Chunk, n: int, lines: Iterable[str]) -> None:
        """Woven lines of case ``n``: ``@name`` becomes the label ``W<n>_name``."""
        for line in lines:
            line = self._LOCAL.sub(lambda m: f"W{n}_{m.group(1)}", line)
            if line.endswith(":") and re.fullmatch(r"W\d+_\w+:", line):
                chunk.label(line[:-1])
            else:
                chunk.line(line)

    def weave_function(self, n: int, name: str, body: Sequence[str], sized: bool) -> None:
        label = self._LOCAL.sub(lambda m: f"W{n}_{m.group(1)}", name)
        if sized:
            self.main.func(label, lambda: self.weave(self.main, n, body))
        else:
            self.main.label(label)
            self.weave(self.main, n, body)


# --------------------------------------------------------------------------- data, ELF

def _seg_desc(base: int, limit: int, access: int, flags: int) -> int:
    return ((limit & 0xFFFF) | ((base & 0xFFFFFF) << 16) | (access << 40) | (((limit >> 16) & 0xF) << 48)
            | (flags << 52) | ((base >> 24) << 56))


def _gate(offset: int, selector: int, access: int) -> bytes:
    low = (offset & 0xFFFF) | (selector << 16) | (access << 40) | (((offset >> 16) & 0xFFFF) << 48)
    return struct.pack("<Q", low)


def _gdt(bits: int, labels: Mapping[str, int]) -> bytes:
    code_flags = 0xA if bits == 64 else 0xC
    desc = {SEL_CODE: _seg_desc(0, 0xFFFFF, 0x9B, code_flags), SEL_DATA: _seg_desc(0, 0xFFFFF, 0x93, 0xC),
            SEL_UCODE32: _seg_desc(0, 0xFFFFF, 0xFB, 0xC), SEL_UDATA: _seg_desc(0, 0xFFFFF, 0xF3, 0xC),
            SEL_UCODE64: _seg_desc(0, 0xFFFFF, 0xFB, code_flags), SEL_UDATA2: _seg_desc(0, 0xFFFFF, 0xF3, 0xC),
            SEL_DATA_ALT: _seg_desc(0, 0xFFFFF, 0x93, 0xC),
            SEL_TSS_A: _seg_desc(TSS_A, 0x67, 0x89, 0), SEL_TSS_B: _seg_desc(TSS_B, 0x67, 0x89, 0),
            SEL_LDT: _seg_desc(LDT, 0xF, 0x82, 0),
            SEL_DATA_BASE40: _seg_desc(0x40, 0xFFFFF, 0x93, 0xC), SEL_NOT_PRESENT: _seg_desc(0, 0xFFFFF, 0x13, 0xC),
            SEL_DATA16: _seg_desc(0, 0xFFFF, 0x93, 0)}
    out = bytearray(GDT_LIMIT + 1)
    for sel, d in desc.items():
        struct.pack_into("<Q", out, sel, d)
    out[SEL_GATE:SEL_GATE + 8] = _gate(labels["F_gate_target"], SEL_CODE, 0x8C)
    return bytes(out)


def _idt(bits: int, labels: Mapping[str, int]) -> bytes:
    out = bytearray()
    for v in range(IDT_VECTORS):
        name = {IRQ_BASE: "F_irq0", USER_RETURN_VECTOR: "F_user_return"}.get(v, f"F_isr_{v}")
        access = 0xEE if v == USER_RETURN_VECTOR else 0x8E
        out += _gate(labels[name], SEL_CODE, access)
        if bits == 64:
            out += struct.pack("<Q", labels[name] >> 32)
    return bytes(out)


def _data(bits: int, labels: Mapping[str, int], rng: random.Random, masks: Sequence[Sequence[int]],
          banner: bytes, fuzz_area: bool = False) -> bytes:
    d = bytearray(DATA_SIZE)

    def put(va: int, raw: bytes) -> None:
        d[va - DATA:va - DATA + len(raw)] = raw

    if bits == 64:  # identity map of the first GiB, 2 MiB pages, user-accessible (ring-3 round trips)
        put(PML4, struct.pack("<Q", PDPT | 0x7))
        put(PDPT, struct.pack("<Q", PD | 0x7))
        put(PD, b"".join(struct.pack("<Q", (i << 21) | 0x87) for i in range(512)))
    gdt = _gdt(bits, labels)
    put(GDT, gdt)
    put(GDT_ALT, gdt)
    put(LDT, struct.pack("<QQ", _seg_desc(0, 0xFFFFF, 0x93, 0xC),
                         _seg_desc(0, 0xFFFFF, 0x9B, 0xA if bits == 64 else 0xC)))
    for tss in (TSS_A, TSS_B):
        if bits == 64:
            put(tss + 4, struct.pack("<Q", KSTACK_TOP))
        else:
            put(tss + 4, struct.pack("<II", KSTACK_TOP, SEL_DATA))
        put(tss + 0x66, struct.pack("<H", 104))   # no I/O bitmap
    idt = _idt(bits, labels)
    put(IDT, idt)
    table = "<HQ" if bits == 64 else "<HI"
    put(GDTR_MAIN, struct.pack(table, GDT_LIMIT, GDT))
    put(GDTR_ALT, struct.pack(table, GDT_LIMIT, GDT_ALT))
    put(IDTR_MAIN, struct.pack(table, len(idt) - 1, IDT))
    put(IDTR_ALT, struct.pack(table, len(idt) - 1 - 8 * (2 if bits == 64 else 1) * 8, IDT))
    put(HEXDIGITS, b"0123456789abcdef")
    strings = _string_addresses()
    for name, text in _STRINGS.items():
        put(strings[name], text.encode() + b"\0")
    put(strings["S_BANNER"], banner + b"\0")
    put(BUF, bytes(rng.getrandbits(8) for _ in range(BUF_SIZE)))
    W = bits // 8
    full = (1 << bits) - 1
    for n, row in enumerate(masks):
        put(MASKS + n * len(row) * W, b"".join((m & full).to_bytes(W, "little") for m in row))
    put(CASE_SP, bytes(rng.getrandbits(8) for _ in range(STACK_TOP - CASE_SP)))
    if fuzz_area:
        put(FUZZ_BUF, bytes(rng.getrandbits(8) for _ in range(FUZZ_SIZE)))
    return bytes(d)


@dataclass(frozen=True)
class _Section:
    name: str
    va: int
    data: bytes
    flags: str          # "ax" code, "aw" data, "a" read-only; "n" marks the PVH note


def _pvh_note(bits: int, entry: int) -> bytes:
    """XEN_ELFNOTE_PHYS32_ENTRY (18): the 32-bit entry; 8 bytes in an ELF64, as QEMU reads it there."""
    desc = struct.pack("<Q" if bits == 64 else "<I", entry)
    return struct.pack("<III", 4, len(desc), 18) + b"Xen\0" + desc


def _elf(bits: int, entry: int, segments: Sequence[Sequence[_Section]],
         symbols: Sequence[tuple[str, int, int]]) -> bytes:
    """An ET_EXEC ELF: one PT_LOAD per segment (vaddr = paddr, sections contiguous), a PT_NOTE, a symbol table.

    The note lies inside a loaded segment, as linkers place it: LIEF (the translator's emitter) keeps
    such a PT_NOTE pointing at the note when it moves the program headers."""
    is64 = bits == 64
    ehsize, phentsize, shentsize = (64, 56, 64) if is64 else (52, 32, 40)
    sections = [s for seg in segments for s in seg]
    note = next(s for s in sections if "n" in s.flags)
    out = bytearray(0x1000)
    seg_offsets, sec_offsets = [], {}
    for seg in segments:
        out += b"\0" * (-len(out) % 0x1000)
        base, off = seg[0].va, len(out)
        seg_offsets.append(off)
        for s in seg:
            out += b"\0" * (off + s.va - base - len(out))
            sec_offsets[s.name] = len(out)
            out += s.data
    strtab = bytearray(b"\0")
    syms = bytearray(24 if is64 else 16)
    for name, va, size in symbols:
        shndx = next(i + 1 for i, s in enumerate(sections) if s.va <= va <= s.va + len(s.data) and "x" in s.flags)
        name_off = len(strtab)
        strtab += name.encode() + b"\0"
        info = (1 << 4) | 2                                    # GLOBAL FUNC
        syms += (struct.pack("<IBBHQQ", name_off, info, 0, shndx, va, size) if is64
                 else struct.pack("<IIIBBH", name_off, va, size, info, 0, shndx))
    names = [s.name for s in sections] + [".symtab", ".strtab", ".shstrtab"]
    shstrtab = bytearray(b"\0")
    name_offs = []
    for n in names:
        name_offs.append(len(shstrtab))
        shstrtab += n.encode() + b"\0"
    out += b"\0" * (-len(out) % 8)
    sym_off = len(out)
    out += syms
    str_off = len(out)
    out += strtab
    shstr_off = len(out)
    out += shstrtab
    out += b"\0" * (-len(out) % 8)
    shoff = len(out)
    nsec = len(sections)

    def shdr(name, typ, flags, addr, off, size, link=0, info=0, align=1, entsize=0) -> bytes:
        if is64:
            return struct.pack("<IIQQQQIIQQ", name, typ, flags, addr, off, size, link, info, align, entsize)
        return struct.pack("<IIIIIIIIII", name, typ, flags, addr, off, size, link, info, align, entsize)

    sh = shdr(0, 0, 0, 0, 0, 0)
    for i, s in enumerate(sections):
        flags = 0x2 | (0x4 if "x" in s.flags else 0) | (0x1 if "w" in s.flags else 0)
        sh += shdr(name_offs[i], 7 if "n" in s.flags else 1, flags, s.va, sec_offsets[s.name], len(s.data),
                   align=4 if "n" in s.flags else 16)
    sh += shdr(name_offs[nsec], 2, 0, 0, sym_off, len(syms), link=nsec + 2, info=1, align=8,
               entsize=24 if is64 else 16)
    sh += shdr(name_offs[nsec + 1], 3, 0, 0, str_off, len(strtab))
    sh += shdr(name_offs[nsec + 2], 3, 0, 0, shstr_off, len(shstrtab))
    out += sh
    shnum = nsec + 4
    ident = b"\x7fELF" + bytes((2 if is64 else 1, 1, 1, 0)) + bytes(8)
    hdr_fmt = "<HHIQQQIHHHHHH" if is64 else "<HHIIIIIHHHHHH"
    phnum = len(segments) + 1
    out[0:ehsize] = ident + struct.pack(hdr_fmt, 2, 62 if is64 else 3, 1, entry, ehsize, shoff, 0, ehsize,
                                        phentsize, phnum, shentsize, shnum, shnum - 1)

    def phdr(typ, flags, off, va, size, align) -> bytes:
        if is64:
            return struct.pack("<IIQQQQQQ", typ, flags, off, va, va, size, size, align)
        return struct.pack("<IIIIIIII", typ, off, va, va, size, size, flags, align)

    ph = bytearray()
    for seg, off in zip(segments, seg_offsets):
        flags = 4 | (1 if any("x" in s.flags for s in seg) else 0) | (2 if any("w" in s.flags for s in seg) else 0)
        ph += phdr(1, flags, off, seg[0].va, seg[-1].va + len(seg[-1].data) - seg[0].va, 0x1000)
    ph += phdr(4, 4, sec_offsets[note.name], note.va, len(note.data), 4)
    out[ehsize:ehsize + len(ph)] = ph
    return bytes(out)


# --------------------------------------------------------------------------- building a guest

def _program(specs: Sequence[CaseSpec], bits: int, draws: Sequence[_Draw], addr: Callable[[str], int],
             verbose: bool, stack_first: bool) -> tuple[list[_Chunk], _CaseEmitter]:
    """The guest's code as chunks; ``addr`` resolves labels (a dummy in the first assembler pass)."""
    env = _regs(bits)
    env.update({k: hex(v) for k, v in _string_addresses().items()})
    env.update(V_BLOCK=hex(V_BLOCK), V_SPI=hex(V_SPI), V_LINE=hex(V_LINE))
    chunks: list[_Chunk] = []
    if bits == 64:
        boot = _Chunk("boot", CODE, 32, addr, _regs(32))
        _boot(boot, 64, MAIN64, stack_first)
        chunks.append(boot)
    env.update(user64=hex(addr("F_user64")) if bits == 64 else "0",      # the ring-3 stubs, for operands
               user32=hex(addr("F_user32")) if bits == 32 else "0")
    main = _Chunk("main", MAIN64 if bits == 64 else CODE, bits, addr, env)
    low = _Chunk("low", LOW_CODE, bits, addr, env)
    if bits == 32:
        _boot(main, 32, addr("F_main"), stack_first)
    emitter = _CaseEmitter(main, low, bits, addr)

    def main_flow() -> None:
        _main_prologue(main, bits)
        for n, (spec, draw) in enumerate(zip(specs, draws)):
            emitter.case(n, spec, draw)
        for line in ("call F_no_resume", "mov esi, {S_PASS}", "call F_puts", "mov al, 0", "!out 0xf4, al"):
            main.line(line)
        main.asm("L_final_spin:", "jmp L_final_spin")
    main.func("F_main", main_flow)
    for function in emitter.deferred:
        function()
    _helpers(main, bits, verbose, fuzz_area=any(s.weave is not None for s in specs))
    chunks.append(main)
    if low.lines:
        chunks.append(low)
    return chunks, emitter


def _masks_row(v: Variant, bits: int) -> list[int]:
    """Masks in block-slot order: slot 1 holds the last register pushed (r15 / edi), slot n holds rax / eax."""
    full = (1 << bits) - 1
    order = list(reversed(_GPRS[bits]))
    names = {r: r[1:] if len(r) == 3 and not r[1].isdigit() else r for r in order}   # rax -> ax, r10 -> r10
    return [v.masks.get(names[r], full) for r in order]


def build_guest(specs: Sequence[CaseSpec], bits: int, seed: int = 0, verbose: bool = False,
                stack_first: bool = True) -> Guest:
    """Generate, assemble, check and link one guest running ``specs`` in order.

    ``seed`` draws the registers, flags, buffer and canary; ``verbose`` prints every register and
    selector too; ``stack_first=False`` lets the boot code run lgdt before it loads esp."""
    if bits not in (32, 64):
        raise GuestGenError(f"bits must be 32 or 64, not {bits}")
    if not 0 < len(specs) <= MAX_CASES:
        raise GuestGenError(f"a guest holds 1..{MAX_CASES} cases, not {len(specs)}")
    rng = random.Random(seed)
    nreg = len(_GPRS[bits])
    draws = []
    for spec in specs:
        r = rng if spec.draw_seed is None else random.Random(spec.draw_seed)
        draws.append(_Draw(tuple(r.getrandbits(bits) for _ in range(nreg)), r.getrandbits(8) & 0xD5 | 0x02,
                           r.getrandbits(1)))

    def dummy(_label: str) -> int:
        return 0x1F0000

    chunks, _ = _program(specs, bits, draws, dummy, verbose, stack_first)
    labels: dict[str, int] = {}
    for ch in chunks:
        labels.update(ch.assemble()[1])
    chunks, emitter = _program(specs, bits, draws, lambda lbl: labels[lbl], verbose, stack_first)
    code: dict[str, bytes] = {}
    final: dict[str, int] = {}
    for ch in chunks:
        code[ch.name], got = ch.assemble()
        final.update(got)
    if final != labels:
        moved = sorted(k for k in labels if labels[k] != final.get(k))[:5]
        raise GuestGenError(f"label addresses moved between assembler passes: {moved}")
    if bits == 64 and len(code["boot"]) > MAIN64 - CODE:
        raise GuestGenError("the 32-bit boot stub overruns the 64-bit code")
    if (MAIN64 if bits == 64 else CODE) + len(code["main"]) > DATA or len(code.get("low", b"")) > 0x1000:
        raise GuestGenError("the code overruns its space: use fewer cases per guest")

    sites = _check_sites(chunks, code, final)
    cases = []
    for n, spec in enumerate(specs):
        va = final[emitter.insn_labels[n]]
        raw, text = sites[va][1], sites[va][2]
        cases.append(Case(n, spec.entry, spec.variant.form, spec.context, spec.variant.expect, va, raw, text))

    text_blob = bytearray()
    if bits == 64:
        text_blob += code["boot"].ljust(MAIN64 - CODE, b"\xcc")
    text_blob += code["main"]
    banner = f"guestgen {bits}-bit seed {seed:#x}, {len(specs)} cases\n".encode()
    data = _data(bits, final, rng, [_masks_row(s.variant, bits) for s in specs], banner,
                 fuzz_area=any(s.weave is not None for s in specs))
    segments = [[_Section(".lowtext", LOW_CODE, code["low"], "ax")]] if "low" in code else []
    segments += [[_Section(".lowdata", LOW_DATA, bytes(0x1000), "aw")],
                 [_Section(".note.pvh", TEXT, _pvh_note(bits, CODE), "an"),
                  _Section(".text", CODE, bytes(text_blob), "ax")],
                 [_Section(".data", DATA, data, "aw")]]
    symbols = [(start, final[start], final[end] - final[start]) for ch in chunks for start, end in ch.funcs]
    elf = _elf(bits, CODE, segments, symbols)
    return Guest(bits, seed, elf, tuple(cases), {va: s[0] for va, s in sites.items()}, final)


_SPECIAL_REGISTER = re.compile(r"\b(cr\d+|dr\d|[c-gs]s)\b")   # mov/push/pop are sensitive only with these


@functools.cache
def _candidate_mnemonics() -> frozenset[str]:
    """Mnemonics that may be sensitive (the catalog's instruction ids), to skip detailed decoding of the rest."""
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    return frozenset(md.insn_name(i) for i in CANDIDATE_IDS)


def _check_sites(chunks: Sequence[_Chunk], code: Mapping[str, bytes],
                 labels: Mapping[str, int]) -> dict[int, tuple[str, bytes, str]]:
    """Every placed sensitive instruction decodes as its entry, and no other sensitive instruction exists."""
    found: dict[int, tuple[str, bytes, str]] = {}
    for ch in chunks:
        blob = code[ch.name]
        md = _cs(ch.bits)
        starts = set()
        at = ch.base
        for address, size, mnemonic, _ops in md.disasm_lite(blob, ch.base):
            starts.add(address)
            at = address + size
            name = mnemonic.rsplit(" ", 1)[-1]
            if name not in _candidate_mnemonics() or (name in ("mov", "push", "pop")
                                                      and not _SPECIAL_REGISTER.search(_ops)):
                continue
            insn = _decode_one(blob[address - ch.base:at - ch.base], ch.bits, address)
            entry = classify(insn)
            if entry is not None:
                found[address] = (entry.name, bytes(insn.bytes), _text_of(insn))
        if at != ch.base + len(blob):
            raise GuestGenError(f"chunk {ch.name}: linear disassembly stops at {at:#x} of "
                                f"{ch.base:#x}..{ch.base + len(blob):#x}")
        for lbl in ch.labels:
            if labels[lbl] != ch.base + len(blob) and labels[lbl] not in starts:
                raise GuestGenError(f"label {lbl} at {labels[lbl]:#x} is inside an instruction")
        placed = {labels[lbl]: want for lbl, want in ch.sites}
        for va, want in placed.items():
            if va not in found:
                raise GuestGenError(f"{ch.name}: the sensitive instruction placed at {va:#x} is not one")
            if want and found[va][0] != want:
                raise GuestGenError(f"{ch.name}: {va:#x} {found[va][2]!r} is {found[va][0]}, not {want}")
        stray = [f"{va:#x} {found[va][2]}" for va in found if ch.base <= va < ch.base + len(blob) and va not in placed]
        if stray:
            raise GuestGenError(f"{ch.name}: sensitive instructions placed without being counted: {stray}")
    return found


def entry_guest(entry: str, bits: int, seed: int | None = None, contexts: Sequence[Context] = CONTEXTS,
                verbose: bool = False) -> Guest:
    """Every operand form of ``entry`` in every placement context, in one guest."""
    variants = variants_for(entry, bits)
    if not variants:
        raise GuestGenError(f"{entry!r} does not exist in {bits}-bit code")
    specs = [CaseSpec(entry, v, ctx) for v in variants for ctx in contexts]
    if seed is None:
        seed = zlib.crc32(f"{entry}/{bits}".encode())
    return build_guest(specs, bits, seed, verbose)


_LINE = re.compile(rb"^c([0-9a-f]{2})(.*)$")


def parse_console(console: bytes) -> dict[int, bytes]:
    """Case number -> the rest of its line (b" f=... k=..." or b" !0d e=... ip=... f=..."), from a console."""
    out: dict[int, bytes] = {}
    for line in console.split(b"\n"):
        m = _LINE.match(line)
        if m:
            out[int(m.group(1), 16)] = m.group(2)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pvtranslate.guestgen ENTRY BITS [-o OUT] [--seed N] [--verbose]`` writes one entry's guest;
    ``--list`` prints every generated case of every entry instead."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pvtranslate.guestgen", description=main.__doc__)
    parser.add_argument("entry", nargs="?", help="catalog entry name, e.g. rep.insw")
    parser.add_argument("bits", nargs="?", type=int, choices=(32, 64))
    parser.add_argument("-o", "--output", default=None, help="default: ENTRY-BITS.elf")
    parser.add_argument("--seed", type=lambda t: int(t, 0), default=None)
    parser.add_argument("--verbose", action="store_true", help="print every register and selector per case")
    parser.add_argument("--list", action="store_true", help="list every entry's forms (each runs in every placement)")
    args = parser.parse_args(argv)
    if args.list:
        for entry in ENTRIES:
            for bits in (32, 64):
                for v in variants_for(entry.name, bits):
                    fault = f"  (expect #{v.expect})" if v.expect is not None else ""
                    print(f"{entry.name:<14} {bits}  {v.insn:<44} {v.form}{fault}  x {len(CONTEXTS)} placements")
        return 0
    if args.entry is None or args.bits is None:
        parser.error("ENTRY and BITS are required (or --list)")
    guest = entry_guest(args.entry, args.bits, args.seed, verbose=args.verbose)
    out = args.output or f"{args.entry}-{args.bits}.elf"
    guest.write(out)
    for case in guest.cases:
        print(case.describe())
    print(f"{out}: {len(guest.cases)} cases, {len(guest.sites)} sensitive instructions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
