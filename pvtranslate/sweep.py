"""Linear sweep of code that no symbol describes: candidate sites, branch targets and counts, fast.

A stripped kernel (Debian's vmlinux keeps no symbol table) gives recursive traversal too few
starting points: function pointers and retpoline thunks hide most functions. Such sections are
swept linearly in the kernel's bulk mode instead. The sweep keeps no instructions: only the
addresses of candidate sites (a superset: ``decode`` classifies them with detail), the direct
branch targets and the number of instructions, so memory stays small on tens of megabytes.

Speed: Capstone's ``cs_disasm`` decodes a chunk into its array of ``cs_insn`` structs, and the
sweep reads that array in place with numpy (instruction ids, addresses, operand text) instead of
making a Python tuple per instruction as ``disasm_lite`` does; only candidates and direct branches
are looked at one by one. ctypes releases the GIL during ``cs_disasm``, so pieces are swept on
threads, all cores at once, sharing the code bytes.

Large gaps are cut into pieces at likely function starts (a 16-byte aligned address after int3
padding). A cut is only a guess: a piece is accepted when the sweep before it ended exactly at its
start, which is what one serial sweep would have done; otherwise it is swept again from where the
previous piece ended. Undecodable bytes are skipped one at a time and reported, as a serial sweep
does.
"""
from __future__ import annotations

import ctypes
import os
import re
from array import array
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import capstone
import numpy as np
from capstone import x86_const as X

PIECE_BYTES = 1 << 20          # work unit of the parallel sweep
CHUNK_BYTES = 1 << 14          # one cs_disasm call decodes this much (its array: ~60 bytes per code byte)
PARALLEL_MIN_BYTES = 2 << 20   # below this the sweep runs on the calling thread
_MAX_INSN = 15

CS_MODE = {16: capstone.CS_MODE_16, 32: capstone.CS_MODE_32, 64: capstone.CS_MODE_64}
BRANCH_IDS = frozenset((X.X86_INS_JMP, X.X86_INS_CALL, X.X86_INS_JO, X.X86_INS_JNO, X.X86_INS_JB, X.X86_INS_JAE,
                        X.X86_INS_JE, X.X86_INS_JNE, X.X86_INS_JBE, X.X86_INS_JA, X.X86_INS_JS, X.X86_INS_JNS,
                        X.X86_INS_JP, X.X86_INS_JNP, X.X86_INS_JL, X.X86_INS_JGE, X.X86_INS_JLE, X.X86_INS_JG,
                        X.X86_INS_LOOP, X.X86_INS_LOOPE, X.X86_INS_LOOPNE, X.X86_INS_JCXZ, X.X86_INS_JECXZ,
                        X.X86_INS_JRCXZ))
SENSITIVE_OPERAND = r"\b(cr\d+|dr\d|[c-gs]s)\b(?!:)"  # a control, debug or segment register, not an override (gs:[...])
_SENSITIVE_OPERAND = re.compile(SENSITIVE_OPERAND.encode())

# cs_insn read in place: field offsets from the binding's own ctypes struct
_INSN = capstone._cs_insn
_ITEM = ctypes.sizeof(_INSN)
_ID, _ADDRESS, _SIZE = _INSN.id.offset, _INSN.address.offset, _INSN.size.offset
_BYTES, _OP_STR, _OP_STR_SIZE = _INSN.bytes.offset, _INSN.op_str.offset, _INSN.op_str.size
_INSN_DTYPE = np.dtype({"names": ["id", "address", "size"], "formats": ["=u4", "=u8", "=u2"],
                        "offsets": [_ID, _ADDRESS, _SIZE], "itemsize": _ITEM})

# Opcode bytes (after prefixes) whose mov/push/pop forms only name general registers, memory or an
# immediate; every other form of an operand-checked mnemonic gets its operand text looked at.
_PREFIX = np.zeros(256, np.bool_)
_PREFIX[[0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3, *range(0x40, 0x50)]] = True
_PLAIN_OPCODE = np.zeros(256, np.bool_)
_PLAIN_OPCODE[[*range(0x88, 0x8C), *range(0xA0, 0xA4), *range(0xB0, 0xC0), 0xC6, 0xC7,    # mov
               *range(0x50, 0x60), 0x68, 0x6A, 0xFF, 0x8F]] = True                        # push, pop
_HEX = np.full(256, 0xFF, np.uint8)   # hex digit value; 0xFF: not a digit
_HEX[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)
_HEX_DIGITS = 16
_INT3_RUN = re.compile(rb"\xcc\xcc+")


