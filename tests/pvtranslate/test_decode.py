"""Loader and decoder on the sample kernels: modes per region, sites per class, objdump boundaries, bad input."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import capstone
import pytest

from pvtranslate import PvTranslateError
from pvtranslate.catalog import LoweringClass, classify
from pvtranslate.decode import DecodeError, ModeRange, ModeSource, decode
from pvtranslate.image import (
    AlreadyTranslatedError,
    ElfClass,
    ImageError,
    NoExecutableCodeError,
    NotElfError,
    NotX86Error,
    OutOfBoundsError,
    TruncatedError,
    load_image,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
HELLO_PVH64 = SAMPLES / "hello" / "hello_pvh64.elf"
HELLO_MB32_LONG = SAMPLES / "hello" / "hello_mb32_long.elf"
HELLO_MB32 = SAMPLES / "hello" / "hello_mb32.elf"
ZOO = (SAMPLES / "zoo" / "zoo64.elf", SAMPLES / "zoo" / "zoo32.elf")
ALL_SAMPLES = sorted(p for p in SAMPLES.glob("*/*.elf") if not p.name.endswith(".pv.elf"))  # not a quick start's output


def _sym(image, name):
    return next(s for s in image.symbols if s.name == name)


@pytest.fixture(scope="module")
def decoded():
    cache = {}

    def get(path):
        if path not in cache:
            image = load_image(path)
            cache[path] = (image, decode(image))
        return cache[path]

    return get


# ---------------------------------------------------------------- modes


@pytest.mark.parametrize("path", [HELLO_PVH64, HELLO_MB32_LONG], ids=lambda p: p.name)
def test_stub_is_32_bit_up_to_the_far_jump_then_64_bit(path, decoded):
    image, dec = decoded(path)
    start32, long_mode = _sym(image, "_start32").va, _sym(image, "long_mode").va
    stub = [i for i in dec.insns if start32 <= i.va < long_mode]
    assert stub and all(i.bits == 32 for i in stub)
    assert stub[-1].mnemonic == "ljmp"
    after = [i for i in dec.insns if i.va >= long_mode]
    assert after and all(i.bits == 64 for i in after)
    assert dec.bits_at(start32) == 32 and dec.bits_at(long_mode) == 64
    assert dec.bits_at(_sym(image, "printf").va) == 64
    (switch,) = [m for m in dec.mode_switches if m.bits == 64]
    assert (switch.from_va, switch.target_va, switch.selector) == (stub[-1].va, long_mode, 0x08)
    assert "L=1" in switch.evidence
    sources = {r.source for r in dec.regions}
    assert ModeSource.ENTRY_PROTOCOL in sources and ModeSource.FAR_JUMP in sources
    assert long_mode in dec.branch_targets


def test_far_return_idiom_is_followed_like_a_far_jump(decoded):
    """irq64's reload_segments: ``push 8; lea rax, [rip + 3]; push rax; lretq`` reloads CS; the code after
    it is reached only through that far return, and its segment loads are sites (they escaped before)."""
    image, dec = decoded(SAMPLES / "irq" / "irq64.elf")
    start = _sym(image, "reload_segments").va
    end = min(s.va for s in image.symbols if s.va > start)
    switch = next(sw for sw in dec.mode_switches if start <= sw.from_va < end)
    assert switch.selector == 8 and switch.bits == 64 and start < switch.target_va < end
    loads = [s.entry.name for s in dec.sites if switch.target_va <= s.va < end]
    assert loads == ["mov.to.ds", "mov.to.es", "mov.to.ss", "mov.to.fs", "mov.to.gs"]


def test_mb32_long_is_an_elf32_container(decoded):
    image, _dec = decoded(HELLO_MB32_LONG)
    assert image.elf_class is ElfClass.ELF32 and image.multiboot and image.pvh_entry_va is None


def test_mb32_is_all_32_bit(decoded):
    image, dec = decoded(HELLO_MB32)
    assert image.elf_class is ElfClass.ELF32
    assert dec.insns and {i.bits for i in dec.insns} == {32}
    assert all(m.bits == 32 for m in dec.mode_switches)


def test_user_mode_map_overrides(decoded):
    image, _ = decoded(HELLO_PVH64)
    start32, long_mode = _sym(image, "_start32").va, _sym(image, "long_mode").va
    dec = decode(image, [ModeRange(start32, long_mode, 64)])
    assert {i.bits for i in dec.insns if start32 <= i.va < long_mode} == {64}
    assert any(r.source is ModeSource.USER for r in dec.regions)
    with pytest.raises(DecodeError, match="bits must be"):
        ModeRange(0, 10, 8)


@pytest.mark.parametrize("path", ALL_SAMPLES, ids=lambda p: p.name)
def test_every_sample_decodes_without_overlaps(path, decoded):
    image, dec = decoded(path)
    assert dec.insns
    ends = 0
    for insn in dec.insns:  # sorted, no instruction overlaps another
        assert insn.va >= ends
        ends = insn.va + insn.size
        assert len(insn.raw) == insn.size
    # nothing from non-executable sections, and every entry point is decoded
    assert all(any(r.start_va <= i.va < r.end_va for r in image.code) for i in dec.insns)
    starts = {i.va for i in dec.insns}
    assert image.entry_va in starts
    assert not [u for u in dec.unclassified if u.kind == "overlap"]


# ---------------------------------------------------------------- sites

_CLASS_EVIDENCE = {
    LoweringClass.INTERRUPT_FLAG: r"\b(cli|sti)\b",
    LoweringClass.FLAGS: r"\b(pushf|popf)",
    LoweringClass.PRIVILEGED_READ: r"\b(sgdt|sidt|sldt|str|smsw)\b|%%?cr\d\s*,",
    LoweringClass.STRING_IO: r"\b(ins|outs)[bwl]\b",
    LoweringClass.PRIVILEGED_WRITE: r"\b(lgdt|lidt|lldt|ltr|lmsw|clts|wrmsr|invlpg|invpcid|wbinvd|swapgs)\b",
    LoweringClass.PORT_IO_HALT: r"\b(in|out)[bwl]\b|\bhlt\b|\bmonitor\b",
    LoweringClass.PRIVILEGED_READ_HYPERCALL: r"\b(rdmsr|rdpmc)\b",
    LoweringClass.UNPRIVILEGED_SENSITIVE_OTHER: r"\b(lar|lsl|verr|verw|cpuid|rdtscp?)\b",
    LoweringClass.EXCEPTION_RETURN: r"\biret[lq]?\b|\bsysret|\bsysexit",
}


@pytest.mark.parametrize("path", ZOO, ids=lambda p: p.name)
def test_zoo_yields_every_class_in_its_source(path, decoded):
    source = "\n".join(p.read_text() for p in (SAMPLES / "zoo").glob("*.[cS]"))
    expected = {cls for cls, pattern in _CLASS_EVIDENCE.items() if re.search(pattern, source)}
    assert len(expected) >= 8
    _image, dec = decoded(path)
    found = {site.entry.cls for site in dec.sites}
    assert expected <= found, f"missing classes: {sorted(c.name for c in expected - found)}"


@pytest.mark.parametrize("path", ZOO + (HELLO_PVH64,), ids=lambda p: p.name)
def test_candidate_prefilter_misses_no_site(path, decoded):
    """Sites found through disasm_lite + prefilter equal a full detail decode of every instruction."""
    _image, dec = decoded(path)
    mds = {}
    for bits, mode in ((16, capstone.CS_MODE_16), (32, capstone.CS_MODE_32), (64, capstone.CS_MODE_64)):
        mds[bits] = capstone.Cs(capstone.CS_ARCH_X86, mode)
        mds[bits].detail = True
    reference = set()
    for insn in dec.insns:
        full = next(mds[insn.bits].disasm(insn.raw, insn.va, 1))
        entry = classify(full)
        if entry is not None:
            reference.add((insn.va, entry.name))
    assert {(s.va, s.entry.name) for s in dec.sites} == reference


# ---------------------------------------------------------------- objdump differential

_OBJDUMP_LINE = re.compile(r"^\s*([0-9a-f]+):\t[0-9a-f ]+\t\S")


def _objdump_starts(path: Path, start: int, end: int, bits: int) -> set[int]:
    machine = {32: "i386", 64: "i386:x86-64"}[bits]
    out = subprocess.run(
        ["objdump", "-d", "-z", "-m", machine, f"--start-address={start:#x}", f"--stop-address={end:#x}", str(path)],
        check=True, capture_output=True, text=True).stdout
    return {int(m.group(1), 16) for line in out.splitlines() if (m := _OBJDUMP_LINE.match(line))}


@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump not installed")
@pytest.mark.parametrize("path,name,end_name", [
    (HELLO_PVH64, "_start32", "long_mode"),
    (HELLO_PVH64, "long_mode", "serial_init"),
    (HELLO_PVH64, "printf", None),
    (HELLO_PVH64, "kmain", None),
    (HELLO_MB32_LONG, "_start32", "long_mode"),
    (HELLO_MB32_LONG, "printf", None),
    (HELLO_MB32_LONG, "put_dec", None),
    (HELLO_MB32, "printf", None),
    (HELLO_MB32, "memcpy", None),
    (ZOO[0], "kmain", None),
    (ZOO[1], "kmain", None),
], ids=lambda v: v.name if isinstance(v, Path) else str(v))
def test_boundaries_match_objdump(path, name, end_name, decoded):
    image, dec = decoded(path)
    sym = _sym(image, name)
    end = _sym(image, end_name).va if end_name else sym.va + sym.size
    if end_name == "serial_init":  # long_mode's code ends before the alignment padding
        end = max(i.va + i.size for i in dec.insns if sym.va <= i.va < end)
    bits = dec.bits_at(sym.va)
    ours = {i.va for i in dec.insns if sym.va <= i.va < end}
    bad = {u.start_va for u in dec.unclassified if u.kind == "invalid" and sym.va <= u.start_va < end}
    theirs = _objdump_starts(path, sym.va, end, bits) - bad  # objdump prints (bad) bytes; we report them
    assert ours and ours == theirs


# ---------------------------------------------------------------- speed (reported, not asserted hard)


def test_decode_speed_is_reported(decoded, capsys):
    import time

    largest = max(ALL_SAMPLES, key=lambda p: p.stat().st_size)
    image = load_image(largest)
    t0 = time.perf_counter()
    dec = decode(image)
    dt = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\n[decode speed] {largest.name}: {len(dec.insns)} insns in {dt * 1e3:.1f} ms = "
              f"{len(dec.insns) / dt:,.0f} insns/s, {len(dec.sites)} sites")
    assert len(dec.insns) / dt > 10_000


# ---------------------------------------------------------------- bad input


def _raw(path=HELLO_PVH64) -> bytearray:
    return bytearray(path.read_bytes())


def _shdr_off(raw: bytes, index: int) -> int:
    shoff = struct.unpack_from("<Q", raw, 0x28)[0]
    shentsize = struct.unpack_from("<H", raw, 0x3A)[0]
    return shoff + index * shentsize


def _section_index(raw: bytes, name: bytes) -> int:
    shnum, shstrndx = struct.unpack_from("<HH", raw, 0x3C)
    strtab = struct.unpack_from("<Q", raw, _shdr_off(raw, shstrndx) + 24)[0]
    for i in range(shnum):
        name_off = struct.unpack_from("<I", raw, _shdr_off(raw, i))[0]
        if raw[strtab + name_off : strtab + name_off + len(name) + 1] == name + b"\0":
            return i
    raise LookupError(name)


def _not_x86():
    raw = _raw()
    struct.pack_into("<H", raw, 18, 40)  # EM_ARM
    return raw


def _section_beyond_file():
    raw = _raw()
    struct.pack_into("<Q", raw, _shdr_off(raw, _section_index(raw, b".text")) + 24, 0x10_0000)
    return raw


def _segment_beyond_file():
    raw = _raw()
    phoff = struct.unpack_from("<Q", raw, 0x20)[0]
    struct.pack_into("<Q", raw, phoff + 32, 0x10_0000)  # p_filesz of PT_LOAD #0
    return raw


def _no_code():
    raw = _raw()
    flags_at = _shdr_off(raw, _section_index(raw, b".text")) + 8
    struct.pack_into("<Q", raw, flags_at, struct.unpack_from("<Q", raw, flags_at)[0] & ~0x4)
    return raw


def _already_translated():
    """Rewrite the 20-byte PVH note in place into a PVTR note (namesz 5, descsz 0): same size."""
    raw = _raw()
    off = struct.unpack_from("<Q", raw, _shdr_off(raw, _section_index(raw, b".note.pvh")) + 24)[0]
    assert raw[off + 12 : off + 16] == b"Xen\0"
    raw[off : off + 20] = struct.pack("<III", 5, 0, 1) + b"PVTR\0\0\0\0"
    return raw


@pytest.mark.parametrize("make,error,message", [
    (lambda: b"this is not an ELF file", NotElfError, "not an ELF"),
    (lambda: b"", NotElfError, "not an ELF"),
    (_not_x86, NotX86Error, "not x86"),
    (lambda: bytes(_raw()[:40]), TruncatedError, "ELF header"),
    (lambda: bytes(_raw()[:0x1A00]), TruncatedError, "section header table"),
    (_section_beyond_file, OutOfBoundsError, "section #"),
    (_segment_beyond_file, OutOfBoundsError, "segment #0"),
    (_no_code, NoExecutableCodeError, "no executable code"),
    (_already_translated, AlreadyTranslatedError, "already translated"),
], ids=["garbage", "empty", "not-x86", "truncated-header", "truncated-tables", "section-beyond",
        "segment-beyond", "no-code", "already-translated"])
def test_bad_input_raises_a_clear_error(make, error, message, tmp_path):
    raw = bytes(make())
    for source in (raw, tmp_path / "guest.elf"):
        if isinstance(source, Path):
            source.write_bytes(raw)
        with pytest.raises(error, match=message) as info:
            load_image(source)
        assert isinstance(info.value, ImageError) and isinstance(info.value, PvTranslateError)
        assert "hint:" in str(info.value)


def test_translated_input_may_be_inspected():
    image = load_image(bytes(_already_translated()), allow_translated=True)
    assert image.has_pv_note


def test_missing_file_is_an_image_error(tmp_path):
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "nope.elf")


def test_progress_reports_every_decoded_byte_once():
    """The progress callback (the CLI's bar) sums to the bytes of the instructions decoded."""
    image = load_image(SAMPLES / "zoo" / "zoo64.elf")
    steps: list[int] = []
    d = decode(image, progress=steps.append)
    assert len(steps) > 1 and all(n > 0 for n in steps)
    assert sum(steps) == sum(i.size for i in d.insns)


@pytest.mark.parametrize("path", ALL_SAMPLES, ids=lambda p: p.name)
def test_image_regions_are_the_section_bytes_in_address_order(path):
    """Code and data regions against LIEF's own reading of each loaded section."""
    import lief
    image = load_image(path)
    binary = lief.ELF.parse(str(path))   # kept alive: its sections point into it
    sections = {s.name: (s.virtual_address, bytes(s.content)) for s in binary.sections}
    for regions in (image.code, image.data):
        assert [r.start_va for r in regions] == sorted(r.start_va for r in regions)
        for r in regions:
            assert (r.start_va, bytes(r.data)) == sections[r.name], r.name
    assert image.code and sum(len(r.data) for r in image.data) > 0


def strip_symbols(raw: bytes) -> bytes:
    """``raw`` with its symbol table gone (SHT_SYMTAB -> SHT_NULL), as a stripped kernel ships."""
    out = bytearray(raw)
    if out[4] == 2:
        shoff, = struct.unpack_from("<Q", out, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", out, 0x3A)
    else:
        shoff, = struct.unpack_from("<I", out, 0x20)
        shentsize, shnum = struct.unpack_from("<HH", out, 0x2E)
    for i in range(shnum):
        if struct.unpack_from("<I", out, shoff + i * shentsize + 4)[0] == 2:
            struct.pack_into("<I", out, shoff + i * shentsize + 4, 0)
    return bytes(out)


@pytest.mark.parametrize("path", ALL_SAMPLES, ids=lambda p: p.name)
def test_stripped_sample_is_swept_to_the_same_sites(path):
    """Without symbols the text is swept linearly (Debian's vmlinux is): the same sites come out."""
    raw = path.read_bytes()
    stripped = load_image(strip_symbols(raw))
    assert not stripped.symbols
    bare = decode(stripped)
    assert any(r.source is ModeSource.SWEEP for r in bare.regions)
    assert [(s.va, s.raw) for s in bare.sites] == [(s.va, s.raw) for s in decode(load_image(raw)).sites]


def test_file_rewritten_while_loading_is_refused(tmp_path, monkeypatch):
    """LIEF reads the file itself and the regions are read again after it: a change in between is an
    error, never an image mixing two files."""
    import lief
    path = tmp_path / "guest.elf"
    path.write_bytes(HELLO_PVH64.read_bytes())
    parse = lief.ELF.parse

    def parse_then_rewrite(*args, **kwargs):
        binary = parse(*args, **kwargs)
        path.write_bytes(HELLO_MB32.read_bytes())
        return binary

    monkeypatch.setattr(lief.ELF, "parse", parse_then_rewrite)
    with pytest.raises(ImageError, match="changed while it was being read"):
        load_image(path)
    monkeypatch.setattr(lief.ELF, "parse", parse)
    assert load_image(path).elf_class is ElfClass.ELF32
