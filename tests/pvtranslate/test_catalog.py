"""Catalog against the assembler: every form Keystone encodes must classify to its entry, and nothing else."""
from __future__ import annotations

import capstone
import keystone
import pytest

from pvtranslate import catalog
from pvtranslate.abi import Hypercall
from pvtranslate.catalog import ENTRIES, CatalogError, Form, Lowering, LoweringClass, classify, entry_by_name

BOTH = (32, 64)
M32 = (32,)
M64 = (64,)
BASE_VA = 0x1000

_KS = {32: keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_32), 64: keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64)}


def _cs(bits: int, detail: bool = True) -> capstone.Cs:
    cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32 if bits == 32 else capstone.CS_MODE_64)
    cs.detail = detail
    return cs


def assemble(text: str, bits: int) -> bytes:
    try:
        encoding, _count = _KS[bits].asm(text, BASE_VA)
    except keystone.KsError as exc:
        raise AssertionError(f"Keystone refused {text!r} in {bits}-bit mode: {exc}") from exc
    assert encoding, f"Keystone produced no bytes for {text!r} in {bits}-bit mode"
    return bytes(encoding)


def decode_one(code: bytes, bits: int) -> capstone.CsInsn:
    insns = list(_cs(bits).disasm(code, BASE_VA))
    assert len(insns) == 1 and insns[0].size == len(code), (
        f"{code.hex()} in {bits}-bit mode decodes to {[(i.mnemonic, i.op_str) for i in insns]}"
    )
    return insns[0]


