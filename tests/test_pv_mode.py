"""pv mode: a translated guest under the VMM prints the same console bytes and exits the same as the original."""
from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import pytest

from pvtranslate import abi
from pvtranslate.translate import TranslateOptions, translate
from vmm.errors import LoadError
from vmm.pv import STRING_CHUNK
from vmm.run import run

ROOT = Path(__file__).resolve().parents[1]

# Samples whose translation runs with identical console bytes and exit status.
SAMPLES = [
    "samples/hello/hello_pvh64.elf",
    "samples/hello/hello_mb32.elf",
    "samples/hello/hello_pvh32.elf",
    "samples/hello/hello_mb32_long.elf",
    "samples/io/io64.elf",
    "samples/io/io32.elf",
    "samples/boot_state/boot_state32.elf",
    "samples/boot_state/boot_state64.elf",
    "samples/bootinfo/bootinfo_pvh64.elf",
    "samples/cpuid/cpuid64.elf",
    "samples/double_fault/double_fault32.elf",
    "samples/double_fault/double_fault64.elf",
    "samples/irq_window/irq_window32.elf",          # virtual IF, DELIVER_PENDING
    "samples/irq/irq32.elf",                        # ring 3: faults of emulated I/O at the original site
    "samples/irq/irq64.elf",
    "samples/zoo/zoo32.elf",                        # every catalog class; popf TF, exception fixups
    "samples/zoo/zoo64.elf",
    "samples/faulty/faulty_halt.elf",               # runs that end in a guest error end the same way
    "samples/faulty/faulty_triple.elf",
    "samples/faulty/faulty_outside_ram.elf",
    "samples/workload/workload_cli_short.elf",
    "samples/workload/workload_sparse_short.elf",
    "samples/workload/workload_stringio_short.elf",  # STRING_IN / STRING_OUT
    "samples/workload/workload_medium_short.elf",
    "samples/workload/workload_dense_short.elf",
    "samples/workload/workload_pio_short.elf",
    "samples/bench/exitloop.elf",                   # its hot loop's out is a trap site: 10^6 traps
]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: Path(str(s)).stem)
def test_translated_guest_matches_native(sample: str, tmp_path: Path) -> None:
    out = tmp_path / (Path(sample).stem + ".pv.elf")
    translate(ROOT / sample, TranslateOptions(output=out))
    native = run(ROOT / sample)
    pv = run(out)
    assert native.mode == "native" and pv.mode == "pv"
    assert (pv.error is None) == (native.error is None)
    assert pv.console == native.console
    assert pv.exit_status == native.exit_status
    assert pv.hypercalls.get("PORT_OUT8", 0) > 0
    assert not pv.escapes, [e.describe() for e in pv.escapes]     # every sensitive instruction translated


@pytest.mark.parametrize("sample", ["samples/zoo/zoo64.elf", "samples/irq/irq32.elf"], ids=lambda s: Path(s).stem)
def test_stripped_guest_translated_by_sweep_matches_native(sample: str, tmp_path: Path) -> None:
    from tests.pvtranslate.test_decode import strip_symbols
    stripped = tmp_path / Path(sample).name
    stripped.write_bytes(strip_symbols((ROOT / sample).read_bytes()))
    out = tmp_path / (Path(sample).stem + ".pv.elf")
    translate(stripped, TranslateOptions(output=out))
    native, pv = run(ROOT / sample), run(out)
    assert (pv.console, pv.exit_status, pv.error) == (native.console, native.exit_status, native.error)
    assert pv.mode == "pv" and not pv.escapes, [e.describe() for e in pv.escapes]


def test_unknown_abi_version_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "hello.pv.elf"
    translate(ROOT / "samples/hello/hello_mb32.elf", TranslateOptions(output=out))
    data = out.read_bytes()
    marker = b"PVTR\0\0\0\0" + struct.pack("<I", abi.ABI_VERSION)
    assert data.count(marker) == 1
    bad = tmp_path / "hello_v99.pv.elf"
    bad.write_bytes(data.replace(marker, b"PVTR\0\0\0\0" + struct.pack("<I", 99)))
    with pytest.raises(LoadError, match=r"ABI version 99.*re-translate"):
        run(bad)


# --------------------------------------------------------------------------- string I/O in rounds

def _string_guest(bits: int) -> list[str]:
    """rep outsb and rep insb longer than one round of vmm.pv.STRING_CHUNK, ascending and descending."""
    from hostile_guests import DATA
    n = 3 * STRING_CHUNK + 5
    return ["cld", f"mov {{si}}, {DATA:#x}", f"mov ecx, {n}", "mov dx, 0x80", "rep outsb",
            f"mov {{di}}, {DATA + 0x10000:#x}", f"mov ecx, {n}", "mov dx, 0x2f0", "rep insb",
            "std", f"mov {{si}}, {DATA + 0x9000:#x}", f"mov ecx, {n}", "mov dx, 0x80", "rep outsb", "cld",
            "mov {si}, {after}", "call puts"]


