"""The linear sweep against a plain one-instruction-at-a-time sweep, and its parallel form against
its serial form, cuts and all."""
from __future__ import annotations

import random
import re
from pathlib import Path

import capstone
import keystone
import pytest

from pvtranslate import sweep as S
from pvtranslate.catalog import CANDIDATE_IDS
from pvtranslate.decode import _NEEDS_OPERAND_CHECK_IDS
from pvtranslate.image import load_image

from tests.pvtranslate.test_catalog import ASM_CASES, RAW_CASES, assemble

ROOT = Path(__file__).resolve().parents[2]
BASE = 0x40_0000
_KINDS = S._Kinds.of(CANDIDATE_IDS, _NEEDS_OPERAND_CHECK_IDS)
_MODES = {16: capstone.CS_MODE_16, 32: capstone.CS_MODE_32, 64: capstone.CS_MODE_64}


def _serial(base: int, data: bytes, bits: int) -> S.SweepResult:
    return S.sweep_range(bytearray(data), base, base, base + len(data), bits, _KINDS)


def _reference(base: int, data: bytes, bits: int, start: int | None = None, end: int | None = None) -> S.SweepResult:
    """The sweep written the obvious way: Capstone objects, one instruction at a time."""
    md = capstone.Cs(capstone.CS_ARCH_X86, _MODES[bits])
    va = base if start is None else start
    end = base + len(data) if end is None else end
    res = S.SweepResult(va, va)
    recent = [va] * 3
    while va < end:
        start = va
        for insn in md.disasm(data[va - base:], va):
            if insn.address >= end:
                break
            res.instructions += 1
            if insn.id in S.BRANCH_IDS and re.fullmatch(r"0x[0-9a-f]+", insn.op_str):
                res.targets.append(int(insn.op_str, 16))
            elif insn.id in CANDIDATE_IDS and (insn.id not in _NEEDS_OPERAND_CHECK_IDS or re.search(
                    r"\b(cr\d+|dr\d|[c-gs]s)\b(?!:)", insn.op_str)):
                res.candidates.append(insn.address)
                res.windows.append(recent[-3])
            recent.append(insn.address)
            va = insn.address + insn.size
        if va == start:
            res.invalid.append(va)
            va += 1
            recent = [va] * 3
    res.end, res.earliest_tail = va, recent[-3]
    return res


def _same(a: S.SweepResult, b: S.SweepResult) -> None:
    assert (a.start, a.end, a.instructions) == (b.start, b.end, b.instructions)
    assert a.candidates == b.candidates
    # a window may reach further back than the serial one (across a cut), never less far
    assert all(w <= v for w, v in zip(a.windows, b.windows)) and len(a.windows) == len(b.windows)
    assert list(a.targets) == list(b.targets) and a.invalid == b.invalid


@pytest.fixture
def small_pieces(monkeypatch):
    monkeypatch.setattr(S, "PIECE_BYTES", 48)
    monkeypatch.setattr(S, "CHUNK_BYTES", 32)
    monkeypatch.setattr(S, "PARALLEL_MIN_BYTES", 0)


def test_cut_inside_an_instruction_is_detected_and_reswept(small_pieces):
    """int3 bytes inside an immediate look like padding before an aligned function start: a piece
    cut there starts mid-instruction; the merge must notice and redo it from the true boundary."""
    ks = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64)
    body = "; ".join(["cli", "mov rax, 0xcccccccccccccccc", "sti", "in al, dx", "call 0x400000", "nop"] * 48)
    code = bytes(ks.asm(body, BASE)[0])
    cuts = S._cut_points(BASE, code, BASE, BASE + len(code))
    assert len(cuts) > 2, "the fixture must produce cuts"
    expected = _serial(BASE, code, 64)
    for workers in (1, 2):
        (got,) = S.sweep([(BASE, code, BASE, BASE + len(code), 64)], CANDIDATE_IDS, _NEEDS_OPERAND_CHECK_IDS,
                         workers=workers)
        _same(got, expected)
    assert len(expected.candidates) == 3 * 48 and len(expected.targets) == 48


