"""Linear sweep of code that no symbol describes: candidate sites, branch targets and counts, fast.

A stripped kernel (Debian's vmlinux keeps no symbol table) gives recursive traversal too few
starting points: function pointers and retpoline thunks hide most functions. Such sections are
swept linearly in the kernel's bulk mode instead. The sweep keeps no instructions: only the
addresses of candidate sites (a superset: ``decode`` classifies them with detail), the direct
branch targets and the number of instructions, so memory stays small on tens of megabytes.

Large gaps are cut into pieces at likely function starts (a 16-byte aligned address after int3
padding) and swept in worker processes on all cores. A cut is only a guess: a piece is accepted
when the sweep before it ended exactly at its start, which is what one serial sweep would have
done; otherwise it is swept again from where the previous piece ended. Undecodable bytes are
skipped one at a time and reported, as a serial sweep does.
"""
from __future__ import annotations

import multiprocessing
import os
import re
from array import array
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import capstone

PIECE_BYTES = 1 << 20          # work unit of the parallel sweep
CHUNK_BYTES = 1 << 16          # Capstone decodes a whole buffer eagerly: feed it this much at a time
PARALLEL_MIN_BYTES = 2 << 20   # below this the sweep runs in-process
_MAX_INSN = 15

_BRANCHES = frozenset(("jmp", "call", "jo", "jno", "jb", "jae", "je", "jne", "jbe", "ja", "js", "jns", "jp",
                       "jnp", "jl", "jge", "jle", "jg", "loop", "loope", "loopne", "jcxz", "jecxz", "jrcxz"))
_SREG_WORDS = re.compile(r"\b(cr\d+|dr\d|[c-gs]s)\b(?!:)")  # not a segment override (gs:[...])


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


# Set in the parent before the workers fork; read by them (no pickling of the code bytes).
_CODE: dict[int, tuple[int, bytes]] = {}


def sweep_range(key: int, start: int, end: int, bits: int, candidates: frozenset[str],
                operand_checked: frozenset[str]) -> SweepResult:
    """Sweep [start, end) of the code registered under ``key``; the last instruction may run past end."""
    base, data = _CODE[key]
    md = capstone.Cs(capstone.CS_ARCH_X86, {16: capstone.CS_MODE_16, 32: capstone.CS_MODE_32,
                                            64: capstone.CS_MODE_64}[bits])
    res = SweepResult(start, start)
    cands, windows, targets, invalid = res.candidates, res.windows, res.targets, res.invalid
    count = 0
    va = start
    p1 = p2 = p3 = start  # starts of the last three instructions (the planner may displace them)
    limit = min(end, base + len(data))
    search = _SREG_WORDS.search
    while va < limit:
        off = va - base
        stop = min(off + CHUNK_BYTES, limit - base)
        buf = data[off:min(stop + _MAX_INSN, len(data))]
        stop_va = base + stop
        nxt = va
        for a, size, mn, op in md.disasm_lite(buf, va):
            if a >= stop_va:
                break
            count += 1
            nxt = a + size
            if " " in mn:
                mn = mn.rsplit(" ", 1)[-1]
            if mn in _BRANCHES:
                if op[:2] == "0x":
                    targets.append(int(op, 16))
            elif mn in candidates and (mn not in operand_checked or search(op)):
                cands.append(a)
                windows.append(p3)
            p3, p2, p1 = p2, p1, a
        if nxt == va:                  # undecodable byte: skip it, as a serial sweep does
            invalid.append(va)
            nxt = va + 1
            p1 = p2 = p3 = nxt
        va = nxt
    res.end = va
    res.instructions = count
    res.earliest_tail = p3
    return res


def _cut_points(base: int, data: bytes, lo: int, hi: int) -> list[int]:
    """Likely function starts about every PIECE_BYTES in [lo, hi): a 16-aligned VA after int3s."""
    cuts = [lo]
    at = lo + PIECE_BYTES
    while at < hi:
        k = data.find(b"\xcc\xcc", at - base, hi - base)
        while k != -1:
            j = k
            while j < hi - base and data[j] == 0xCC:
                j += 1
            if (base + j) % 16 == 0 and j < hi - base:
                break
            k = data.find(b"\xcc\xcc", j, hi - base)
        if k == -1:
            break
        cuts.append(base + j)
        at = base + j + PIECE_BYTES
    return cuts


def sweep(ranges: list[tuple[int, bytes, int, int, int]], candidates: frozenset[str],
          operand_checked: frozenset[str], workers: int | None = None) -> list[SweepResult]:
    """Sweep every (base, data, start, end, bits) range; one result per range, in order.

    ``candidates``: mnemonics that may be sites; those also in ``operand_checked`` only when an
    operand names a control, debug or segment register."""
    _CODE.clear()
    tasks = []
    for key, (base, data, lo, hi, bits) in enumerate(ranges):
        _CODE[key] = (base, data)
        cuts = _cut_points(base, data, lo, hi) + [hi]
        tasks.append([(key, a, b, bits) for a, b in zip(cuts, cuts[1:])])
    total = sum(hi - lo for _b, _d, lo, hi, _bits in ranges)
    workers = workers or min(os.cpu_count() or 1, 8)
    flat = [t for ts in tasks for t in ts]
    if workers > 1 and total >= PARALLEL_MIN_BYTES and len(flat) > 1:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            futures = [pool.submit(sweep_range, *t, candidates, operand_checked) for t in flat]
            done = iter([f.result() for f in futures])
    else:
        done = iter([sweep_range(*t, candidates, operand_checked) for t in flat])
    out = []
    for key, ts in enumerate(tasks):
        pieces = [next(done) for _ in ts]
        merged = SweepResult(pieces[0].start, pieces[0].start, earliest_tail=pieces[0].start)
        for (_k, lo, hi, bits), piece in zip(ts, pieces):
            if piece.start != merged.end:          # the previous piece ran past this cut: redo it
                if merged.end >= hi:
                    continue
                piece = sweep_range(key, merged.end, hi, bits, candidates, operand_checked)
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
    _CODE.clear()
    return out
