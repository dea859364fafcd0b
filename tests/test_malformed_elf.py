"""Malformed ELF input: the seeded mutation corpus of tools/elf_mutants.py through `pvtranslate` and `vmm run`, and
the regressions it found, each kept as a hand-made input.

By default 300 cases run (in-process, and every 100th through both commands as subprocesses too);
``--runslow`` runs the whole corpus of 1,200 (``tools/elf_mutants.py`` runs it outside pytest and prints
the numbers). A failing case names itself: ``tools/elf_mutants.py --case N`` replays it.
"""
from __future__ import annotations

import os
import re
import struct
import time
import warnings
from pathlib import Path

import pytest

from guests import load_tool
from pvtranslate import cli as pvtranslate_cli
from pvtranslate import image as pv_image
from pvtranslate.translate import TranslateOptions, translate
from vmm import cli as vmm_cli
from vmm.run import run as run_guest
from vmm.errors import InternalError

ROOT = Path(__file__).resolve().parent.parent
HELLO64 = ROOT / "samples" / "hello" / "hello_pvh64.elf"
HELLO32 = ROOT / "samples" / "hello" / "hello_pvh32.elf"
IRQ32 = ROOT / "samples" / "irq" / "irq32.elf"



em = load_tool("elf_mutants")

BATCH = 50
DEFAULT_CASES = 300
FULL_CASES = 1200
SUBPROCESS_EVERY = 100


@pytest.fixture(scope="module")
def bases():
    return em.all_bases()