@pytest.mark.parametrize("path", ["in-hook", "slice"])
@pytest.mark.parametrize("bits", [32, 64])
def test_long_string_io_runs_in_rounds_as_natively(bits: int, path: str, tmp_path: Path, monkeypatch) -> None:
    """A string hypercall moves STRING_CHUNK elements per round and goes on at its int 0x82: the same
    port events, memory and result as the original in native and fullvirt mode, whether the rounds run
    in the interrupt hook or each ends the slice (the path of ring 3)."""
    import hostile_guests as H
    import vmm.pv
    from pvtranslate.verify import verify
    if path == "slice":
        monkeypatch.setattr(vmm.pv, "_FAST_CALLS", {})
    guest = tmp_path / f"strings{bits}.elf"
    guest.write_bytes(H.build(bits, _string_guest(bits)).elf)
    verdict = verify(guest)
    assert verdict.equivalent, verdict.format()
    pv = verdict.run("pv")
    assert pv.events > 9 * STRING_CHUNK
    out = tmp_path / "strings.pv.elf"
    translate(guest, TranslateOptions(output=out))
    result = run(out)
    assert result.console == b"hostile guest\nafter\n" and result.exit_status == 1
    assert result.hypercalls["STRING_OUT"] == 2 * 4 and result.hypercalls["STRING_IN"] == 4   # 4 rounds each


# --------------------------------------------------------------------------- a bad PV note or site table

def _with_note_field(data: bytes, field: str, value: int) -> bytes:
    """``data`` with one field of its PVTR descriptor replaced."""
    from vmm.elf import parse_elf
    desc = abi.unpack_descriptor(parse_elf(data).note("PVTR", abi.NoteType.ABI).desc)
    old = abi.pack_descriptor(desc)
    assert data.count(old) == 1
    return data.replace(old, abi.pack_descriptor(dataclasses.replace(desc, **{field: value})))


@pytest.mark.parametrize("field, value, message", [
    ("site_table_va", 0x7FFF_F000, "PV site table 0x7ffff000 is in no loaded segment"),
    ("shared_page_va", 0x7FFF_F000, "PV shared page 0x7ffff000 is in no loaded segment"),
])
def test_bad_pv_pointers_are_load_errors(field: str, value: int, message: str, tmp_path: Path) -> None:
    out = tmp_path / "hello.pv.elf"
    translate(ROOT / "samples/hello/hello_pvh64.elf", TranslateOptions(output=out))
    out.write_bytes(_with_note_field(out.read_bytes(), field, value))
    with pytest.raises(LoadError, match=message):
        run(out)


def test_site_table_past_its_segment_is_a_load_error(tmp_path: Path) -> None:
    """A site table whose counts claim more than its segment holds (or than RAM): a load error, not a guest crash."""
    from vmm.elf import parse_elf
    out = tmp_path / "hello.pv.elf"
    translate(ROOT / "samples/hello/hello_pvh64.elf", TranslateOptions(output=out))
    data = bytearray(out.read_bytes())
    image = parse_elf(bytes(data))
    desc = abi.unpack_descriptor(image.note("PVTR", abi.NoteType.ABI).desc)
    seg = next(s for s in image.segments if s.vaddr <= desc.site_table_va < s.vaddr + s.file_size)
    header = seg.file_off + desc.site_table_va - seg.vaddr
    for count in (0x1000, 0x10000000):
        struct.pack_into("<I", data, header + 4, count)
        out.write_bytes(bytes(data))
        with pytest.raises(LoadError, match="PV site table at .* runs past the end of its segment"):
            run(out)


# --------------------------------------------------------------------------- the registers' two homes

@pytest.mark.parametrize("sample", ["samples/io/io32.elf", "samples/zoo/zoo64.elf", "samples/irq/irq64.elf"],
                         ids=lambda s: Path(s).stem)
