"""Property tests of the loaders: on arbitrary bytes and on random structured ELFs, only the project's own errors.

pvtranslate's ``load_image`` may return an ``Image`` or raise an ``ImageError``; the VMM's ``parse_elf``,
boot loaders (PVH, multiboot) and a whole ``Machine.boot`` (which reads a translated guest's PVTR
note and site table) may return or raise a ``VmmError`` (``LoadError`` for the file itself). Any other
exception is a bug. The structured strategy writes a well-formed skeleton (header, program headers,
notes, a site table, section headers) and then lets every field take a value a fuzzer would choose.
Examples are derandomized: every run tests the same inputs.
"""
from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pvtranslate import abi
from pvtranslate.image import Image, ImageError, load_image
from vmm import layout
from vmm.cpufix import candidate_sites
from vmm.elf import ElfImage, parse_elf
from vmm.errors import LoadError, VmmError
from vmm.loader import BootRecord
from vmm.loader import load_image as boot_image
from vmm.machine import Console, Machine, MachineConfig
from vmm.memory import GuestRam

SETTINGS = settings(max_examples=250, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RAM_BYTES = 4 * layout.MiB
PT_LOAD, PT_NOTE = 1, 4


@pytest.fixture(scope="module")
def ram():
    ram = GuestRam(RAM_BYTES)
    yield ram
    ram.close()


# --------------------------------------------------------------------------- strategies

def _interesting(bits: int, file_len: int = 0x3000) -> st.SearchStrategy[int]:
    top = (1 << bits) - 1
    values = [0, 1, 4, 8, 0x40, 0x100, 0x1000, 0xFFF, file_len - 1, file_len, file_len + 1, 0x100000, 0x101000,
              0x5000000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32, 1 << 63, top]
    return st.one_of(st.sampled_from([v & top for v in values]), st.integers(0, top))


class _Fields:
    """Draws each header field: the well-formed value, or a wild one. An example is clean (no wild
    field), has one wild field (which one is drawn), or many (each field wild one time in four)."""

    def __init__(self, draw) -> None:
        self.draw = draw
        self.mode = draw(st.sampled_from(["clean", "one", "one", "many"]))
        self.target = draw(st.integers(0, 60))
        self.n = 0

    def __call__(self, value: int, bits: int) -> int:
        self.n += 1
        wild = self.mode == "one" and self.n == self.target or self.mode == "many" and self.draw(st.integers(0, 3)) == 0
        return self.draw(_interesting(bits)) if wild else value


def _note(name: bytes, ntype: int, desc: bytes) -> bytes:
    pad = lambda b: b + bytes(-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)


@st.composite
def site_tables(draw, field: _Fields) -> tuple[bytes, int]:
    """A site table (header, entries, hypercall records, pc map) and the site count a note should declare."""
    count, n_hc, n_pc = (draw(st.sampled_from([1, 2, 0, 3])) for _ in range(3))
    out = bytearray(struct.pack("<4sIII", draw(st.sampled_from([abi.SITE_TABLE_MAGIC, b"PVSX"])),
                                field(count, 32), field(n_hc, 32), field(n_pc, 32)))
    site_vas = [0x100100 + 0x10 * i for i in range(count)]
    for va in site_vas:
        out += struct.pack("<QQBBHI16s", field(va, 64), draw(st.sampled_from([0, 0x102100, 0x102200])),
                           draw(st.integers(0, 255)), draw(st.integers(0, 20)), draw(st.integers(0, 0xFFFF)), 0,
                           draw(st.binary(min_size=16, max_size=16)))
    for k in range(n_hc):
        out += struct.pack("<QQB15s", field(0x102100 + 0x10 * k, 64),
                           draw(st.sampled_from(site_vas + [0, 0xDEAD])), draw(st.integers(0, 20)),
                           draw(st.binary(min_size=15, max_size=15)))
    for k in range(n_pc):
        out += struct.pack("<QQI", field(0x102100 + 8 * k, 64), draw(st.sampled_from(site_vas + [0])),
                           draw(st.integers(0, 4)))
    return bytes(out), count


@st.composite
def elf_files(draw) -> bytes:
    """An ELF32/ELF64 image: header, program headers, a code page with notes, a data page, section headers."""
    bits = draw(st.sampled_from([32, 64]))
    is64 = bits == 64
    field = _Fields(draw)
    ehsize, phent, shent = (64, 56, 64) if is64 else (52, 32, 40)
    # the payload: code page at file 0x1000 (va 0x100000), data page at 0x2000 (va 0x102000)
    code_va, data_va = 0x100000, 0x102000
    notes = b""
    if draw(st.sampled_from([True, True, True, False])):   # a PVH note
        desc = struct.pack("<Q" if is64 else "<I", field(code_va + 0x40, 32))
        desc = draw(st.one_of(st.just(desc), st.binary(max_size=12)))
        notes += _note(b"Xen\0", field(18, 32), desc)
    pvtr = draw(st.sampled_from([True, False]))
    table_va = data_va + 0x100
    table, site_count = draw(site_tables(field))
    if pvtr:                                    # a translated guest: PVTR note and site table
        descriptor = struct.pack("<IIQQII", draw(st.sampled_from([2, 2, 2, 1, 3])), 0,
                                 field(data_va, 64), field(table_va, 64), field(site_count, 32), 0)
        notes += _note(b"PVTR\0", field(1, 32), draw(st.one_of(st.just(descriptor), st.binary(max_size=40))))
    if draw(st.booleans()):
        notes += draw(st.binary(max_size=40))   # trailing garbage in the note segment
    code = bytearray(0x1000)
    code[0:len(notes)] = notes[:0x100]
    if draw(st.booleans()):                     # a multiboot v1 header
        flags = draw(st.sampled_from([0, 3, 1 << 16, 0xFFFFFFFF]))
        checksum = draw(st.sampled_from([(-(0x1BADB002 + flags)) & 0xFFFFFFFF, 0]))
        code[0x100:0x10C] = struct.pack("<III", 0x1BADB002, flags, checksum)
    code[0x140:0x140 + 64] = draw(st.binary(min_size=64, max_size=64))    # some "instructions"
    data = bytearray(0x1000)
    if pvtr:
        data[0x100:0x100 + len(table)] = table[:0xF00]
    body = bytearray(0x1000) + code + data
    file_len = 0x3000 + 8 * shent
    # program headers: code LOAD, data LOAD, NOTE
    segments = [(PT_LOAD, 5, 0x1000, code_va, code_va, 0x1000, 0x1000),
                (PT_LOAD, 6, 0x2000, data_va, data_va, 0x1000, draw(st.sampled_from([0x1000, 0x8000]))),
                (PT_NOTE, 4, 0x1000, code_va, code_va, len(notes), len(notes))]
    phdrs = b""
    for p_type, flags, off, va, pa, filesz, memsz in segments[:draw(st.sampled_from([3, 3, 3, 2, 1]))]:
        p_type, off, va, pa, filesz, memsz = (field(v, 32 if i == 0 else bits) for i, v in
                                              enumerate((p_type, off, va, pa, filesz, memsz)))
        if is64:
            phdrs += struct.pack("<IIQQQQQQ", p_type, field(flags, 32), off, va, pa, filesz, memsz, 0x1000)
        else:
            phdrs += struct.pack("<IIIIIIII", p_type, off, va, pa, filesz, memsz, field(flags, 32), 0x1000)
    body[ehsize:ehsize + len(phdrs)] = phdrs
    # section headers: null, .text, .data, .note, .bss, .symtab, .strtab, .shstrtab
    names = b"\0.text\0.data\0.note\0.bss\0.symtab\0.strtab\0.shstrtab\0"
    strtab = b"\0_start\0main\0"
    sym = (struct.pack("<IBBHQQ", 1, 0x12, 0, 1, code_va + 0x40, 16) if is64
           else struct.pack("<IIIBBH", 1, code_va + 0x40, 16, 0x12, 0, 1))
    symtab = bytes(24 if is64 else 16) + sym
    aux = bytearray(0x200)
    aux[0:len(symtab)] = symtab
    aux[0x100:0x100 + len(strtab)] = strtab
    aux[0x180:0x180 + len(names)] = names
    body += aux                                  # at 0x3000: symtab, strtab, shstrtab
    shoff = len(body)
    sections = [(0, 0, 0, 0, 0, 0, 0), (1, 1, 6, code_va + 0x40, 0x1040, 0x100, 0),
                (7, 1, 3, data_va, 0x2000, 0x1000, 0), (13, 7, 2, code_va, 0x1000, len(notes), 0),
                (19, 8, 3, data_va + 0x1000, 0x3000, 0x7000, 0), (24, 2, 0, 0, 0x3000, len(symtab), 6),
                (32, 3, 0, 0, 0x3100, len(strtab), 0), (40, 3, 0, 0, 0x3180, len(names), 0)]
    shdrs = b""
    nsec = draw(st.sampled_from([0, 8, 8, 8, 3]))
    for i, (name, sh_type, flags, addr, off, size, link) in enumerate(sections[:nsec]):
        if i:
            name, sh_type, flags, addr, off, size, link = (field(v, 32 if k in (0, 1, 6) else bits)
                                                           for k, v in enumerate((name, sh_type, flags, addr, off,
                                                                                  size, link)))
        entsize = (24 if is64 else 16) if sh_type == 2 else 0
        if is64:
            shdrs += struct.pack("<IIQQQQIIQQ", name, sh_type, flags, addr, off, size, link, 1, 1, entsize)
        else:
            shdrs += struct.pack("<IIIIIIIIII", name, sh_type, flags, addr, off, size, link, 1, 1, entsize)
    body += shdrs
    header = [field(2, 16), field(62 if is64 else 3, 16), 1, field(code_va + 0x40, bits),
              field(ehsize, bits), field(shoff if nsec else 0, bits), 0, ehsize,
              field(phent, 16), field(len(phdrs) // phent, 16), field(shent, 16),
              field(nsec, 16), field(7 if nsec == 8 else 0, 16)]
    ident = b"\x7fELF" + bytes((field(2 if is64 else 1, 8), field(1, 8), 1)) + bytes(9)
    body[0:ehsize] = ident + struct.pack("<HHIQQQIHHHHHH" if is64 else "<HHIIIIIHHHHHH", *header)
    del file_len
    cut = draw(st.one_of(st.just(len(body)), st.just(len(body)), st.integers(0, len(body))))
    return bytes(body[:cut])


def arbitrary_bytes() -> st.SearchStrategy[bytes]:
    ident = st.sampled_from([b"\x7fELF\x01\x01\x01", b"\x7fELF\x02\x01\x01", b"\x7fELF"])
    return st.one_of(st.binary(max_size=2048), st.builds(lambda i, b: i + b, ident, st.binary(max_size=4096)))


# --------------------------------------------------------------------------- properties

def _pvtranslate_loads(data: bytes) -> None:
    try:
        image = load_image(data, allow_translated=True)
    except ImageError as exc:
        assert "hint:" in str(exc)
        return
    assert isinstance(image, Image) and image.code


def _vmm_loads(data: bytes, ram: GuestRam) -> None:
    try:
        image = parse_elf(data, "guest.elf")
    except LoadError as exc:
        assert str(exc).startswith("guest.elf: ")
        return
    assert isinstance(image, ElfImage) and image.segments
    candidate_sites(image)
    try:
        record = boot_image(data, "guest.elf", ram, cmdline="console=ttyS0")
    except LoadError:
        return
    assert isinstance(record, BootRecord)
    assert any(s.paddr <= record.entry_pa < s.paddr + s.file_size for s in image.segments)


@SETTINGS
@given(arbitrary_bytes())
def test_pvtranslate_loader_on_arbitrary_bytes(data):
    _pvtranslate_loads(data)


@SETTINGS
@given(elf_files())
def test_pvtranslate_loader_on_structured_elfs(data):
    _pvtranslate_loads(data)


@SETTINGS
@given(arbitrary_bytes())
def test_vmm_loader_on_arbitrary_bytes(ram, data):
    _vmm_loads(data, ram)


@SETTINGS
@given(elf_files())
def test_vmm_loader_on_structured_elfs(ram, data):
    _vmm_loads(data, ram)


@settings(SETTINGS, max_examples=120)
@given(elf_files())
def test_machine_boot_on_structured_elfs(tmp_path_factory, data):
    """The whole boot: loaders, CPU fix-up sites, and for a PVTR note the site table and shared page."""
    path = tmp_path_factory.mktemp("boot") / "guest.elf"
    path.write_bytes(data)
    machine = Machine(MachineConfig(ram_bytes=RAM_BYTES), Console())
    try:
        machine.boot(path)
    except VmmError as exc:
        assert str(exc)
    finally:
        machine.close()


def test_the_structured_strategy_reaches_the_boot_paths():
    """Enough examples are well-formed for the properties above to reach PVH, multiboot and pv boots."""
    seen: set[str] = set()

    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(elf_files())
    def probe(data):
        ram = GuestRam(RAM_BYTES)
        try:
            record = boot_image(data, "g", ram)
            seen.add(record.protocol.value)
            if record.image.note("PVTR", 1) is not None:
                seen.add("pvtr")
        except VmmError:
            seen.add("refused")
        finally:
            ram.close()
        try:
            load_image(data, allow_translated=True)
            seen.add("translatable")
        except ImageError:
            pass

    probe()
    assert seen >= {"pvh", "multiboot1", "pvtr", "refused", "translatable"}, seen