# (entry name, assembly text, modes). Every operand form of every entry, in each mode where it exists.
ASM_CASES: list[tuple[str, str, tuple[int, ...]]] = [
    ("cli", "cli", BOTH),
    ("sti", "sti", BOTH),
    ("hlt", "hlt", BOTH),
    # Keystone quirk: plain "pushf"/"popf" assemble to the 16-bit 66 9c / 66 9d in both modes.
    ("pushf16", "pushf", BOTH),
    ("pushfd", "pushfd", M32),
    ("pushfq", "pushfq", M64),
    ("popf16", "popf", BOTH),
    ("popfd", "popfd", M32),
    ("popfq", "popfq", M64),
    ("in8.imm8", "in al, 0x60", BOTH),
    ("in16.imm8", "in ax, 0x60", BOTH),
    ("in32.imm8", "in eax, 0x60", BOTH),
    ("in8.dx", "in al, dx", BOTH),
    ("in16.dx", "in ax, dx", BOTH),
    ("in32.dx", "in eax, dx", BOTH),
    ("out8.imm8", "out 0x80, al", BOTH),
    ("out8.imm8", "out 0xf4, al", BOTH),
    ("out16.imm8", "out 0x80, ax", BOTH),
    ("out32.imm8", "out 0x80, eax", BOTH),
    ("out8.dx", "out dx, al", BOTH),
    ("out16.dx", "out dx, ax", BOTH),
    ("out32.dx", "out dx, eax", BOTH),
    ("monitor", "monitor", BOTH),
    ("mwait", "mwait", BOTH),
    ("insb", "insb", BOTH),
    ("insw", "insw", BOTH),
    ("insd", "insd", BOTH),
    ("insb", "insb byte ptr es:[edi], dx", BOTH),  # 64-bit: Keystone drops es: and adds 67
    ("rep.insb", "rep insb", BOTH),
    ("rep.insb", "repne insb", BOTH),
    ("rep.insb", "rep insb byte ptr [edi], dx", BOTH),
    ("rep.insw", "rep insw", BOTH),
    ("rep.insw", "rep insw word ptr es:[di], dx", M32),  # 16-bit addressing: 67 prefix
    ("rep.insd", "rep insd", BOTH),
    ("outsb", "outsb", BOTH),
    ("outsw", "outsw", BOTH),
    ("outsd", "outsd", BOTH),
    ("rep.outsb", "rep outsb", BOTH),
    ("rep.outsb", "rep outsb dx, byte ptr fs:[esi]", BOTH),
    ("rep.outsb", "rep outsb dx, byte ptr [rsi]", M64),
    ("rep.outsw", "rep outsw", BOTH),
    ("rep.outsd", "rep outsd", BOTH),
    ("sgdt", "sgdt [eax]", BOTH),
    ("sgdt", "sgdt [rax]", M64),
    ("sidt", "sidt [eax]", BOTH),
    ("sidt", "sidt [rax]", M64),
    ("sldt", "sldt ax", BOTH),
    ("sldt", "sldt eax", BOTH),
    ("sldt", "sldt rax", M64),
    ("sldt", "sldt word ptr [eax]", BOTH),
    ("sldt", "sldt [rax]", M64),
    ("str", "str ax", BOTH),
    ("str", "str eax", BOTH),
    ("str", "str rax", M64),
    ("str", "str word ptr [eax]", BOTH),
    ("smsw", "smsw ax", BOTH),
    ("smsw", "smsw eax", BOTH),
    ("smsw", "smsw rax", M64),
    ("smsw", "smsw word ptr [eax]", BOTH),
    ("smsw", "smsw [rax]", M64),
    *((f"mov.from.cr{n}", f"mov eax, cr{n}", M32) for n in (0, 2, 3, 4)),
    *((f"mov.from.cr{n}", f"mov rax, cr{n}", M64) for n in (0, 2, 3, 4, 8)),
    *((f"mov.to.cr{n}", f"mov cr{n}, eax", M32) for n in (0, 2, 3, 4)),
    *((f"mov.to.cr{n}", f"mov cr{n}, rax", M64) for n in (0, 2, 3, 4, 8)),
    ("mov.to.cr3", "mov cr3, rdi", M64),
    ("mov.from.cr3", "mov r15, cr3", M64),
    *((f"mov.from.dr{n}", f"mov eax, dr{n}", M32) for n in range(8)),
    *((f"mov.from.dr{n}", f"mov rax, dr{n}", M64) for n in range(8)),
    *((f"mov.to.dr{n}", f"mov dr{n}, eax", M32) for n in range(8)),
    *((f"mov.to.dr{n}", f"mov dr{n}, rax", M64) for n in range(8)),
    ("lgdt", "lgdt [eax]", BOTH),  # Keystone quirk: 32-bit gets a 66 prefix (24-bit base!)
    ("lgdt", "lgdt [rax]", M64),
    ("lidt", "lidt [eax]", BOTH),
    ("lidt", "lidt [rax]", M64),
    ("lldt", "lldt ax", BOTH),
    ("lldt", "lldt word ptr [eax]", BOTH),
    ("ltr", "ltr ax", BOTH),
    ("ltr", "ltr word ptr [eax]", BOTH),
    ("lmsw", "lmsw ax", BOTH),
    ("lmsw", "lmsw word ptr [eax]", BOTH),
    ("lmsw", "lmsw word ptr [rax]", M64),
    ("clts", "clts", BOTH),
    ("rdmsr", "rdmsr", BOTH),
    ("wrmsr", "wrmsr", BOTH),
    ("rdpmc", "rdpmc", BOTH),
    ("xsetbv", "xsetbv", BOTH),
    ("xgetbv", "xgetbv", BOTH),
    ("invlpg", "invlpg [eax]", BOTH),
    ("invlpg", "invlpg [rax]", M64),
    ("invpcid", "invpcid eax, [ebx]", M32),
    ("invpcid", "invpcid rax, [rbx]", M64),
    ("wbinvd", "wbinvd", BOTH),
    ("invd", "invd", BOTH),
    ("swapgs", "swapgs", M64),
    ("clac", "clac", BOTH),
    ("stac", "stac", BOTH),
    ("cpuid", "cpuid", BOTH),
    ("rdtsc", "rdtsc", BOTH),
    ("rdtscp", "rdtscp", BOTH),
    ("lar", "lar eax, eax", BOTH),
    ("lar", "lar ax, ax", BOTH),
    ("lar", "lar eax, [eax]", BOTH),
    ("lar", "lar eax, [rax]", M64),
    ("lsl", "lsl eax, eax", BOTH),
    ("lsl", "lsl rax, rax", M64),  # Capstone prints it "lsl rax, eax"
    ("lsl", "lsl eax, [eax]", BOTH),  # Keystone refuses "lsl eax, word ptr [eax]"
    ("verr", "verr ax", BOTH),
    ("verr", "verr word ptr [eax]", BOTH),
    ("verr", "verr [rax]", M64),
    ("verw", "verw ax", BOTH),
    ("verw", "verw word ptr [eax]", BOTH),
    *((f"mov.from.{s}", f"mov ax, {s}", BOTH) for s in ("es", "cs", "ss", "ds", "fs", "gs")),
    *((f"mov.from.{s}", f"mov eax, {s}", BOTH) for s in ("es", "cs", "ss", "ds", "fs", "gs")),
    *((f"mov.from.{s}", f"mov rax, {s}", M64) for s in ("es", "cs", "ss", "ds", "fs", "gs")),
    *((f"mov.from.{s}", f"mov word ptr [eax], {s}", BOTH) for s in ("es", "cs", "ss", "ds", "fs", "gs")),
    *((f"mov.to.{s}", f"mov {s}, ax", BOTH) for s in ("es", "ss", "ds", "fs", "gs")),
    *((f"mov.to.{s}", f"mov {s}, eax", BOTH) for s in ("es", "ss", "ds", "fs", "gs")),
    *((f"mov.to.{s}", f"mov {s}, rax", M64) for s in ("es", "ss", "ds", "fs", "gs")),
    *((f"mov.to.{s}", f"mov {s}, word ptr [eax]", BOTH) for s in ("es", "ss", "ds", "fs", "gs")),
    # Keystone quirk: push/pop es/cs/ss/ds get a 66 prefix (16-bit push) in 32-bit mode.
    *((f"push.{s}", f"push {s}", M32) for s in ("es", "cs", "ss", "ds")),
    *((f"push.{s}", f"push {s}", BOTH) for s in ("fs", "gs")),
    *((f"pop.{s}", f"pop {s}", M32) for s in ("es", "ss", "ds")),
    *((f"pop.{s}", f"pop {s}", BOTH) for s in ("fs", "gs")),
    ("iret16", "iret", BOTH),  # Keystone quirk: "iret" is the 16-bit 66 cf
    ("iretd", "iretd", BOTH),
    ("iretq", "iretq", M64),
    ("sysret", "sysret", M32),
    ("sysretq", "sysret", M64),  # Keystone's 64-bit "sysret" is 48 0f 07
    ("sysexit", "sysexit", M32),
    ("sysexitq", "sysexit", M64),
]