def test_hypercalls_in_the_hook_without_the_engines_live_registers(sample: str, tmp_path: Path,
                                                                   monkeypatch) -> None:
    """Where the engine's own register cells cannot be found (vmm.cpu.live_registers is None), CpuView
    copies the CPU through a context blob: the in-hook hypercalls then behave exactly as on the live cells."""
    import vmm.cpu
    out = tmp_path / (Path(sample).stem + ".pv.elf")
    translate(ROOT / sample, TranslateOptions(output=out))
    live = run(out)
    monkeypatch.setattr(vmm.cpu, "live_registers", lambda uc: None)
    assert not vmm.cpu.CpuView(vmm.cpu.open_engine()).live
    blob = run(out)
    native = run(ROOT / sample)
    assert (blob.console, blob.exit_status, blob.error) == (live.console, live.exit_status, live.error)
    assert (blob.console, blob.exit_status) == (native.console, native.exit_status)
    assert blob.hypercalls == live.hypercalls and sum(v for k, v in blob.hypercalls.items() if "PORT" in k) > 0


# --------------------------------------------------------------------------- port I/O at trap sites

PORT_FORMS = ["out dx, al", "out dx, ax", "out dx, eax", "in al, dx", "in ax, dx", "in eax, dx",
              "out 0x80, al", "out 0x80, ax", "out 0x80, eax", "in al, 0x71", "in ax, 0x71", "in eax, 0x71"]


def _trap_port_guest(bits: int) -> list[str]:
    """Each port form as a branch target followed by a jmp that is one too (the jecxz, never taken): no
    room for a jump there, so a trap site.
    The values read (CMOS, the COM1 scratch register) and what stays of rax are printed."""
    lines = ["mov al, 0x0a", "out 0x70, al", "mov dx, 0x3ff", "mov eax, 0x5a"]
    if bits == 64:
        lines.append("mov rax, 0x123456789abcde5a")
    for n, form in enumerate(PORT_FORMS):
        lines += ["mov ecx, 2", f"jecxz tp{n}_jmp", f"tp{n}:", form, f"tp{n}_jmp:", f"jmp tp{n}_next", f"tp{n}_next:",
                  "dec ecx", f"jnz tp{n}",
                  "push {ax}", "mov ebx, eax", "call puthex8", "shr ebx, 8", "call puthex8", "shr ebx, 8",
                  "call puthex8", "shr ebx, 8", "call puthex8", *(["shr rax, 32", "mov ebx, eax", "call puthex8"]
                                                                 if bits == 64 else []), "pop {ax}"]
    return lines + ["mov {si}, {after}", "call puts"]


@pytest.mark.parametrize("cells", ["live", "blob"])
@pytest.mark.parametrize("bits", [32, 64])
def test_port_io_at_trap_sites_runs_as_natively(bits: int, cells: str, tmp_path: Path, monkeypatch) -> None:
    """A port in/out left as a trap site is carried out in the engine's interrupt hook (vmm/pv.py
    trap_port): same port events, rax and memory as the original, in every width and port form, on the
    engine's own register cells or through a context blob."""
    import hostile_guests as H
    import vmm.cpu
    from pvtranslate.verify import verify
    if cells == "blob":
        monkeypatch.setattr(vmm.cpu, "live_registers", lambda uc: None)
    guest = tmp_path / f"trapports{bits}.elf"
    guest.write_bytes(H.build(bits, _trap_port_guest(bits)).elf)
    out = tmp_path / f"trapports{bits}.pv.elf"
    translation = translate(guest, TranslateOptions(output=out))
    trapped = {s.entry_name for s in translation.plan.sites if s.tactic.name == "TRAP"}
    wanted = {f"{d}{w}.{p}" for d in ("in", "out") for w in (8, 16, 32) for p in ("dx", "imm8")}
    assert wanted <= trapped, wanted - trapped                 # every form reached the trap path
    verdict = verify(guest)
    assert verdict.equivalent, verdict.format()
    pv = run(out)
    assert pv.console.endswith(b"after\n") and pv.hypercalls["TRAP"] >= 2 * len(PORT_FORMS)


# --------------------------------------------------------------------------- string I/O: IF watch, ring 3

def test_if_watch_giving_up_inside_a_long_string_hypercall(tmp_path: Path, monkeypatch) -> None:
    """A timer interrupt waits while IF is off through a long rep insb: the IF watch gives up (after
    IF_WATCH_BLOCKS blocks, scaled down here) at a round's int 0x82, and the run goes on to its end
    (it used to stop there again and again until the time limit)."""
    import hostile_guests as H
    import vmm.vcpu
    from vmm.vcpu import Limits
    monkeypatch.setattr(vmm.vcpu, "IF_WATCH_BLOCKS", 120)
    body = ["cli", "mov al, 0x34", "out 0x43, al", "mov al, 2", "out 0x40, al", "xor al, al", "out 0x40, al",
            "mov al, 0xfe", "out 0x21, al", "mov ecx, 20", "w: out 0x80, al", "dec ecx", "jnz w",
            f"mov {{di}}, {H.DATA + 0x10000:#x}", f"mov ecx, {60 * STRING_CHUNK}", "mov dx, 0x80", "rep insb",
            "mov {si}, {after}", "call puts"]
    guest, out = tmp_path / "ifwatch.elf", tmp_path / "ifwatch.pv.elf"
    guest.write_bytes(H.build(32, body).elf)
    translate(guest, TranslateOptions(output=out))
    native, pv = (run(p, limits=Limits(timeout_s=60)) for p in (guest, out))
    assert (pv.console, pv.exit_status, pv.error) == (native.console, native.exit_status, None) \
        == (b"hostile guest\nafter\n", 1, None)