@pytest.mark.parametrize("sample", ["zoo/zoo64.elf", "irq/irq64.elf", "io/io64.elf"])
def test_parallel_sweep_of_real_code_equals_serial(small_pieces, sample):
    image = load_image(ROOT / "samples" / sample)
    for region in image.code:
        expected = _serial(region.start_va, region.data, 64)
        (got,) = S.sweep([(region.start_va, region.data, region.start_va, region.end_va, 64)],
                         CANDIDATE_IDS, _NEEDS_OPERAND_CHECK_IDS, workers=2)
        _same(got, expected)


def test_undecodable_bytes_are_skipped_one_at_a_time():
    code = b"\x90\x0f\x0b\xff\xff\xfa"  # nop, ud2, two bytes no instruction starts with, cli
    res = _serial(BASE, code, 64)
    assert res.invalid == [BASE + 3] or res.invalid == [BASE + 3, BASE + 4]
    assert BASE + 5 in res.candidates and res.end == BASE + len(code)


def _catalog_stream(bits: int, seed: int) -> bytes:
    """Every catalog form of this mode, each between ordinary instructions, shuffled."""
    forms = [assemble(text, bits) for _name, text, modes in ASM_CASES if bits in modes]
    forms += [bytes.fromhex(h) for _name, h, b in RAW_CASES if b == bits]
    ordinary = [assemble(t, bits) for t in ("mov eax, 1", "push 0x10", "mov dword ptr [esp], ebx",
                                            "mov dword ptr fs:[0x10], eax", "pop cx", "jmp 0x1010",
                                            "call 0x1020", "je 0x1000", "nop")]
    rng = random.Random(seed)
    out = []
    for form in forms * 3:
        out += rng.sample(ordinary, 2) + [form]
    rng.shuffle(out)
    return b"".join(out)


@pytest.mark.parametrize("bits", [32, 64])
def test_sweep_finds_every_catalog_form_as_the_reference_does(bits):
    code = _catalog_stream(bits, bits)
    got, expected = _serial(BASE, code, bits), _reference(BASE, code, bits)
    assert got == expected
    assert len(expected.candidates) >= len([c for c in ASM_CASES if bits in c[2]]) * 3


@pytest.mark.parametrize("bits", [16, 32, 64])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("base", [BASE, 2**60 + 3, 0xFFFF_FFFF_8100_0000, 2**64 - 6000])
def test_sweep_of_random_bytes_equals_the_reference(bits, seed, base, monkeypatch):
    """Random bytes: every prefix, opcode, invalid encoding and chunk boundary the fast path meets, at
    addresses where a float would round (2**60) and up to the top of the address space; the range
    starts and ends inside the bytes it is given."""
    monkeypatch.setattr(S, "CHUNK_BYTES", 97)
    rng = random.Random(seed)
    code = bytes(rng.choice((0x0F, 0x8C, 0x8E, 0x66, 0xF3, 0x40, 0x48, 0xFA, 0xE8, 0xEB, rng.randrange(256)))
                 for _ in range(6000))
    start, end = base + rng.randrange(40), base + len(code) - rng.randrange(1, 40)
    got = S.sweep_range(code, base, start, end, bits, _KINDS)
    expected = _reference(base, code, bits, start, end)
    assert got == expected
    assert expected.candidates and expected.targets and expected.invalid


def test_sweep_start_outside_its_code_is_refused():
    with pytest.raises(ValueError, match="outside the code"):
        S.sweep_range(b"\x90" * 32, BASE, BASE - 0x40, BASE + 32, 64, _KINDS)


@pytest.mark.parametrize("sample", ["zoo/zoo32.elf", "zoo/zoo64.elf", "irq/irq64.elf", "io/io32.elf"])
def test_sweep_of_real_code_equals_the_reference(sample):
    image = load_image(ROOT / "samples" / sample)
    for region in image.code:
        bits = int(image.elf_class)
        assert _serial(region.start_va, region.data, bits) == _reference(region.start_va, region.data, bits)
