"""The parallel linear sweep finds exactly what one serial sweep finds, cuts and all."""
from __future__ import annotations

from pathlib import Path

import keystone
import pytest

from pvtranslate import sweep as S
from pvtranslate.decode import _CANDIDATE_MNEMONICS, _NEEDS_OPERAND_CHECK
from pvtranslate.image import load_image

ROOT = Path(__file__).resolve().parents[2]
BASE = 0x40_0000


def _serial(base: int, data: bytes, bits: int) -> S.SweepResult:
    S._CODE.clear()
    S._CODE[0] = (base, data)
    return S.sweep_range(0, base, base + len(data), bits, _CANDIDATE_MNEMONICS, _NEEDS_OPERAND_CHECK)


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
        (got,) = S.sweep([(BASE, code, BASE, BASE + len(code), 64)], _CANDIDATE_MNEMONICS, _NEEDS_OPERAND_CHECK,
                         workers=workers)
        _same(got, expected)
    assert len(expected.candidates) == 3 * 48 and len(expected.targets) == 48


@pytest.mark.parametrize("sample", ["zoo/zoo64.elf", "irq/irq64.elf", "io/io64.elf"])
def test_parallel_sweep_of_real_code_equals_serial(small_pieces, sample):
    image = load_image(ROOT / "samples" / sample)
    for region in image.code:
        expected = _serial(region.start_va, region.data, 64)
        (got,) = S.sweep([(region.start_va, region.data, region.start_va, region.end_va, 64)],
                         _CANDIDATE_MNEMONICS, _NEEDS_OPERAND_CHECK, workers=2)
        _same(got, expected)


def test_undecodable_bytes_are_skipped_one_at_a_time():
    code = b"\x90\x0f\x0b\xff\xff\xfa"  # nop, ud2, two bytes no instruction starts with, cli
    res = _serial(BASE, code, 64)
    assert res.invalid == [BASE + 3] or res.invalid == [BASE + 3, BASE + 4]
    assert BASE + 5 in res.candidates and res.end == BASE + len(code)