def _batches() -> list:
    return [pytest.param(n, marks=[pytest.mark.slow] if n * BATCH >= DEFAULT_CASES else [],
                         id=f"cases-{n * BATCH}-{(n + 1) * BATCH - 1}") for n in range(FULL_CASES // BATCH)]


@pytest.mark.parametrize("batch", _batches())
def test_mutant_corpus(batch, bases, tmp_path):
    """Each case ends in a clean refusal or a correct result in both commands, in time, leaving no partial file."""
    campaign = em.run_campaign(BATCH, seed=em.DEFAULT_SEED, start=batch * BATCH, subprocess_every=SUBPROCESS_EVERY,
                               bases=bases, workdir=tmp_path)
    assert len(campaign.cases) == BATCH
    problems = [f"{case.mutant.describe()}\n    {problem}\n    replay: tools/elf_mutants.py --case {case.mutant.index}"
                for case in campaign.failures() for problem in case.problems]
    assert not problems, "\n".join(problems)


def test_corpus_is_reproducible(bases):
    """A case depends on the seed and its index only, and the corpus covers every mutation kind."""
    again = em.all_bases()
    for index in (0, 17, 999):
        assert em.mutant(bases, 5, index) == em.mutant(again, 5, index)
    assert em.mutant(bases, 5, 3).data != em.mutant(bases, 6, 3).data
    kinds = {m.kind for m in em.corpus(bases, em.DEFAULT_SEED, FULL_CASES)}
    assert kinds >= {"truncate", "flip-header", "havoc", "ident", "machine", "type", "ehdr-field", "phdr-field",
                     "segments", "note", "sections", "multiboot", "garbage", "splice", "pvtr", "site-table",
                     "phdr-flood"}


# --------------------------------------------------------------------------- regressions, one input each

def _elf64(edit) -> bytes:
    """hello_pvh64.elf with ``edit(buf, layout)`` applied."""
    data = bytearray(HELLO64.read_bytes())
    edit(data, em.layout_of(bytes(data)))
    return bytes(data)


def _put(field: str, value: int, segment: int | None = None, section: int | None = None):
    def edit(buf, lay):
        table = lay.ehdr if segment is None and section is None else \
            lay.phdrs[segment] if segment is not None else lay.shdrs[section]
        f = table[field]
        struct.pack_into("<" + f.fmt, buf, f.off, value)
    return edit


def _note_namesz(buf, lay):
    struct.pack_into("<I", buf, lay.notes[0].off, 0xB647BEEC)


def _code_outside_segments(buf, lay):
    """The code segment turned into a PT_NULL: .text is loaded by nothing."""
    struct.pack_into("<I", buf, lay.phdrs[0]["p_type"].off, 0)


def _one_byte_program_header_at_eof(buf, lay):
    for name, value in (("e_phoff", len(buf) - 1), ("e_phentsize", 1), ("e_phnum", 1)):
        _put(name, value)(buf, lay)


def _bss_header_twice(buf, lay):
    """The .bss segment's header copied over the code segment's: two segments at one address."""
    ph0, ph1 = lay.phdrs[0]["p_type"].off, lay.phdrs[1]["p_type"].off
    buf[ph0:ph0 + 56] = buf[ph1:ph1 + 56]


def _text_offset_moved(buf, lay):
    text = next(sh for sh in lay.shdrs if struct.unpack_from("<Q", buf, sh["sh_flags"].off)[0] & 4)
    f = text["sh_offset"]
    struct.pack_into("<Q", buf, f.off, struct.unpack_from("<Q", buf, f.off)[0] + 0x10)


REGRESSIONS = {
    # was: LIEF's writer aborted the process (double free) on a zero-size segment at offset 2^64-16
    "empty-segment-past-eof": (_put("p_offset", 0xFFFFFFFFFFFFFFF0, segment=1), pv_image.OutOfBoundsError,
                               "segment #1"),
    # was: exit 70, AttributeError in the emitter (LIEF adds no segment to a file that is no executable)
    "not-executable": (_put("e_type", 0), pv_image.NotExecutableError, "not an executable"),
    # was: translated, and the output was refused by vmm run (the note runs past its segment)
    "note-past-its-segment": (_note_namesz, pv_image.MalformedElfError, "runs past the end of its notes"),
    # was: LIEF's RuntimeWarnings on stderr ("... is not a valid TYPE") before the refusal
    "phdrs-overlap-header": (_put("e_phoff", 1), pv_image.MalformedElfError, "overlaps the ELF header"),
    # was: exit 70, AttributeError in the emitter (the code segment's header copied over by another one)
    "code-in-no-segment": (_code_outside_segments, pv_image.MalformedElfError, "lies in no loadable segment"),
    "segments-overlap": (_bss_header_twice, pv_image.MalformedElfError, "overlap in physical memory"),
    # was: translated from the section's bytes while the segment loads others (patches land elsewhere)
    "section-disagrees-with-segment": (_text_offset_moved, pv_image.MalformedElfError, "takes them from"),
    # was: struct.error out of the bounds check (exit 70): a 1-byte program header at the file's last byte
    "program-header-at-eof": (_one_byte_program_header_at_eof, pv_image.MalformedElfError,
                              "program header entries are 1 bytes"),
    # were accepted
    "section-entry-size": (_put("e_shentsize", 1), pv_image.MalformedElfError, "section header entries are 1"),
    "section-name-index": (_put("e_shstrndx", 200), pv_image.MalformedElfError, "section name table index 200"),
    "segment-wraps": (_put("p_memsz", (1 << 64) - 1, segment=0), pv_image.MalformedElfError, "address space"),
    "filesz-above-memsz": (_put("p_memsz", 0x10, segment=0), pv_image.MalformedElfError, "more file bytes"),
    "no-program-headers": (_put("e_phnum", 0), pv_image.MalformedElfError, "no program headers"),
    # were: exit 70, AttributeError in the emitter (LIEF's writer gives up on these files)
    "null-section-beyond-file": (_put("sh_offset", 0xFF << 48, section=0), pv_image.OutOfBoundsError,
                                 "section #0 claims file bytes"),
    "program-header-stride": (_put("e_phentsize", 312), pv_image.MalformedElfError,
                              "program header entries are 312 bytes"),
    "program-interpreter": (_put("p_type", 3, segment=3), pv_image.NotExecutableError, "program interpreter"),
    "no-load-segment": (_put("p_type", 6, segment=0), None, None),  # PT_PHDR: segment 1 (.bss) still loads
}


@pytest.mark.parametrize("case", sorted(REGRESSIONS))
def test_loader_regression(case, tmp_path):
    edit, error, message = REGRESSIONS[case]
    data = _elf64(edit)
    if error is not None:
        with pytest.raises(error, match=re.escape(message)) as info:
            pv_image.load_image(data)
        assert "hint:" in str(info.value)
    guest, outdir = tmp_path / "guest.elf", tmp_path / "out"
    guest.write_bytes(data)
    outdir.mkdir()
    result = em.run_pvtranslate(guest, outdir)
    assert not result.problems, result.message
    if error is not None:
        assert result.status == 2 and message in result.message
    result = em.run_vmm(guest)                 # the VMM reads segments only: it may boot some of these
    assert not result.problems, result.message


def _flood(count: int) -> bytes:
    """hello_pvh32.elf with ``count`` more PT_LOADs of 112 MiB (no file bytes) over its code segment."""
    data = bytearray(HELLO32.read_bytes())
    lay = em.layout_of(bytes(data))
    first = lay.phdrs[0]["p_type"].off
    table = bytes(data[first:first + 32 * len(lay.phdrs)])
    extra = struct.pack("<IIIIIIII", 1, 0, 0x100000, 0x100000, 0, 0x7000000, 6, 0x1000)
    offset = (len(data) + 7) & ~7
    data += bytes(offset - len(data)) + table + extra * count
    struct.pack_into("<I", data, lay.ehdr["e_phoff"].off, offset)
    struct.pack_into("<H", data, lay.ehdr["e_phnum"].off, len(lay.phdrs) + count)
    return bytes(data)


def test_many_overlapping_segments_are_refused_at_once(tmp_path):
    """2,000 program headers loading 112 MiB each at one address: `vmm run` zero-filled every one of them,
    minutes of work past any --timeout (60 kB of input); both loaders now refuse overlapping segments."""
    guest, outdir = tmp_path / "flood.elf", tmp_path / "out"
    guest.write_bytes(_flood(2000))
    outdir.mkdir()
    started = time.perf_counter()
    result = em.run_vmm(guest)
    assert result.status == 2 and "overlap" in result.message and not result.problems, result.message
    result = em.run_pvtranslate(guest, outdir)
    assert result.status == 2 and "overlap in physical memory" in result.message and not result.problems
    assert time.perf_counter() - started < 10


def test_no_load_segment_at_all():
    def edit(buf, lay):
        for ph in lay.phdrs:
            struct.pack_into("<I", buf, ph["p_type"].off, 6)
    with pytest.raises(pv_image.MalformedElfError, match="no loadable"):
        pv_image.load_image(_elf64(edit))


@pytest.mark.parametrize("path", ["/dev/zero", "directory"])
def test_device_or_directory_input_is_refused(path, tmp_path):
    """/dev/zero was read until memory ran out; now both commands refuse anything but a file at once."""
    target = str(tmp_path) if path == "directory" else path
    outdir = tmp_path / "out"
    outdir.mkdir()
    result = em.run_pvtranslate(Path(target), outdir, timeout=20)
    assert result.status == 2 and "cannot read" in result.message and not result.problems, result.message
    result = em.run_vmm(Path(target), timeout=20)
    assert result.status == 2 and "cannot read" in result.message and not result.problems, result.message


@pytest.mark.parametrize("argv, message", [
    (["-o", "{tmp}"], "is a directory"),
    (["-o", "{tmp}/missing/out.elf"], "does not exist"),
    (["-o", "{tmp}/out.elf", "--json", "{tmp}/missing/report.json"], "does not exist"),
])
def test_unwritable_output_is_refused_before_any_work(argv, message, tmp_path, capsys):
    """Was: the temporary file's name in the message, and with a bad --json path the translation written
    while the command failed (exit 2 with an output left behind)."""
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert pvtranslate_cli.main([str(HELLO64), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pvtranslate: error: ") and message in err and ".tmp" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_missing_input_is_named_before_its_default_output(tmp_path, capsys):
    assert pvtranslate_cli.main([str(tmp_path / "missing" / "guest.elf")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_site_table_outside_ram_is_bad_input(tmp_path):
    """A site table whose header claims more than RAM: was exit 4 (a guest crash) at boot, now exit 2."""
    guest = tmp_path / "hello.pv.elf"
    translate(HELLO64, TranslateOptions(output=guest))
    data = bytearray(guest.read_bytes())
    table = em.layout_of(bytes(data)).site_table_off
    struct.pack_into("<I", data, table + 4, 0x10000000)        # 10 GB of site entries
    guest.write_bytes(data)
    result = em.run_vmm(guest)
    assert result.status == 2 and "cannot boot" in result.message and not result.problems, result.message


def test_vmm_bug_is_reported_not_a_traceback(monkeypatch, capsys):
    """An exception of the VMM's own while it runs a guest ends the run with status 70 and a message."""
    def broken(self, event):
        raise ValueError("bytes must be in range(0, 256)")
    monkeypatch.setattr("vmm.vcpu.Vcpu._deliver", broken)     # irq32's first exception or interrupt
    result = run_guest(IRQ32, mode="native")
    assert result.exit_status == InternalError.exit_status == 70
    assert "internal error at rip" in result.error and "ValueError" in result.error
    assert vmm_cli.main(["run", str(IRQ32), "--serial", os.devnull]) == 70
    err = capsys.readouterr().err
    assert err.startswith("vmm: error: internal error") and "Traceback" not in err


def test_device_bug_is_reported_as_a_vmm_bug(monkeypatch):
    """An exception in an exit handler (here isa-debug-exit's) was status 4, a guest crash; it is the VMM's: 70."""
    def broken(self, offset, size, value):
        raise KeyError(offset)
    monkeypatch.setattr("vmm.devices.debug_exit.DebugExit.write", broken)
    result = run_guest(HELLO32, mode="native")
    assert result.exit_status == 70 and "internal error while handling an exit" in result.error


def test_vmm_cli_reports_an_unexpected_exception(monkeypatch, capsys):
    def broken(*_args, **_kwargs):
        raise RuntimeError("boom")
    monkeypatch.setattr(vmm_cli, "run", broken)
    assert vmm_cli.main(["run", str(HELLO32)]) == 70
    err = capsys.readouterr().err
    assert err.startswith("vmm: internal error: RuntimeError: boom") and "Traceback" not in err


def test_unknown_segment_type_is_translated(tmp_path, capsys):
    """An unknown p_type (LIEF gives a plain int, not its enum): was "unexpected ELF structure"; and
    LIEF's warnings about it never reach the user's terminal."""
    guest = tmp_path / "odd.elf"
    guest.write_bytes(_elf64(_put("p_type", 0x1234567, segment=3)))    # GNU_STACK -> an unknown type
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert pvtranslate_cli.main([str(guest), "-o", str(tmp_path / "out.elf")]) == 0
    assert not seen and "Warning" not in capsys.readouterr().err