@dataclass
class SweepResult:
    """What the sweep of one address range found."""

    start: int                         # VA where the sweep began
    end: int                           # VA just after the last instruction (or skipped byte)
    instructions: int = 0
    candidates: list[int] = field(default_factory=list)    # VAs that may be sites
    windows: list[int] = field(default_factory=list)       # per candidate: start of the 3rd instruction before
    targets: array = field(default_factory=lambda: array("Q"))  # direct branch targets
    invalid: list[int] = field(default_factory=list)       # VAs of bytes skipped as undecodable
    earliest_tail: int = 0                                 # start of the 3rd-last instruction swept


@dataclass(frozen=True)
class _Kinds:
    """Per Capstone instruction id: 0 nothing, 1 direct-branch candidate, 2 site candidate,
    3 site candidate only if an operand names a control, debug or segment register."""

    table: np.ndarray

    @classmethod
    def of(cls, candidates: frozenset[int], operand_checked: frozenset[int]) -> _Kinds:
        table = np.zeros(X.X86_INS_ENDING + 1, np.uint8)
        table[list(BRANCH_IDS)] = 1
        table[list(candidates)] = 2
        table[list(operand_checked & candidates)] = 3
        return cls(table)


class _ChunkDecoder:
    """One Capstone handle (one per thread: a handle is not shared) and the chunk it last decoded."""

    def __init__(self, bits: int):
        self.md = capstone.Cs(capstone.CS_ARCH_X86, CS_MODE[bits])
        self._all = ctypes.POINTER(_INSN)()

    def decode(self, code: np.ndarray, off: int, length: int, va: int) -> tuple[int, np.ndarray | None]:
        """Decode code[off:off+length] at va: (count, the cs_insn array as rows of bytes) until free()."""
        at = ctypes.cast(code.ctypes.data + off, ctypes.POINTER(ctypes.c_char))
        n = capstone._cs.cs_disasm(self.md.csh, at, length, va, 0, ctypes.byref(self._all))
        if n <= 0:
            return 0, None
        raw = (ctypes.c_uint8 * (n * _ITEM)).from_address(ctypes.addressof(self._all.contents))
        return n, np.frombuffer(raw, np.uint8).reshape(n, _ITEM)

    def free(self, n: int) -> None:
        if n > 0:
            capstone._cs.cs_free(self._all, n)


def _targets(rows: np.ndarray, out: array) -> None:
    """Append the targets of the direct branches among ``rows`` (operand text "0x<hex>") to ``out``."""
    op = rows[:, _OP_STR:_OP_STR + 2 + _HEX_DIGITS + 1]
    rows_direct = (op[:, 0] == ord("0")) & (op[:, 1] == ord("x"))
    if not rows_direct.any():
        return
    digits = _HEX[op[rows_direct, 2:]]
    is_digit = digits != 0xFF
    length = np.argmin(is_digit, axis=1)            # digits before the first non-digit
    terminated = op[rows_direct, 2:][np.arange(len(length)), length] == 0
    value = np.zeros(len(length), np.uint64)
    for k in range(_HEX_DIGITS):
        take = k < length
        value = np.where(take, value * np.uint64(16) + digits[:, k].astype(np.uint64), value)
    out.frombytes(value[terminated].astype("=u8").tobytes())  # not terminated: not one number (a far pointer)