# (entry name, hex bytes, mode): forms Keystone will not emit as written, from the SDM encodings.
RAW_CASES: list[tuple[str, str, int]] = [
    ("pushfd", "9c", 32),
    ("pushfq", "9c", 64),
    ("pushf16", "669c", 64),
    ("popfq", "9d", 64),
    ("push.ds", "1e", 32),  # the 32-bit push that Keystone will not produce
    ("push.es", "06", 32),
    ("push.cs", "0e", 32),
    ("push.ss", "16", 32),
    ("pop.ds", "1f", 32),
    ("pop.es", "07", 32),
    ("pop.ss", "17", 32),
    ("push.fs", "660fa0", 64),  # 16-bit push fs
    ("lgdt", "0f0110", 32),  # lgdt [eax] with a 32-bit operand, as GNU as emits it
    ("sgdt", "0f0100", 32),
    ("lidt", "0f0118", 32),
    ("sidt", "0f0108", 32),
    ("sysret", "0f07", 64),  # return to 32-bit compatibility mode
    ("sysexit", "0f35", 64),
    ("rep.insb", "f3676c", 64),
    ("rep.outsd", "f2f36f", 32),  # both repeat prefixes; the last one wins
    ("mov.to.ss", "8ed0", 32),
    ("mov.from.cr8", "440f20c0", 64),
    ("mov.to.cr8", "440f22c0", 64),
]

