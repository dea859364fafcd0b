"""fuzzgen: owns the fuzzer's random guests: seeded programs of catalog cases with random code woven around each case.

A ``FuzzProgram`` is pure data drawn from one seed (``program(seed)``): the guest's mode (32 or
64-bit, about half each) and a list of ``FuzzCase``: a catalog entry in one of its operand forms
(``guestgen.variants_for``), a placement ``Context``, a seed for its registers and flags, and the
``Piece``s of random code woven around its sensitive instruction. ``FuzzProgram.build()`` turns it
into a bootable guest with ``guestgen.build_guest`` (the ELF writer, case scaffolding and digests
are guestgen's: every case still prints ``c<n> f= sp= h= k=``, flags, registers and memory). The
same seed gives the same program and the same guest bytes, in any process.

What the woven code is made of (each ``Piece`` is self-contained: its labels, its pushes and pops,
its loops and its functions are its own, so a minimizer can drop any piece):

- ordinary instructions: ALU ops in every width that set flags the next ones consume (adc, sbb,
  setcc, cmovcc, jcc, the case's own ``pushf``), lea, shifts, xchg, bswap, memory operands in the
  fuzz buffer (absolute, register-indexed, and RIP-relative in 64-bit, with and without an
  immediate after the displacement), stack pushes and pops with reads and writes of the pushed
  words, ``lea reg, [rip + code label]`` and ``call; pop`` (the program counter as data);
- branch shapes: diamonds and skips (short and near ``jcc``/``jmp``), bounded loops (``dec; jnz``,
  ``loop``, count-up ``cmp; jb``, backward near branches), calls to small random functions (sized
  FUNC symbols or bare labels, direct or through a register, nested once), some starting with or
  ending on a sensitive instruction;
- filler sensitive instructions that change nothing a case relies on (``pushf``/``popf`` pairs,
  ``pushf; cli; ...; popf`` critical sections, control-register, descriptor-table, selector and MSR
  reads, ``lar``/``verr`` probes, ``cpuid``, port 0x80, ``swapgs`` pairs);
- landings around the case's instruction: jumps landing exactly on it (taken, not taken, jump to
  the next instruction, a ``call`` whose ``ret`` lands on it, a loop whose head it is), on the byte
  after it (not-taken forward jumps, a loop headed there), and on the instruction just before it
  (a taken jump over dead code, a loop through the instruction); flags set right before it and
  consumed right after; a call, a jump, a RIP-relative operand or another sensitive instruction
  right before or right after it.

Every branch is safe whichever way it goes (both arms of a diamond are valid code; loops are
counted; jumps whose outcome matters are decided by ``cmp r, r``, ``clc`` or ``stc``), memory
operands stay in ``guestgen.FUZZ_BUF`` or the words a piece pushed (never below the stack
pointer: a translation's trampolines save registers there), and the code keeps what the case's
instruction reads (its registers, read through Capstone and a table of implicit operands; its
stack words; IF and DF), so the original still runs as generated: every case completes or faults
exactly as ``variants_for`` says. Code after an instruction that loads a data or stack segment uses
registers only; code after one whose result is time (``rdtsc``) does not read those registers.

``landings(guest)`` decodes the built ELF and reports, per case, whether a direct branch lands on
the instruction, on the byte after it, or on the instruction just before it.
"""

from __future__ import annotations

import functools
import io
import random
import re
from collections import Counter
from dataclasses import dataclass, replace
from typing import Callable, Iterable

import capstone

from pvtranslate import guestgen as gg
from pvtranslate.elfwrite import read_layout
from pvtranslate.guestgen import CaseSpec, Context, Guest, Weave, build_guest, entries_for, variants_for

__all__ = ["Piece", "FuzzCase", "FuzzProgram", "program", "landings", "SiteProfile", "site_profile",
           "CASES_PER_GUEST"]

CASES_PER_GUEST = (8, 16)         # inclusive range of cases in a guest (sized for ~0.3 s per seed)
PIECES_PER_CASE = (1, 4)          # outer pieces around each case's instruction