def sweep_range(data: bytes, base: int, start: int, end: int, bits: int, kinds: _Kinds) -> SweepResult:
    """Sweep [start, end) of ``data`` (mapped at ``base``); the last instruction may run past end."""
    code = np.frombuffer(data, np.uint8)  # cs_disasm reads the bytes in place
    if not base <= start <= base + len(code):
        raise ValueError(f"sweep start {start:#x} outside the code at {base:#x}..{base + len(code):#x}")
    dec = _ChunkDecoder(bits)
    res = SweepResult(start, start)
    cands, windows, targets, invalid = res.candidates, res.windows, res.targets, res.invalid
    count = 0
    va = start
    last3 = [start, start, start]  # starts of the last three instructions (the planner may displace them)
    limit = min(end, base + len(code))
    table = kinds.table
    while va < limit:
        off = va - base
        stop = min(off + CHUNK_BYTES, limit - base)
        n, rows = dec.decode(code, off, min(stop + _MAX_INSN, len(code)) - off, va)
        try:
            if n == 0:                 # undecodable byte: skip it, as a serial sweep does
                invalid.append(va)
                va += 1
                last3 = [va, va, va]
                continue
            insns = rows.view(_INSN_DTYPE)[:, 0]
            addresses = insns["address"]
            # only instructions starting before stop (uint64 arithmetic: a Python int would compare as float)
            n = int(np.count_nonzero(addresses - np.uint64(va) < np.uint64(base + stop - va)))
            addresses = addresses[:n]
            kind = table[insns["id"][:n]]
            branch = np.flatnonzero(kind == 1)
            if len(branch):
                _targets(rows[branch], targets)
            site = np.flatnonzero(kind >= 2)
            if len(site):
                checked = site[kind[site] == 3]
                if len(checked):
                    head = rows[checked, _BYTES:_BYTES + _MAX_INSN]
                    opcode = head[np.arange(len(checked)), np.argmin(_PREFIX[head], axis=1)]
                    plain = set(checked[_PLAIN_OPCODE[opcode]].tolist())
                    site = [i for i in site.tolist() if i not in plain and (kind[i] == 2 or _SENSITIVE_OPERAND.search(
                        bytes(rows[i, _OP_STR:_OP_STR + _OP_STR_SIZE]).split(b"\0", 1)[0]))]
                for i in site:
                    cands.append(int(addresses[i]))
                    windows.append(int(addresses[i - 3]) if i >= 3 else last3[i])
            if n >= 3:
                last3 = addresses[n - 3:n].tolist()
            else:
                last3 = (last3 + addresses.tolist())[-3:]
            count += n
            va = int(addresses[n - 1]) + int(insns["size"][n - 1])
        finally:
            dec.free(len(rows) if rows is not None else 0)
    res.end = va
    res.instructions = count
    res.earliest_tail = last3[0]
    return res


def _cut_points(base: int, data: bytes, lo: int, hi: int) -> list[int]:
    """Likely function starts about every PIECE_BYTES in [lo, hi): a 16-aligned VA after int3s."""
    cuts = [lo]
    at = lo + PIECE_BYTES
    while at < hi:
        for m in _INT3_RUN.finditer(data, at - base, hi - base):
            if (base + m.end()) % 16 == 0 and m.end() < hi - base:
                cuts.append(base + m.end())
                break
        else:
            break
        at = cuts[-1] + PIECE_BYTES
    return cuts


def sweep(ranges: list[tuple[int, bytes, int, int, int]], candidates: frozenset[int],
          operand_checked: frozenset[int], workers: int | None = None) -> list[SweepResult]:
    """Sweep every (base, data, start, end, bits) range; one result per range, in order.

    ``candidates``: Capstone ids of instructions that may be sites; those also in ``operand_checked``
    only when an operand names a control, debug or segment register."""
    kinds = _Kinds.of(candidates, operand_checked)
    tasks = []
    for base, data, lo, hi, bits in ranges:
        cuts = _cut_points(base, data, lo, hi) + [hi]
        tasks.append([(data, base, a, b, bits) for a, b in zip(cuts, cuts[1:])])
    total = sum(hi - lo for _b, _d, lo, hi, _bits in ranges)
    workers = workers or min(os.cpu_count() or 1, 8)
    flat = [t for ts in tasks for t in ts]
    if workers > 1 and total >= PARALLEL_MIN_BYTES and len(flat) > 1:
        with ThreadPoolExecutor(workers) as pool:
            done = iter(list(pool.map(lambda t: sweep_range(*t, kinds), flat)))
    else:
        done = iter([sweep_range(*t, kinds) for t in flat])
    out = []
    for ts in tasks:
        pieces = [next(done) for _ in ts]
        merged = SweepResult(pieces[0].start, pieces[0].start, earliest_tail=pieces[0].start)
        for (data, base, lo, hi, bits), piece in zip(ts, pieces):
            if piece.start != merged.end:          # the previous piece ran past this cut: redo it
                if merged.end >= hi:
                    continue
                piece = sweep_range(data, base, merged.end, hi, bits, kinds)
            merged.instructions += piece.instructions
            merged.candidates += piece.candidates
            # a candidate among a piece's first instructions may displace some before the cut
            merged.windows += [w if w != piece.start or merged.end == pieces[0].start else merged.earliest_tail
                               for w in piece.windows]
            merged.earliest_tail = piece.earliest_tail if piece.instructions >= 3 else min(
                piece.earliest_tail, merged.earliest_tail)
            merged.targets.extend(piece.targets)
            merged.invalid += piece.invalid
            merged.end = piece.end
        out.append(merged)
    return out