def test_string_io_denied_at_ring_3_faults_at_the_site(tmp_path: Path) -> None:
    """rep outsb at ring 3 with IOPL 0 and no I/O bitmap: #GP(0) at the instruction before any element,
    as in fullvirt (the string hypercall used to skip the I/O permission check)."""
    import hostile_guests as H
    tss = H.DATA + 0x600
    limit, base = 0x67, tss
    tss_lo = (limit & 0xFFFF) | (base & 0xFFFF) << 16
    tss_hi = (base >> 16) & 0xFF | 0x89 << 8 | (limit >> 16 & 0xF) << 16 | (base >> 24) << 24
    body = ["lea eax, [gp]", f"mov word ptr [{H.IDT + 13 * 8:#x}], ax", "shr eax, 16",
            f"mov word ptr [{H.IDT + 13 * 8 + 6:#x}], ax",
            f"mov dword ptr [{H.GDT + 0x20:#x}], 0x0000ffff", f"mov dword ptr [{H.GDT + 0x24:#x}], 0x00cffa00",
            f"mov dword ptr [{H.GDT + 0x28:#x}], 0x0000ffff", f"mov dword ptr [{H.GDT + 0x2c:#x}], 0x00cff200",
            f"mov dword ptr [{H.GDT + 0x30:#x}], {tss_lo:#x}", f"mov dword ptr [{H.GDT + 0x34:#x}], {tss_hi:#x}",
            f"mov word ptr [{H.GDTR:#x}], 0x37", f"lgdt [{H.GDTR:#x}]",
            f"mov dword ptr [{tss + 4:#x}], {H.STACK_TOP:#x}", f"mov dword ptr [{tss + 8:#x}], 0x10",
            f"mov word ptr [{tss + 0x66:#x}], 0x68", "mov ax, 0x30", "ltr ax",
            "push 0x2b", f"push {H.STACK_TOP - 0x1000:#x}", "push 0x2", "push 0x23", "lea eax, [r3]", "push eax",
            "iretd",
            "r3:", "mov ax, 0x2b", "mov ds, ax", "mov es, ax", f"mov esi, {H.STRINGS:#x}", "mov ecx, 3",
            "mov dx, 0x80", "rep outsb", "mov dx, 0x3f8", "mov al, 0x41", "out dx, al", "spin3: jmp spin3",
            "gp: mov ebx, [esp + 4]", "shr ebx, 8", "call puthex8", "mov ebx, [esp + 4]", "call puthex8",
            "mov ebx, [esp]", "call puthex8", "mov eax, 0x0d", "jmp exit"]     # prints EIP[15:0], error code
    guest, out = tmp_path / "ring3.elf", tmp_path / "ring3.pv.elf"
    guest.write_bytes(H.build(32, body).elf)
    translate(guest, TranslateOptions(output=out))
    from vmm.vcpu import Limits
    fullvirt = run(guest, mode="fullvirt", limits=Limits(timeout_s=10))
    pv = run(out, limits=Limits(timeout_s=10))
    assert fullvirt.exit_status == 2 * 0x0D + 1 and fullvirt.error is None
    assert (pv.console, pv.exit_status, pv.error) == (fullvirt.console, fullvirt.exit_status, None)


@pytest.mark.parametrize("raw, form", [(b"\xee", (False, 1, None, 1)), (b"\x66\xef", (False, 2, None, 2)),
                                       (b"\xed", (True, 4, None, 1)), (b"\xe4\x71", (True, 1, 0x71, 2)),
                                       (b"\x66\x48\xed", (True, 4, None, 3)), (b"\x48\xe7\x80", (False, 4, 0x80, 3)),
                                       (b"\xf3\x6e", None), (b"\xcc", None), (b"\xec\x90", None)])
def test_port_form_of_a_trap_sites_original(raw: bytes, form) -> None:
    """(in?, size, immediate port, length): 0x66 makes it 16-bit unless REX.W (32-bit) overrides it."""
    from vmm.pv import _port_form
    assert _port_form(raw) == form