_FAMILIES = {32: ("ax", "cx", "dx", "bx", "bp", "si", "di"),
             64: ("ax", "cx", "dx", "bx", "bp", "si", "di", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")}
_BYTE = {"ax": "al", "cx": "cl", "dx": "dl", "bx": "bl", "si": "sil", "di": "dil", "bp": "bpl"}
_CC = ("o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g")
# after ``cmp r, r`` (ZF=1 PF=1 CF=SF=OF=0): conditions known false and known true
_NOT_TAKEN = ("ne", "b", "a", "s", "o", "l", "g", "np")
_TAKEN = ("e", "ae", "be", "ns", "no", "ge", "le", "p")
# Not generated: bt/bts/btr/btc. Their OF, SF, AF and PF are architecturally undefined, and Unicorn
# (QEMU's TCG) computes them from whatever flags operation precedes *in the same translation block*:
# a translation that moves a bt into a trampoline starts a new block there and legitimately shows
# other undefined flags (found by this fuzzer, seed 50: xor; btc; sysret #UD frame OF 1 vs 0).
_UNDEFINED_FLAGS = ("bt", "bts", "btr", "btc")
_SAFE_MSRS = (0xC0000080, 0xC0000081, 0x174, 0x277)   # EFER, STAR, SYSENTER_CS, PAT: read, never written here


def _family_of(name: str) -> str | None:
    name = name.lower()
    m = re.fullmatch(r"r(\d+)[dwb]?", name)
    if m:
        return f"r{m.group(1)}"
    for fam, byte in _BYTE.items():
        if name in (f"r{fam}", f"e{fam}", fam, byte) or (fam[1] == "x" and name == fam[0] + "h"):
            return fam
    if name in ("rsp", "esp", "sp", "spl"):
        return "sp"
    return None


def _reg(fam: str, width: int) -> str:
    if fam.startswith("r") and fam[1:].isdigit():
        return {64: fam, 32: fam + "d", 16: fam + "w", 8: fam + "b"}[width]
    return {64: "r" + fam, 32: "e" + fam, 16: fam, 8: _BYTE[fam]}[width]


def _byte_ok(fam: str, bits: int) -> bool:
    return bits == 64 or fam in ("ax", "bx", "cx", "dx")


# --------------------------------------------------------------------------- the case's instruction

_IMPLICIT_READS = {"sysexit": {"cx", "dx"}, "sysexitq": {"cx", "dx"}, "sysret": {"cx", "r11"},
                   "sysretq": {"cx", "r11"}, "wrmsr": {"ax", "cx", "dx"}, "rdmsr": {"cx"}, "cpuid": {"ax", "cx"},
                   "monitor": {"ax", "cx", "dx"}, "mwait": {"ax", "cx"}, "xsetbv": {"ax", "cx", "dx"},
                   "xgetbv": {"cx"}, "rdpmc": {"cx"}}
_IMPLICIT_WRITES = {"rdmsr": {"ax", "dx"}, "rdtsc": {"ax", "dx"}, "rdtscp": {"ax", "cx", "dx"},
                    "cpuid": {"ax", "bx", "cx", "dx"}, "rdpmc": {"ax", "dx"}, "xgetbv": {"ax", "dx"}}
_TRANSFERS = ("iret16", "iretd", "iretq", "sysret", "sysretq", "sysexit", "sysexitq")
_SEGMENT_LOADS = re.compile(r"(mov\.to|pop)\.(ds|es|ss)$")


@dataclass(frozen=True)
class SiteProfile:
    """What woven code must respect around one variant's instruction."""

    reads: frozenset[str]          # register families the instruction reads (explicitly or not)
    writes: frozenset[str]         # families it may write
    taboo: frozenset[str]          # families that hold time after it (masked in the digest): never read after
    memory_after: bool             # code after it may use memory and the stack (no data/stack segment load)
    loop_safe: bool                # it may run several times in a row (a loop through it)


@functools.lru_cache(maxsize=None)
def site_profile(entry: str, bits: int, index: int) -> SiteProfile:
    v = variants_for(entry, bits)[index]
    text = re.sub(r"\{rip:\w+\}", "rip + 0x100", v.insn)
    code = gg.encode(text, bits)
    insn = next(gg._cs(bits).disasm(code, 0, 1))
    r_ids, w_ids = insn.regs_access()
    reads = {f for f in (_family_of(insn.reg_name(r)) for r in r_ids) if f}
    writes = {f for f in (_family_of(insn.reg_name(r)) for r in w_ids) if f}
    named = {f for f in (_family_of(t) for t in re.findall(r"[a-z0-9]+", text)) if f}
    reads |= named | _IMPLICIT_READS.get(entry, set())
    writes |= named | _IMPLICIT_WRITES.get(entry, set())
    taboo = frozenset(f for f in (_family_of(k) for k in v.masks) if f)
    memory_after = not _SEGMENT_LOADS.search(entry)
    loop_safe = (v.expect is None and not v.stack and not v.pushes and not v.masks and memory_after
                 and entry not in _TRANSFERS and entry != "ltr")   # a second ltr finds its TSS busy
    return SiteProfile(frozenset(reads - {"sp"}), frozenset(writes - {"sp"}), taboo, memory_after, loop_safe)


# --------------------------------------------------------------------------- the program

@dataclass(frozen=True)
class Piece:
    """Random code around one case: ``before`` its instruction, ``after`` it, and its own functions.

    Pieces nest: the before-parts run in list order and the after-parts in reverse, so a later piece
    is inside an earlier one (a loop piece encloses the pieces after it)."""

    kind: str
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    functions: tuple[tuple[str, tuple[str, ...], bool], ...] = ()
    tags: tuple[str, ...] = ()     # what it exercises: "land:on", "land:after", "land:before", "near", ...

    def to_json(self) -> dict:
        return {"kind": self.kind, "before": list(self.before), "after": list(self.after),
                "functions": [[n, list(b), s] for n, b, s in self.functions], "tags": list(self.tags)}

    @classmethod
    def from_json(cls, d: dict) -> Piece:
        return cls(d["kind"], tuple(d["before"]), tuple(d["after"]),
                   tuple((n, tuple(b), bool(s)) for n, b, s in d["functions"]), tuple(d["tags"]))


@dataclass(frozen=True)
class FuzzCase:
    entry: str
    variant: int                   # index into variants_for(entry, bits)
    context: Context
    draw_seed: int
    pieces: tuple[Piece, ...] = ()

    def spec(self, bits: int) -> CaseSpec:
        weave = Weave(tuple(line for p in self.pieces for line in p.before),
                      tuple(line for p in reversed(self.pieces) for line in p.after),
                      tuple(f for p in self.pieces for f in p.functions))
        return CaseSpec(self.entry, variants_for(self.entry, bits)[self.variant], self.context, weave, self.draw_seed)

    def tags(self) -> set[str]:
        return {t for p in self.pieces for t in p.tags}

    def to_json(self) -> dict:
        return {"entry": self.entry, "variant": self.variant, "context": self.context.value,
                "draw_seed": self.draw_seed, "pieces": [p.to_json() for p in self.pieces]}

    @classmethod
    def from_json(cls, d: dict) -> FuzzCase:
        return cls(d["entry"], d["variant"], Context(d["context"]), d["draw_seed"],
                   tuple(Piece.from_json(p) for p in d["pieces"]))


@dataclass(frozen=True)
class FuzzProgram:
    seed: int
    bits: int
    cases: tuple[FuzzCase, ...]

    def specs(self) -> list[CaseSpec]:
        return [c.spec(self.bits) for c in self.cases]

    def build(self) -> Guest:
        return build_guest(self.specs(), self.bits, self.seed)

    def replace_cases(self, cases: Iterable[FuzzCase]) -> FuzzProgram:
        return FuzzProgram(self.seed, self.bits, tuple(cases))

    def size(self) -> tuple[int, int, int]:
        """Cases, pieces, woven lines."""
        pieces = [p for c in self.cases for p in c.pieces]
        lines = sum(len(p.before) + len(p.after) + sum(len(b) for _n, b, _s in p.functions) for p in pieces)
        return len(self.cases), len(pieces), lines

    def listing(self) -> str:
        """The program as text: each case's entry, form and context, then its woven code in place."""
        out = [f"# fuzz program: seed {self.seed}, {self.bits}-bit, {len(self.cases)} case(s)"]
        for n, c in enumerate(self.cases):
            v = variants_for(c.entry, self.bits)[c.variant]
            fault = f", expect #{v.expect}" if v.expect is not None else ""
            out.append(f"c{n:02x} {c.entry} [{v.form}] {c.context.value}{fault}: {v.insn}")
            spec = c.spec(self.bits)
            assert spec.weave is not None
            for line in spec.weave.before:
                out.append(f"      {line}")
            out.append(f"  @SITE: {v.insn}")
            out.append("  @POST:")
            for line in spec.weave.after:
                out.append(f"      {line}")
            for name, body, sized in spec.weave.functions:
                out.append(f"  {name}:{'  (sized symbol)' if sized else ''}")
                out.extend(f"      {line}" for line in body)
        return "\n".join(out)

    def to_json(self) -> dict:
        return {"seed": self.seed, "bits": self.bits, "cases": [c.to_json() for c in self.cases]}

    @classmethod
    def from_json(cls, d: dict) -> FuzzProgram:
        return cls(d["seed"], d["bits"], tuple(FuzzCase.from_json(c) for c in d["cases"]))


# --------------------------------------------------------------------------- random code

@dataclass
class _Pools:
    """Which register families code at one place may read and write, and what it may touch."""

    read: tuple[str, ...]
    write: tuple[str, ...]
    memory: bool = True
    stack: bool = True

    def without(self, *fams: str) -> _Pools:
        return _Pools(self.read, tuple(f for f in self.write if f not in fams), self.memory, self.stack)


class _Weaver:
    """Draws pieces for one guest; ``rng`` is the guest's, so the program is a function of the seed."""

    def __init__(self, rng: random.Random, bits: int):
        self.rng, self.bits = rng, bits
        self.W = bits // 8
        self.sp = "rsp" if bits == 64 else "esp"
        self.ptr = "qword" if bits == 64 else "dword"
        self._n = 0
        self._functions: list[tuple[str, tuple[str, ...], bool]] = []   # the current piece's
        self.indexed = True          # memory operands may use a masked index register

    # ---- small draws
    def label(self, what: str) -> str:
        self._n += 1
        return f"@{what}{self._n}"

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def width(self, fam: str) -> int:
        widths = [32, 32, 16] + ([64, 64, 64] if self.bits == 64 else []) + ([8] if _byte_ok(fam, self.bits) else [])
        return self.rng.choice(widths)

    def imm(self, width: int) -> int:
        r = self.rng.random()
        if r < 0.3:
            return self.rng.randrange(0, 16)
        if r < 0.5:
            return self.rng.choice((0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF))
        return self.rng.getrandbits(min(width, 32))

    def imm_text(self, width: int) -> str:
        v = self.imm(width)
        if width == 64 and v & 0x80000000:      # imm32 sign-extends in 64-bit ALU ops: keep it in range
            v &= 0x7FFFFFFF
        return hex(v & ((1 << min(width, 32)) - 1))

    def mem(self, width: int, pools: _Pools, pre: list[str]) -> str:
        """A memory operand in the fuzz buffer (lines it needs first go to ``pre``: an index register is
        masked there, so an instruction that must stand alone, a loop head, gets no index)."""
        ptr = {8: "byte", 16: "word", 32: "dword", 64: "qword"}[width]
        off = self.rng.randrange(0, gg.FUZZ_SIZE - 8)
        r = self.rng.random()
        if r < 0.3 and pools.write and self.indexed:
            idx = self.rng.choice(pools.write)
            pre.append(f"and {_reg(idx, 32)}, {0xF8 if self.rng.random() < 0.5 else 0x78:#x}")
            if self.rng.random() < 0.5:
                return f"{ptr} ptr [{_reg(idx, self.bits)} + {gg.FUZZ_BUF:#x}]"
            return f"{ptr} ptr [{_reg(idx, self.bits)}*1 + {gg.FUZZ_BUF:#x}]"
        if self.bits == 64 and r < 0.8:
            return f"{ptr} ptr [{{rip:{gg.FUZZ_BUF + off:#x}}}]"
        return f"{ptr} ptr [{gg.FUZZ_BUF + off:#x}]"

    # ---- one ordinary instruction (or a few that belong together)
    def alu(self, pools: _Pools) -> list[str]:
        rng = self.rng
        if not pools.write:
            src = rng.choice(pools.read) if pools.read else None
            if src is None:
                return [rng.choice(("clc", "stc", "cmc", "nop"))]
            w = self.width(src)
            return [rng.choice((f"cmp {_reg(src, w)}, {self.imm_text(w)}", f"test {_reg(src, w)}, {_reg(src, w)}"))]
        dst = rng.choice(pools.write)
        w = self.width(dst)
        d = _reg(dst, w)
        srcs = [f for f in pools.read if _byte_ok(f, self.bits) or w != 8]
        s = _reg(rng.choice(srcs), w) if srcs else d
        k = rng.randrange(22)
        if k < 6:
            return [f"{rng.choice(('add', 'sub', 'xor', 'and', 'or', 'adc', 'sbb', 'cmp', 'test'))} {d}, {s}"]
        if k < 9:
            return [f"{rng.choice(('add', 'sub', 'xor', 'and', 'or', 'adc', 'sbb', 'cmp'))} {d}, {self.imm_text(w)}"]
        if k == 9:
            return [f"{rng.choice(('inc', 'dec', 'neg', 'not'))} {d}"]
        if k == 10:
            op = rng.choice(("shl", "shr", "sar", "rol", "ror", "rcl", "rcr"))
            if "cx" in pools.read and rng.random() < 0.3:
                return [f"{op} {d}, cl"]
            return [f"{op} {d}, {rng.randrange(1, w)}"]
        if k == 11 and w >= 16:
            return [f"imul {d}, {s}"] if rng.random() < 0.5 else [f"imul {d}, {s}, {rng.randrange(-128, 128)}"]
        if k == 12 and w >= 16:
            base = rng.choice(pools.read) if pools.read else dst
            idx = rng.choice(pools.read) if pools.read else dst
            ww = 64 if self.bits == 64 else 32
            return [f"lea {_reg(dst, max(w, 32) if w != 16 else 16)}, [{_reg(base, ww)} + {_reg(idx, ww)}*"
                    f"{rng.choice((1, 2, 4, 8))} + {rng.randrange(-200, 200)}]"]
        if k == 13:
            return [f"mov {d}, {s}"] if rng.random() < 0.5 else [f"mov {d}, {self.imm_text(w)}"]
        if k == 14 and w >= 16:
            srcf = [f for f in pools.read if _byte_ok(f, self.bits)]
            if srcf:
                return [f"{rng.choice(('movzx', 'movsx'))} {_reg(dst, max(w, 32) if w != 16 else 16)}, "
                        f"{_reg(rng.choice(srcf), 8)}"]
            return [f"movzx {_reg(dst, 32)}, {_reg(rng.choice(pools.read or (dst,)), 16)}"]
        if k == 15 and w >= 32:
            return [f"bswap {d}"]
        if k == 16 and w >= 16:
            return [f"cmov{rng.choice(_CC)} {d}, {s}"]
        if k == 17 and _byte_ok(dst, self.bits):
            return [f"set{rng.choice(_CC)} {_reg(dst, 8)}"]
        if k == 18 and len(pools.write) >= 2:
            other = rng.choice([f for f in pools.write if f != dst])
            if w == 8 and not _byte_ok(other, self.bits):
                w = 32
            return [f"{rng.choice(('xchg', 'xadd'))} {_reg(dst, w)}, {_reg(other, w)}"]
        if k == 19 and w >= 16:     # (no bt/bts/btr/btc: see _UNDEFINED_FLAGS)
            return [f"{rng.choice(('rol', 'ror'))} {d}, 1"]
        if k == 20 and self.bits == 64 and rng.random() < 0.5:
            return [f"mov {_reg(dst, 64)}, {rng.getrandbits(64):#x}"]
        if k == 20 and {"ax", "dx"} <= set(pools.write):
            return [rng.choice(("cdq", "cwde", "cbw") + (("cqo", "cdqe") if self.bits == 64 else ())),
                    ] if rng.random() < 0.5 else [f"mul {_reg(rng.choice(pools.read or ('ax',)), 32)}"]
        return [rng.choice(("clc", "stc", "cmc", f"test {d}, {s}", f"cmp {d}, {s}"))]

    def memop(self, pools: _Pools) -> list[str]:
        rng = self.rng
        pre: list[str] = []
        if not pools.memory:
            return self.alu(pools)
        k = rng.randrange(12)
        if k < 3 and pools.write:
            dst = rng.choice(pools.write)
            w = self.width(dst)
            if w == 8 and rng.random() < 0.5:
                m = self.mem(8, pools, pre)
                return pre + [f"{rng.choice(('movzx', 'movsx'))} {_reg(dst, 32)}, {m}"]
            m = self.mem(w, pools, pre)
            op = rng.choice(("mov", "mov", "add", "sub", "xor", "and", "or", "adc", "cmp"))
            return pre + [f"{op} {_reg(dst, w)}, {m}"]
        if k < 6:
            src = rng.choice(pools.read) if pools.read else None
            w = self.width(src) if src else 32
            m = self.mem(w, pools, pre)
            if src is None or rng.random() < 0.4:
                op = rng.choice(("mov", "add", "sub", "xor", "and", "or", "adc", "cmp", "test"))
                return pre + [f"{op} {m}, {self.imm_text(w)}"]      # an immediate after the displacement
            op = rng.choice(("mov", "mov", "add", "sub", "xor", "and", "or", "sbb", "test"))
            return pre + [f"{op} {m}, {_reg(src, w)}"]
        if k < 8:
            w = rng.choice((8, 16, 32) + ((64,) if self.bits == 64 else ()))
            m = self.mem(w, pools, pre)
            one = rng.choice(("inc", "dec", "not", "neg"))
            if rng.random() < 0.5:
                return pre + [f"{one} {m}"]
            return pre + [f"{rng.choice(('shl', 'shr', 'sar', 'rol', 'ror'))} {m}, {rng.randrange(1, w)}"]
        if k == 8 and pools.write:
            dst = rng.choice(pools.write)
            w = self.width(dst)
            m = self.mem(w, pools, pre)
            return pre + [f"xchg {m}, {_reg(dst, w)}"]
        if k == 9 and self.bits == 64 and pools.write:     # an address as data: relocation shows here
            dst = rng.choice(pools.write)
            return [f"lea {_reg(dst, 64)}, [{{rip:{gg.FUZZ_BUF + rng.randrange(gg.FUZZ_SIZE):#x}}}]"]
        if k == 10:
            w = rng.choice((16, 32) + ((64,) if self.bits == 64 else ()))
            m = self.mem(w, pools, pre)
            return pre + [f"{rng.choice(('adc', 'sbb'))} {m}, {self.imm_text(w)}"]
        return self.alu(pools)

    def code_address(self, pools: _Pools, target: str) -> list[str]:
        """A code address as data: RIP-relative lea (64-bit) or call/pop (both)."""
        if not pools.write:
            return []
        dst = self.rng.choice(pools.write)
        if self.bits == 64 and self.rng.random() < 0.6:
            return [f"lea {_reg(dst, 64)}, [rip + {target}]"]
        if not pools.stack:
            return [f"mov {_reg(dst, 32)}, {target}"] if self.bits == 32 else []
        here = self.label("pc")
        return [f"call {here}", f"{here}:", f"pop {_reg(dst, self.bits)}"]

    def stack_block(self, pools: _Pools, n: int) -> list[str]:
        """Pushes, pops and accesses of the pushed words; balanced at its end."""
        if not pools.stack:
            return self.block(pools, n, stack=False)
        rng, W, sp = self.rng, self.W, self.sp
        out: list[str] = []
        depth = 0
        for _ in range(n):
            r = rng.random()
            if r < 0.35 or depth == 0:
                k = rng.randrange(4)
                if k == 0 and pools.read:
                    out.append(f"push {_reg(rng.choice(pools.read), self.bits)}")
                elif k == 1 and pools.memory:
                    out.append(f"push {self.mem(self.bits, _Pools(pools.read, ()), [])}")   # no index: no set-up
                else:
                    out.append(f"push {rng.randrange(-0x80000000, 0x7FFFFFFF):#x}")
                depth += 1
            elif r < 0.55 and pools.write:
                dst = rng.choice(pools.write)
                out.append(f"mov {_reg(dst, self.bits)}, {self.ptr} ptr [{sp} + {W * rng.randrange(depth)}]")
            elif r < 0.7:
                src = rng.choice(pools.read) if pools.read else None
                slot = f"{self.ptr} ptr [{sp} + {W * rng.randrange(depth)}]"
                out.append(f"{rng.choice(('add', 'xor', 'sub'))} {slot}, {_reg(src, self.bits)}" if src
                           else f"not {slot}")
            elif r < 0.85:
                depth -= 1
                if pools.write and rng.random() < 0.7:
                    out.append(f"pop {_reg(rng.choice(pools.write), self.bits)}")
                elif pools.memory:
                    out.append(f"pop {self.mem(self.bits, _Pools(pools.read, ()), [])}")
                else:
                    out.append(f"lea {sp}, [{sp} + {W}]")
            else:
                out += self.alu(pools)
        while depth:
            if pools.write and rng.random() < 0.6:
                out.append(f"pop {_reg(rng.choice(pools.write), self.bits)}")
                depth -= 1
            else:
                out.append(f"lea {sp}, [{sp} + {W * depth}]")
                depth = 0
        return out

    def save_restore(self, pools: _Pools) -> list[str]:
        """push r; clobber r; pop r: even a register the case's instruction reads may be used so."""
        if not pools.stack or not pools.read:
            return self.alu(pools)
        fam = self.rng.choice(pools.read)
        inner = _Pools(pools.read, tuple(dict.fromkeys((fam,) + pools.write)), pools.memory, False)
        body: list[str] = []
        for _ in range(self.rng.randrange(1, 4)):
            body += self.alu(inner)
        r = _reg(fam, self.bits)
        return [f"push {r}"] + body + [f"pop {r}"]

    def block(self, pools: _Pools, n: int, stack: bool = True) -> list[str]:
        """``n`` straight-line items."""
        out: list[str] = []
        for _ in range(n):
            r = self.rng.random()
            if r < 0.45:
                out += self.alu(pools)
            elif r < 0.8:
                out += self.memop(pools)
            elif r < 0.9 and stack:
                out += self.save_restore(pools)
            else:
                out += self.alu(pools)
        return out

    # ---- branches
    def jcc(self, cond: str, target: str, near: bool = False) -> list[str]:
        if near:
            return [f".byte 0x0f, {0x80 + _CC.index(cond):#x}", f".long {target} - . - 4"]
        return [f"j{cond} {target}"]

    def jmp(self, target: str, near: bool = False) -> list[str]:
        return [".byte 0xe9", f".long {target} - . - 4"] if near else [f"jmp {target}"]

    def known(self, taken: bool, pools: _Pools) -> tuple[list[str], str]:
        """A flag set-up with a known outcome for the returned condition."""
        r = self.rng.random()
        if r < 0.6 and pools.read:
            reg = _reg(self.rng.choice(pools.read), self.rng.choice((32, self.bits)))
            return [f"cmp {reg}, {reg}"], self.rng.choice(_TAKEN if taken else _NOT_TAKEN)
        if r < 0.8:
            return ["clc"], "ae" if taken else "b"
        return ["stc"], "b" if taken else "ae"

    def dead(self, pools: _Pools) -> list[str]:
        """Code never executed (after an unconditional jump): ordinary instructions, sometimes a sensitive one."""
        everything = _Pools(pools.read, tuple(_FAMILIES[self.bits]), True, False)
        out = self.block(everything, self.rng.randrange(1, 4), stack=False)
        if self.chance(0.25):
            out += self.filler(everything) or []
        if self.chance(0.2):
            out.append("int3")
        return out

    def diamond(self, pools: _Pools, depth: int) -> list[str]:
        """Both arms of a jcc are valid code: a skip over one arm, or if/else (short or near jumps)."""
        rng = self.rng
        a, b = self.label("d"), self.label("d")
        if self.chance(0.4):
            body = self.inner(pools, depth, rng.randrange(1, 4))
            return self.jcc(rng.choice(_CC), b, self.chance(0.3)) + body + [f"{b}:"]
        then = self.inner(pools, depth, rng.randrange(1, 3))
        other = self.inner(pools, depth, rng.randrange(1, 3))
        return (self.jcc(rng.choice(_CC), a, self.chance(0.3)) + then + self.jmp(b, self.chance(0.3)) + [f"{a}:"]
                + other + [f"{b}:"])

    def loop(self, pools: _Pools, depth: int) -> list[str]:
        rng = self.rng
        if not pools.write:
            return self.alu(pools)
        shape = rng.randrange(4)
        if shape == 1 and "cx" not in pools.write:
            shape = 0
        counter = "cx" if shape == 1 else rng.choice(pools.write)
        inner = pools.without(counter)
        head = self.label("l")
        k = rng.randrange(1, 5)
        c32 = _reg(counter, 32)
        if shape == 1:     # loop is rel8 only: a short straight body
            body = self.block(inner, rng.randrange(1, 3), stack=inner.stack)
            return [f"mov ecx, {k}", f"{head}:"] + body + ["loop " + head]
        body = self.inner(inner, depth, rng.randrange(1, 4))
        if shape == 0:
            return [f"mov {c32}, {k}", f"{head}:"] + body + [f"dec {c32}"] + self.jcc("ne", head, self.chance(0.25))
        if shape == 2:
            return [f"mov {c32}, {k}", f"{head}:"] + body + [f"sub {c32}, 1"] + self.jcc("ne", head)
        return [f"xor {c32}, {c32}", f"{head}:"] + body + [f"inc {c32}", f"cmp {c32}, {k}"] + self.jcc(
            "b", head, self.chance(0.3))

    def function(self, pools: _Pools, depth: int, functions: list) -> str:
        """A small function (its lines into ``functions``); returns its label."""
        name = self.label("f")
        sized = self.chance(0.6)
        body: list[str] = []
        if self.chance(0.3):
            body += self.filler(pools) or []          # a sensitive instruction as the call target
        body += self.inner(pools, depth, self.rng.randrange(1, 4))
        if self.chance(0.3):
            body += self.filler(pools) or []          # the last instruction before ret
        body.append("ret")
        functions.append((name, tuple(body), sized))
        return name

    def call(self, pools: _Pools, depth: int, functions: list) -> list[str]:
        if not pools.stack:
            return self.alu(pools)
        fn = self.function(pools, depth + 1, functions)
        sized = functions[-1][2]
        if sized and pools.write and self.chance(0.3):     # indirect: only to a symbol (a known entry)
            reg = self.rng.choice(pools.write)
            load = (f"lea {_reg(reg, 64)}, [rip + {fn}]" if self.bits == 64 else f"mov {_reg(reg, 32)}, {fn}")
            return [load, f"call {_reg(reg, self.bits)}"]
        out = [f"call {fn}"]
        if self.chance(0.2):
            out.append(f"call {fn}")
        return out

    def inner(self, pools: _Pools, depth: int, n: int) -> list[str]:
        """Items inside a branch shape, a loop or a function (nesting limited by ``depth``)."""
        out: list[str] = []
        for _ in range(n):
            r = self.rng.random()
            if depth < 2 and r < 0.12:
                out += self.diamond(pools, depth + 1)
            elif depth < 2 and r < 0.2:
                out += self.loop(pools, depth + 1)
            elif depth < 2 and r < 0.25 and pools.stack:
                out += self.call(pools, depth, self._functions)
            elif r < 0.32:
                out += self.filler(pools) or self.alu(pools)
            elif r < 0.4 and pools.stack:
                out += self.stack_block(pools, self.rng.randrange(2, 6))
            else:
                out += self.block(pools, 1, stack=pools.stack)
        return out

    # ---- sensitive fillers
    def filler(self, pools: _Pools) -> list[str] | None:
        """A harmless sensitive instruction (or pair); None if the pools allow none."""
        rng, bits = self.rng, self.bits
        wr = pools.write
        pushf, popf = ("pushfq", "popfq") if bits == 64 else ("pushfd", "popfd")
        options: list[Callable[[], list[str]]] = []
        if pools.stack:
            if wr:
                options.append(lambda: [f"!{pushf}", f"pop {_reg(rng.choice(wr), bits)}"])
            options.append(lambda: [f"!{pushf}", f"!{popf}"])
            options.append(lambda: [f"!{pushf}", "!cli"] + self.block(_Pools(pools.read, pools.write, pools.memory,
                                                                               False), rng.randrange(0, 3), False)
                           + [f"!{popf}"])
        if wr:
            def cr() -> list[str]:
                regs = ["cr0", "cr2", "cr3", "cr4"] + (["cr8"] if bits == 64 else [])
                return [f"!mov {_reg(rng.choice(wr), bits)}, {rng.choice(regs)}"]
            options.append(cr)
            options.append(lambda: [f"!{rng.choice(('smsw', 'str', 'sldt'))} "
                                    f"{_reg(rng.choice(wr), rng.choice((16, 32)))}"])
            options.append(lambda: [f"!mov {_reg(rng.choice(wr), 32)}, {rng.choice(('ds', 'es', 'ss', 'cs', 'fs', 'gs'))}"])
            options.append(lambda: [f"!mov {_reg(rng.choice(wr), bits)}, {rng.choice(('dr6', 'dr7'))}"])

            def probe() -> list[str]:
                s = rng.choice(wr)
                sel = rng.choice((gg.SEL_CODE, gg.SEL_DATA, gg.SEL_TSS_A, gg.SEL_LDT, gg.SEL_UDATA | 3, 0,
                                  gg.SEL_NOT_PRESENT, 0xFFF8))
                if len(wr) >= 2 and rng.random() < 0.6:
                    d = rng.choice([f for f in wr if f != s])
                    return [f"mov {_reg(s, 32)}, {sel:#x}", f"!{rng.choice(('lar', 'lsl'))} {_reg(d, 32)}, {_reg(s, 32)}"]
                return [f"mov {_reg(s, 32)}, {sel:#x}", f"!{rng.choice(('verr', 'verw'))} {_reg(s, 16)}"]
            options.append(probe)
        if pools.memory:
            def table() -> list[str]:
                off = rng.randrange(0, gg.FUZZ_SIZE - 10)
                what = rng.choice(("sgdt", "sidt"))
                if bits == 64:
                    return [f"!{what} [{{rip:{gg.FUZZ_BUF + off:#x}}}]"]
                return [f"!{what} [{gg.FUZZ_BUF + off:#x}]"]
            options.append(table)
        if {"ax", "cx", "dx"} <= set(wr):
            options.append(lambda: [f"mov ecx, {rng.choice(_SAFE_MSRS):#x}", "!rdmsr"])
        if {"ax", "bx", "cx", "dx"} <= set(wr):
            options.append(lambda: [f"mov eax, {rng.choice((0, 1, 0x80000000, 0x80000001)):#x}", "xor ecx, ecx",
                                    "!cpuid"])
        if "ax" in wr:
            options.append(lambda: ["!in al, 0x80"])
        if "ax" in pools.read:
            options.append(lambda: ["!out 0x80, al"])
        if bits == 64:
            options.append(lambda: ["!swapgs", "!swapgs"])
        if not options:
            return None
        return rng.choice(options)()

    # ---- pieces
    def outer(self, pools: _Pools, after_pools: _Pools, ctx: Context) -> Piece:
        """A self-contained piece anywhere around the instruction (before it, after it, or both)."""
        rng = self.rng
        self._functions = []
        k = rng.randrange(16)
        part_after = rng.random() < 0.4
        p = after_pools if part_after else pools
        tags: tuple[str, ...] = ()
        if k < 3:
            lines, kind = self.block(p, rng.randrange(1, 5), stack=p.stack), "straight"
        elif k < 5:
            lines, kind = self.diamond(p, 0), "diamond"
        elif k < 7:
            lines, kind = self.loop(p, 0), "loop"
        elif k < 9:
            lines, kind = self.call(p, 0, self._functions), "call"
        elif k < 10:
            lines, kind = self.stack_block(p, rng.randrange(2, 7)), "stack"
        elif k < 11:
            lines, kind = self.code_address(p, "@SITE" if rng.random() < 0.5 else "@POST") or self.alu(p), "pc"
        elif k < 13:
            lines, kind = self.filler(p) or self.alu(p), "filler"
        else:      # a not-taken jump landing on the instruction or after it (statically a branch target)
            setup, cond = self.known(False, p)
            target = rng.choice(("@SITE", "@POST"))
            lines, kind = setup + self.jcc(cond, target, self.chance(0.3)), "land-not-taken"
            if target == "@SITE" or ctx in (Context.PLAIN, Context.BRANCH):
                tags = ("land:on",) if target == "@SITE" else ("land:after",)
        functions = tuple(self._functions)
        if part_after:
            return Piece(kind, (), tuple(lines), functions, tags)
        return Piece(kind, tuple(lines), (), functions, tags)

    def adjacent_before(self, pools: _Pools) -> Piece:
        """The code ending right before the instruction (PLAIN and function contexts)."""
        rng = self.rng
        self._functions = []
        k = rng.randrange(9)
        if k == 0:     # a taken jump over dead code lands on the instruction
            setup, cond = self.known(True, pools) if rng.random() < 0.6 else ([], "")
            near = self.chance(0.3)
            jump = self.jcc(cond, "@SITE", near) if cond else self.jmp("@SITE", near)
            return Piece("land-taken", tuple(setup + jump + self.dead(pools)), (), (), ("land:on",))
        if k == 1:     # a jump to the next instruction: either way it lands on it
            choices = [self.jcc(rng.choice(_CC), "@SITE", self.chance(0.3)), ["jmp @SITE"]]
            choices.append(["jrcxz @SITE" if self.bits == 64 and rng.random() < 0.5 else "jecxz @SITE"])
            if "cx" in pools.write:
                choices.append(["loop @SITE"])
            return Piece("land-next", tuple(rng.choice(choices)), (), (), ("land:on", "branch-before"))
        if k == 2 and pools.stack:   # a call whose ret lands on the instruction
            lines = self.call(pools, 0, self._functions)
            return Piece("call-before", tuple(lines), (), (), ("land:ret", "call-before"))
        if k == 3:     # the instruction before it is a jump target (taken over dead code, or a loop head later)
            pre = self.label("pre")
            last = self.memop(pools) if rng.random() < 0.5 else self.alu(pools)
            lines = self.jmp(pre, self.chance(0.3)) + self.dead(pools) + [f"{pre}:"] + last[-1:]
            lines = last[:-1] + lines
            return Piece("land-before", tuple(lines), (), (), ("land:before",))
        if k == 4:     # another sensitive instruction right before it
            f = self.filler(pools)
            if f:
                return Piece("filler-before", tuple(f), (), (), ("site-before",))
        if k == 5:     # a not-taken jcc right before it
            setup, cond = self.known(False, pools)
            return Piece("jcc-before", tuple(setup + self.jcc(cond, "@POST", self.chance(0.3))), (), (),
                         ("branch-before",))
        if k == 6 and self.bits == 64:
            return Piece("rip-before", tuple(self.memop(pools)), (), (), ("rip-before",))
        if k == 7 and pools.stack:
            return Piece("push-before", tuple(self.stack_block(pools, rng.randrange(1, 4))), (), (), ())
        return Piece("straight-before", tuple(self.block(pools, rng.randrange(1, 3), stack=pools.stack)), (), (), ())

    def adjacent_after(self, pools: _Pools) -> Piece:
        """The code starting right after the instruction."""
        rng = self.rng
        self._functions = []
        k = rng.randrange(7)
        if k == 0 and pools.stack:
            return Piece("call-after", (), tuple(self.call(pools, 0, self._functions)), (), ("call-after",))
        if k == 1:
            return Piece("branch-after", (), tuple(self.diamond(pools, 1)), (), ("branch-after",))
        if k == 2:
            f = self.filler(pools)
            if f:
                return Piece("filler-after", (), tuple(f), (), ("site-after",))
        if k == 3:     # a not-taken backward jump to the instruction
            setup, cond = self.known(False, pools)
            return Piece("land-back", (), tuple(setup + self.jcc(cond, "@SITE", self.chance(0.3))), (),
                         ("land:on", "backward"))
        if k == 4 and self.bits == 64 and pools.memory:
            return Piece("rip-after", (), tuple(self.memop(pools) if rng.random() < 0.6
                                                else self.code_address(pools, "@SITE") or self.alu(pools)), (),
                         ("rip-after",))
        if k == 5:
            nxt = self.label("n")
            return Piece("jump-after", (), tuple(rng.choice((self.jmp(nxt), [f"jecxz {nxt}"], self.jcc(
                rng.choice(_CC), nxt))) + [f"{nxt}:"]), (), ("branch-after",))
        return Piece("straight-after", (), tuple(self.block(pools, rng.randrange(1, 3), stack=pools.stack)), (), ())

    def around(self, prof: SiteProfile, pools: _Pools, after_pools: _Pools, ctx: Context
               ) -> tuple[Piece | None, _Pools]:
        """A piece touching the instruction on both sides: flags across it, a loop through it or headed
        right after it. Returns it and the pools for pieces inside it."""
        rng = self.rng
        k = 2 if ctx is Context.BRANCH else rng.randrange(4)   # BRANCH: the flags are set up right before it
        free = tuple(f for f in pools.write if f not in prof.writes and f in after_pools.write)
        if k == 0 or (k in (1, 2) and not free):
            setter = rng.choice((self.alu(pools), [f"cmp {_reg(rng.choice(pools.read), 32)}, {self.imm_text(32)}"]
                                 if pools.read else ["stc"], [rng.choice(("stc", "clc", "cmc"))]))
            wr = after_pools.write
            consumer: list[str]
            r = rng.random()
            if r < 0.3 and any(_byte_ok(f, self.bits) for f in wr):
                consumer = [f"set{rng.choice(_CC)} {_reg(rng.choice([f for f in wr if _byte_ok(f, self.bits)]), 8)}"]
            elif r < 0.5 and wr:
                consumer = [f"{rng.choice(('adc', 'sbb'))} {_reg(rng.choice(wr), 32)}, {rng.randrange(256)}"]
            elif r < 0.65 and wr and after_pools.read:
                consumer = [f"cmov{rng.choice(_CC)} {_reg(rng.choice(wr), 32)}, {_reg(rng.choice(after_pools.read), 32)}"]
            else:
                skip = self.label("fl")
                consumer = self.jcc(rng.choice(_CC), skip) + self.block(after_pools, 1, stack=False) + [f"{skip}:"]
            return Piece("flags-across", tuple(setter[-1:]), tuple(consumer), (), ("flags-across",)), after_pools
        if k == 1 and ctx is Context.PLAIN and prof.loop_safe and free:   # a loop through the instruction
            counter = rng.choice(free)
            c32 = _reg(counter, 32)
            head = rng.choice(("@SITE", "@PRE"))
            before = [f"mov {c32}, {rng.randrange(2, 4)}"]
            tags = ["loop-through"]
            if head == "@PRE":      # one instruction, run on every iteration: no index set-up before it
                self.indexed = False
                last = self.memop(pools.without(counter)) if rng.random() < 0.5 else self.alu(pools.without(counter))
                self.indexed = True
                before += ["@PRE:", *last]
                tags.append("land:before")
            else:
                tags.append("land:on")
            inside = _Pools(after_pools.read, tuple(f for f in after_pools.write if f not in prof.reads
                                                    and f != counter), after_pools.memory, after_pools.stack)
            return Piece("loop-through", tuple(before), (f"dec {c32}", *self.jcc("ne", head, self.chance(0.25))), (),
                         tuple(tags)), inside
        if k == 2 and ctx in (Context.PLAIN, Context.BRANCH) and free:     # a loop headed right after it
            counter = rng.choice(free)
            c32 = _reg(counter, 32)
            body = self.block(after_pools.without(counter), rng.randrange(1, 3), stack=after_pools.stack)
            return Piece("loop-after", (f"mov {c32}, {rng.randrange(1, 4)}",),
                         tuple(body + [f"dec {c32}"] + self.jcc("ne", "@POST", self.chance(0.25))), (),
                         ("land:after", "backward")), after_pools
        return None, after_pools

    def case(self, entry: str, index: int, ctx: Context) -> FuzzCase:
        rng, bits = self.rng, self.bits
        prof = site_profile(entry, bits, index)
        fams = _FAMILIES[bits]
        pools = _Pools(fams, tuple(f for f in fams if f not in prof.reads))
        after_read = tuple(f for f in fams if f not in prof.taboo)
        after_pools = _Pools(after_read, tuple(f for f in after_read), prof.memory_after, prof.memory_after)
        pieces: list[Piece] = []

        def add(make: Callable[..., Piece], *args) -> Piece:
            self._functions = []            # the functions its calls create belong to the piece
            piece = make(*args)
            piece = replace(piece, functions=tuple(self._functions), tags=piece.tags + _shape_tags(piece))
            pieces.append(piece)
            return piece

        for _ in range(rng.randint(*PIECES_PER_CASE)):
            add(self.outer, pools, after_pools, ctx)
        adjacent_before = ctx in (Context.PLAIN, Context.FUNC_RET, Context.FUNC_END)
        if rng.random() < 0.45:
            self._functions = []
            piece, inside = self.around(prof, pools, after_pools, ctx)
            if piece is not None:
                pieces.append(replace(piece, tags=piece.tags + _shape_tags(piece)))
                if rng.random() < 0.5 and piece.kind != "loop-after":
                    add(self.adjacent_after, inside)
            elif adjacent_before:
                add(self.adjacent_before, pools)
        else:
            if adjacent_before and rng.random() < 0.85:
                add(self.adjacent_before, pools)
            if rng.random() < 0.6:
                add(self.adjacent_after, after_pools)
        return FuzzCase(entry, index, ctx, rng.getrandbits(32), tuple(pieces))


def _shape_tags(piece: Piece) -> tuple[str, ...]:
    """Tags read from a piece's code: near branches, RIP-relative operands, sensitive fillers, calls, loops."""
    text = "\n".join([*piece.before, *piece.after, *(line for _n, body, _s in piece.functions for line in body)])
    found = []
    if ".byte 0x0f, 0x8" in text or ".byte 0xe9" in text:
        found.append("near")
    if "{rip:" in text or "[rip +" in text:
        found.append("rip")
    if "\n!" in "\n" + text:
        found.append("filler-site")
    if "call " in text:
        found.append("call")
    if "loop " in text or "jrcxz" in text or "jecxz" in text:
        found.append("rcx-branch")
    if "push " in text or "pop " in text:
        found.append("stack")
    return tuple(found)


def program(seed: int, bits: int | None = None, cases: int | None = None) -> FuzzProgram:
    """The fuzz program of ``seed`` (``bits`` and ``cases`` override what the seed draws)."""
    rng = random.Random(seed)
    drawn_bits = rng.choice((32, 64))
    bits = bits or drawn_bits
    count = rng.randint(*CASES_PER_GUEST)
    count = cases or count
    weaver = _Weaver(rng, bits)
    entries = entries_for(bits)
    out = []
    for _ in range(count):
        entry = rng.choice(entries)
        index = rng.randrange(len(variants_for(entry, bits)))
        ctx = rng.choice(gg.CONTEXTS)
        out.append(weaver.case(entry, index, ctx))
    return FuzzProgram(seed, bits, tuple(out))


# --------------------------------------------------------------------------- what the guest really does

def _text_of_elf(elf: bytes, va: int) -> tuple[int, bytes]:
    """The bytes of the PT_LOAD holding ``va``: (segment vaddr, data)."""
    for h in read_layout(io.BytesIO(elf)).loads:
        if h.vaddr <= va < h.vaddr + h.filesz:
            return h.vaddr, elf[h.offset:h.offset + h.filesz]
    raise ValueError(f"no PT_LOAD holds {va:#x}")


def landings(guest: Guest) -> dict[int, set[str]]:
    """Per case: "on" if a direct branch or call lands on its instruction, "after" if one lands on the
    byte after it, "before" if one lands on the instruction just before it — read from the ELF by
    Capstone (a linear sweep of the main code), not from the generator's records."""
    start = gg.MAIN64 if guest.bits == 64 else gg.CODE
    seg_va, data = _text_of_elf(guest.elf, start)
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64 if guest.bits == 64 else capstone.CS_MODE_32)
    blob = data[start - seg_va:]
    targets: set[int] = set()
    previous: dict[int, int] = {}
    last = None
    for address, size, mnemonic, op_str in md.disasm_lite(blob, start):
        if (mnemonic.startswith("j") or mnemonic in ("call", "loop", "loope", "loopne")) and \
                re.fullmatch(r"0x[0-9a-f]+", op_str):
            targets.add(int(op_str, 16))
        if last is not None:
            previous[address] = last
        last = address
    out: dict[int, set[str]] = {}
    for case in guest.cases:
        found = set()
        if case.insn_va in targets:
            found.add("on")
        if case.insn_va + len(case.insn_bytes) in targets:
            found.add("after")
        if previous.get(case.insn_va) in targets:
            found.add("before")
        out[case.index] = found
    return out


def tag_counts(programs: Iterable[FuzzProgram]) -> Counter:
    """How often each piece tag and kind occurs over ``programs`` (coverage of the shapes)."""
    c: Counter = Counter()
    for p in programs:
        for case in p.cases:
            for piece in case.pieces:
                c[f"kind:{piece.kind}"] += 1
                for t in piece.tags:
                    c[t] += 1
    return c