# Ordinary instructions: must not classify.
NOT_SENSITIVE: list[tuple[str, tuple[int, ...]]] = [
    ("mov rax, rbx", M64),
    ("mov eax, ebx", M32),
    ("mov eax, dword ptr [ebx]", BOTH),
    ("mov word ptr [eax], ax", BOTH),
    ("mov ax, 0x10", BOTH),
    ("add eax, 1", BOTH),
    ("add rax, 1", M64),
    ("call 0x2000", BOTH),
    ("jmp 0x2000", BOTH),
    ("ret", BOTH),
    ("push rax", M64),
    ("push eax", M32),
    ("pop rax", M64),
    ("push 0x10", BOTH),
    ("push word ptr [eax]", BOTH),
    ("int3", BOTH),
    ("int 3", BOTH),
    ("int 0x80", BOTH),
    ("int 0x82", BOTH),
    ("syscall", BOTH),
    ("sysenter", BOTH),
    ("lfence", BOTH),
    ("nop", BOTH),
    ("lea eax, [ebx + 4]", BOTH),
    ("rep movsb", BOTH),
    ("rep stosd", BOTH),
    ("lodsb", BOTH),
    ("xchg eax, ebx", BOTH),
    ("ud2", BOTH),
    ("pushal", M32),
]

NOT_SENSITIVE_RAW: list[tuple[str, str, int]] = [
    ("mov rax, cr1 (#UD)", "0f20c8", 64),
    ("mov cs, eax (#UD)", "8ec8", 32),
]


def _asm_params():
    for name, text, modes in ASM_CASES:
        for bits in modes:
            yield pytest.param(name, text, bits, id=f"{bits}:{text}")


@pytest.mark.parametrize("name, text, bits", list(_asm_params()))
def test_keystone_form_classifies(name: str, text: str, bits: int) -> None:
    insn = decode_one(assemble(text, bits), bits)
    got = classify(insn)
    expected = entry_by_name(name)
    assert got == expected, f"{bits}-bit {text!r} -> {insn.bytes.hex()} {insn.mnemonic} {insn.op_str}: {got and got.name}"


@pytest.mark.parametrize("name, hexbytes, bits", RAW_CASES, ids=[f"{b}:{h}" for _n, h, b in RAW_CASES])
def test_raw_form_classifies(name: str, hexbytes: str, bits: int) -> None:
    insn = decode_one(bytes.fromhex(hexbytes), bits)
    got = classify(insn)
    assert got == entry_by_name(name), f"{hexbytes} -> {insn.mnemonic} {insn.op_str}: {got and got.name}"


@pytest.mark.parametrize(
    "text, bits", [pytest.param(t, b, id=f"{b}:{t}") for t, modes in NOT_SENSITIVE for b in modes]
)
def test_ordinary_instruction_is_not_sensitive(text: str, bits: int) -> None:
    insn = decode_one(assemble(text, bits), bits)
    assert classify(insn) is None, f"{text!r} classified as {classify(insn)}"


@pytest.mark.parametrize("label, hexbytes, bits", NOT_SENSITIVE_RAW, ids=[n for n, _h, _b in NOT_SENSITIVE_RAW])
def test_invalid_forms_are_not_entries(label: str, hexbytes: str, bits: int) -> None:
    assert classify(decode_one(bytes.fromhex(hexbytes), bits)) is None


def test_every_entry_has_a_tested_encoding() -> None:
    covered = {name for name, _t, _m in ASM_CASES} | {name for name, _h, _b in RAW_CASES}
    unknown = covered - {e.name for e in ENTRIES}
    assert not unknown, f"test names entries the catalog lacks: {sorted(unknown)}"
    missing = [e.name for e in ENTRIES if e.name not in covered]
    assert not missing, f"catalog entries with no encoding in the test: {missing}"


def test_every_entry_assembled_by_keystone_somewhere() -> None:
    """Raw bytes are a supplement; each entry should also be reachable from assembly text."""
    via_asm = {name for name, _t, _m in ASM_CASES}
    assert [e.name for e in ENTRIES if e.name not in via_asm] == []


def test_classify_without_detail_says_what_to_do() -> None:
    insn = next(_cs(64, detail=False).disasm(bytes.fromhex("ec"), BASE_VA))  # in al, dx
    with pytest.raises(CatalogError, match="detail"):
        classify(insn)


def test_non_candidates_need_no_detail() -> None:
    insn = next(_cs(64, detail=False).disasm(bytes.fromhex("4889d8"), BASE_VA))  # mov rax, rbx
    with pytest.raises(CatalogError):
        classify(insn)  # mov is a candidate id: operands are needed
    nop = next(_cs(64, detail=False).disasm(b"\x90", BASE_VA))
    assert classify(nop) is None


def test_table_shape() -> None:
    assert len({e.key for e in ENTRIES}) == len(ENTRIES)
    assert len({e.name for e in ENTRIES}) == len(ENTRIES)
    assert {e.cls for e in ENTRIES} == set(LoweringClass)
    for entry in ENTRIES:
        if entry.lowering is Lowering.SHARED_PAGE_INLINE:
            assert entry.shared_field is not None
        elif entry.lowering is Lowering.SELECTOR_READ_INLINE:
            assert entry.form in (Form.SREG_READ, Form.SREG_PUSH) and entry.hypercall is None
        else:
            assert entry.hypercall is not None
    assert entry_by_name("rep.insw").lowering is Lowering.STRING_HYPERCALL
    assert entry_by_name("in8.imm8").hypercall is Hypercall.PORT_IN8
    assert entry_by_name("in8.imm8").form is Form.PORT_IMM8
    assert entry_by_name("mov.to.cr3").privileged
    assert not entry_by_name("pushfq").privileged
    assert entry_by_name("sti").can_enable_interrupts and not entry_by_name("cli").can_enable_interrupts


def test_colliding_entries_rejected_at_index_time() -> None:
    cli = entry_by_name("cli")
    with pytest.raises(CatalogError, match="share the key"):
        catalog._index((cli, catalog.CatalogEntry(**{**cli.__dict__, "name": "cli2"})))


class TestEncodingQuirks:
    """Keystone 0.9.2 / Capstone 5.0.9 behaviour the emitter must not trip over. Fails if a version fixes it."""

    def test_keystone_pushf_is_16_bit(self) -> None:
        assert assemble("pushf", 32) == bytes.fromhex("669c")
        assert assemble("popf", 64) == bytes.fromhex("669d")

    def test_keystone_32bit_descriptor_table_ops_get_operand_size_prefix(self) -> None:
        # 66 0f 01 /2 in 32-bit mode loads only a 24-bit GDT base: do not emit lgdt through Keystone.
        assert assemble("lgdt [eax]", 32) == bytes.fromhex("660f0110")
        assert assemble("sidt [eax]", 32) == bytes.fromhex("660f0108")

    def test_keystone_32bit_push_legacy_sreg_is_16_bit(self) -> None:
        assert assemble("push ds", 32) == bytes.fromhex("661e")
        assert assemble("push fs", 32) == bytes.fromhex("0fa0")

    def test_capstone_does_not_decode_amd_lock_cr8_alias(self) -> None:
        # lock mov eax, cr0 is AMD's way to reach CR8 outside REX (AltMovCr8); Capstone 5.0.9 decodes
        # nothing in either mode, so a linear sweep desynchronises there: the decoder must report it.
        for bits in BOTH:
            assert list(_cs(bits).disasm(bytes.fromhex("f00f20c0"), BASE_VA)) == []
            assert list(_cs(bits).disasm(bytes.fromhex("f00f22c0"), BASE_VA)) == []
