"""Planner: ladder choices on Keystone-built snippets, invariants on the real samples, determinism."""

from __future__ import annotations

import itertools
from pathlib import Path

import capstone
import keystone
import pytest

from pvtranslate.abi import REGISTERS_32, REGISTERS_64, Hypercall, SharedOffset
from pvtranslate.catalog import ENTRIES, Lowering, LoweringClass
from pvtranslate.decode import Decoded, Insn, ModeSource, Region, _sites, decode
from pvtranslate.image import load_image
from pvtranslate.plan import (
    JMP_REL32_SIZE,
    Plan,
    PlanError,
    PlanOptions,
    StepOp,
    Tactic,
    TrapKind,
    _in_place_fits,
    symbol_boundaries_of,
    lower,
    plan,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
REAL = (SAMPLES / "zoo" / "zoo64.elf", SAMPLES / "zoo" / "zoo32.elf", *sorted((SAMPLES / "hello").glob("hello_*.elf")))
BASE = 0x401000
_KS = {64: keystone.KS_MODE_64, 32: keystone.KS_MODE_32}
_CS = {64: capstone.CS_MODE_64, 32: capstone.CS_MODE_32}


def snippet(asm: str, bits: int = 64, targets: tuple[int, ...] = (), base: int = BASE) -> Decoded:
    """A Decoded for one straight-line snippet; ``targets`` are offsets from ``base`` (base is always one)."""
    code, _ = keystone.Ks(keystone.KS_ARCH_X86, _KS[bits]).asm(asm, base)
    raw = bytes(code)
    md = capstone.Cs(capstone.CS_ARCH_X86, _CS[bits])
    insns = tuple(Insn(a, n, bits, raw[a - base : a - base + n], m, o) for a, n, m, o in md.disasm_lite(raw, base))
    assert sum(i.size for i in insns) == len(raw)
    return Decoded(
        insns=insns,
        branch_targets=frozenset({base, *(base + t for t in targets)}),
        regions=(Region(base, base + len(raw), bits, ModeSource.USER, ".text"),),
        unclassified=(),
        sites=tuple(_sites(insns)),
        mode_switches=(),
    )


def at(p: Plan, va: int):
    return next(s for s in p.sites if s.va == va)


def check_invariants(decoded: Decoded, p: Plan) -> None:
    vas = [s.va for s in p.sites]
    assert vas == sorted(vas) == sorted(s.va for s in decoded.sites), "every site exactly once, in order"
    ranges = sorted((s.patch.start_va, s.patch.end_va) for s in p.sites if s.patch is not None)
    for (a0, a1), (b0, _b1) in itertools.pairwise(ranges):
        assert a1 <= b0, f"patch ranges {a0:#x}..{a1:#x} and {b0:#x} overlap"
    targets = sorted(decoded.branch_targets)
    for s in p.sites:
        if s.patch is not None:
            assert not [t for t in targets if s.patch.start_va < t < s.patch.end_va], f"target inside {s.va:#x}"
            if s.displaced_before:  # the patch ends with the site
                assert s.patch.start_va == s.displaced_before[0].va and s.patch.end_va == s.va + len(s.raw)
            else:
                assert s.patch.start_va == s.va
        else:
            leader = at(p, s.joined_to)
            assert leader.patch.start_va < s.va < leader.patch.end_va and s.va in leader.joined
        if s.tactic is Tactic.TRAMPOLINE_JUMP and s.patch is not None:
            assert len(s.patch) >= min(JMP_REL32_SIZE, len(s.patch))
            assert len(s.patch) >= JMP_REL32_SIZE or len(s.raw) >= JMP_REL32_SIZE
        if s.tactic is Tactic.TRAP:
            assert s.trap is (TrapKind.INT3 if len(s.raw) == 1 else TrapKind.INT_0X82)
    assert sum(p.by_tactic.values()) == len(p.sites) == sum(p.by_class.values())


# --------------------------------------------------------------------------- the ladder on snippets


def test_cli_then_nops_takes_a_trampoline_displacing_the_nops():
    d = snippet("cli; nop; nop; nop; nop; ret")
    s = at(plan(d), BASE)
    assert s.tactic is Tactic.TRAMPOLINE_JUMP
    assert (s.patch.start_va, s.patch.end_va) == (BASE, BASE + 5)
    assert [(x.va, x.raw) for x in s.displaced] == [(BASE + i, b"\x90") for i in range(1, 5)]
    assert s.steps[0].op is StepOp.STORE_SHARED and s.steps[0].args == (SharedOffset.VIRTUAL_IF, 0)
    assert s.hypercall is None and s.lowering is Lowering.SHARED_PAGE_INLINE
    assert [st.op for st in s.sequence] == [StepOp.STORE_SHARED, *[StepOp.REPLAY] * 4, StepOp.JUMP_BACK]


def test_branch_target_right_after_cli_falls_to_trap_int3():
    d = snippet("cli; nop; nop; nop; nop; ret", targets=(1,))
    s = at(plan(d), BASE)
    assert s.tactic is Tactic.TRAP and s.trap is TrapKind.INT3
    assert "branch target" in s.reason


def test_branch_target_on_the_site_itself_is_allowed():
    d = snippet("nop; cli; nop; nop; nop; nop; ret", targets=(1,))
    assert at(plan(d), BASE + 1).tactic is Tactic.TRAMPOLINE_JUMP


def test_cli_last_before_function_end_traps():
    d = snippet("cli; ret; nop; nop; nop; nop", targets=(2,))
    s = at(plan(d), BASE)
    assert s.tactic is Tactic.TRAP and s.trap is TrapKind.INT3


def test_function_end_symbol_blocks_displacement():
    d = snippet("cli; nop; nop; nop; nop; ret")
    assert at(plan(d, boundaries=(BASE + 2,)), BASE).tactic is Tactic.TRAP


def test_in_al_dx_then_rip_relative_mov_is_displaced_and_flagged():
    d = snippet("in al, dx; mov eax, dword ptr [rip + 0x100]; ret")
    s = at(plan(d), BASE)
    assert s.tactic is Tactic.TRAMPOLINE_JUMP and s.hypercall is Hypercall.PORT_IN8
    (mov,) = s.displaced
    assert mov.va == BASE + 1 and mov.needs_rip_relocation and mov.raw == bytes.fromhex("8b0500010000")
    assert s.patch.end_va == BASE + 7
    # in al, dx writes only al: rax and the port argument go to the save area; the VMM puts them back,
    # al merged into rax; nothing is pushed
    ops = [(st.op, st.args) for st in s.steps]
    assert ops == [(StepOp.SAVE_AREA, ("rax",)), (StepOp.SAVE_AREA, ("rdi",)), (StepOp.LOAD_ARG, ("rdi", "port")),
                   (StepOp.HYPERCALL, (Hypercall.PORT_IN8, "rax"))]


def test_displaced_relative_jcc_is_flagged_for_relocation():
    d = snippet("in al, dx; test al, 0x20; je 0x401000")
    s = at(plan(d), BASE)
    assert s.tactic is Tactic.TRAMPOLINE_JUMP
    assert [x.needs_branch_relocation for x in s.displaced] == [False, True]


def test_displaced_jmp_ends_the_trampoline_without_jump_back():
    d = snippet("in al, dx; nop; nop; jmp 0x401000; nop")
    s = at(plan(d), BASE)
    assert s.tactic is Tactic.TRAMPOLINE_JUMP and s.sequence[-1].op is StepOp.REPLAY


def test_displaced_call_ends_the_trampoline():
    """A call rel32 may be displaced as the last instruction: it is replayed as push of its original
    return address + jmp, so the callee returns to the original code and no jump back follows."""
    d = snippet("cli; call 0x401000; ret")
    s = at(plan(d), BASE)
    assert s.tactic is Tactic.TRAMPOLINE_JUMP and s.patch.end_va == BASE + 6
    (call,) = s.displaced
    assert call.needs_branch_relocation and call.text.startswith("call")
    assert StepOp.JUMP_BACK not in [st.op for st in s.sequence]


def test_indirect_or_early_call_is_refused():
    d = snippet("cli; call qword ptr [rsp + 8]; ret")  # its operand would move with the pushed address
    assert at(plan(d), BASE).tactic is Tactic.TRAP
    d = snippet("cli; call qword ptr [rip + 0x100]; ret")  # pv-ops style: replayed as push + jmp [rip]
    (call,) = at(plan(d), BASE).displaced
    assert call.needs_branch_relocation and call.needs_rip_relocation
    d = snippet("cli; nop; call 0x401000; ret", bits=32)        # the call must end the displaced bytes
    assert at(plan(d), BASE).tactic is Tactic.TRAMPOLINE_JUMP
    d = snippet("cli; call 0x401000; ret", bits=32, targets=(6,))
    assert at(plan(d), BASE).tactic is Tactic.TRAMPOLINE_JUMP   # the return address may be a target


def test_site_before_a_loop_head_displaces_the_instructions_before_it():
    """`out` followed by a branch target: the jump to the trampoline starts at the mov before it."""
    d = snippet("mov eax, 1; out dx, al; nop; ret", targets=(6,))
    s = at(plan(d), BASE + 5)
    assert s.tactic is Tactic.TRAMPOLINE_JUMP and (s.patch.start_va, s.patch.end_va) == (BASE, BASE + 6)
    assert [x.va for x in s.displaced_before] == [BASE] and not s.displaced
    assert [st.op for st in s.sequence][0] is StepOp.REPLAY and s.sequence[-1].args == (BASE + 6,)
    d = snippet("mov eax, 1; out dx, al; nop; ret", targets=(3, 6))  # a target inside the mov's bytes
    assert at(plan(d), BASE + 5).tactic is Tactic.TRAP


def test_two_close_sites_are_planned_together():
    d = snippet("cli; sti; nop; nop; nop; ret")
    p = plan(d)
    lead, joined = at(p, BASE), at(p, BASE + 1)
    assert lead.tactic is joined.tactic is Tactic.TRAMPOLINE_JUMP
    assert lead.joined == (BASE + 1,) and joined.joined_to == BASE and joined.patch is None
    assert [x.is_site for x in lead.displaced] == [True, False, False, False]
    assert StepOp.DELIVER_IF_PENDING in [st.op for st in lead.sequence]
    check_invariants(d, p)


def test_patch_runs_on_through_a_site_it_would_strand():
    """Linux's iret-to-self: the pushfq's trampoline would end right before the iretq, which could then
    neither displace forward (it ends the flow) nor backward (the bytes before it are patched)."""
    d = snippet("pushfq; mov eax, cs; push rax; push 0x40100b; iretq; nop; ret", targets=(11,))
    p = plan(d)
    lead, iret = at(p, BASE), at(p, BASE + 9)
    assert lead.tactic is iret.tactic is Tactic.TRAMPOLINE_JUMP
    assert (lead.patch.start_va, lead.patch.end_va) == (BASE, BASE + 11)
    assert lead.joined == (BASE + 1, BASE + 9) and iret.joined_to == BASE and iret.patch is None
    check_invariants(d, p)
    # a port write between a jcc and its target: the in's patch takes the and and the out too
    d = snippet("in eax, dx; test al, 0x10; je 0x401009; and eax, 0xffffffef; out dx, eax; test esi, esi; ret",
                targets=(9,))
    p = plan(d)
    assert at(p, BASE).patch.end_va == BASE + 9 and at(p, BASE + 8).joined_to == BASE
    check_invariants(d, p)


def test_a_stranded_site_on_a_branch_target_is_not_joined():
    d = snippet("in eax, dx; test al, 0x10; je 0x401009; and eax, 0xffffffef; out dx, eax; test esi, esi; ret",
                targets=(8, 9))
    p = plan(d)
    assert at(p, BASE).patch.end_va == BASE + 5 and at(p, BASE + 8).tactic is Tactic.TRAP
    check_invariants(d, p)


def test_five_byte_site_needs_no_displacement():
    d = snippet("lgdt [rip + 0x1000]; ret")  # 7 bytes
    s = at(plan(d), BASE)
    assert s.tactic is Tactic.TRAMPOLINE_JUMP and s.displaced == () and len(s.patch) == 7


def test_two_byte_trap_is_int_0x82():
    d = snippet("wrmsr; ret; nop; nop; nop", targets=(3,))
    s = at(plan(d), BASE)
    assert s.tactic is Tactic.TRAP and s.trap is TrapKind.INT_0X82


def test_trampolines_disabled_means_trap_and_no_fallback_means_error():
    d = snippet("cli; nop; nop; nop; nop; ret")
    assert at(plan(d, PlanOptions(allow_trampolines=False)), BASE).tactic is Tactic.TRAP
    with pytest.raises(PlanError, match="hint"):
        plan(d, PlanOptions(allow_trampolines=False, allow_trap_fallback=False))


def test_iret_never_displaces_what_follows():
    d = snippet("iretq; nop; nop; nop; nop")
    assert at(plan(d), BASE).tactic is Tactic.TRAP


def test_punned_jump_only_with_free_ranges_and_lands_in_one():
    asm = "out dx, al; nop; nop; nop; nop; ret"  # ee 90 90 90 90: rel32 = 0x90909090 (negative)
    d = snippet(asm, targets=(1,))  # a trampoline is refused: target inside
    assert at(plan(d), BASE).tactic is Tactic.TRAP
    target = (BASE + 5 + int.from_bytes(b"\x90\x90\x90\x90", "little", signed=True)) & (2**64 - 1)
    free = ((target - 0x10, target + 0x1000),)
    s = at(plan(d, PlanOptions(punned_free_ranges=free)), BASE)
    assert s.tactic is Tactic.PUNNED_JUMP and s.punned_target_va == target
    assert (s.patch.start_va, s.patch.end_va) == (BASE, BASE + 1)
    # the free range does not contain the only reachable target: trap again
    assert at(plan(d, PlanOptions(punned_free_ranges=((0x1000, 0x2000),))), BASE).tactic is Tactic.TRAP


def test_punned_jump_refused_when_a_site_is_among_its_bytes():
    d = snippet("out dx, al; cli; nop; nop; nop; ret", targets=(1,))
    free = ((0, 2**63),)
    assert at(plan(d, PlanOptions(punned_free_ranges=free)), BASE).tactic is Tactic.TRAP


# --------------------------------------------------------------------------- lowering rules


def _site_for(entry_name: str, asm: str, bits: int):
    d = snippet(asm, bits)
    (site,) = [s for s in d.sites if s.entry.name == entry_name]
    return site


@pytest.mark.parametrize("bits", (32, 64))
@pytest.mark.parametrize("asm,name", [
    ("cli", "cli"), ("sti", "sti"), ("in al, dx", "in8.dx"), ("in eax, dx", "in32.dx"), ("out dx, al", "out8.dx"),
    ("hlt", "hlt"), ("rdmsr", "rdmsr"), ("wrmsr", "wrmsr"), ("cpuid", "cpuid"), ("rdtsc", "rdtsc"),
    ("rep insb", "rep.insb"), ("outsb", "outsb"), ("lar eax, ecx", "lar"), ("invlpg [eax]", "invlpg"),
])
def test_lowering_saves_every_register_it_clobbers(asm, name, bits):
    if bits == 64:
        asm = asm.replace("[eax]", "[rax]")
    site = _site_for(name, asm, bits)
    steps = lower(site)
    conv = REGISTERS_64 if bits == 64 else REGISTERS_32
    pushed = [st.args[0] for st in steps if st.op is StepOp.SAVE]
    restored = [st.args[0] for st in steps if st.op is StepOp.RESTORE]
    assert restored == pushed[::-1]
    in_area = [st.args[0] for st in steps if st.op is StepOp.SAVE_AREA]   # the VMM puts them back
    written: set[str] = set()
    for st in steps:
        if st.op is StepOp.HYPERCALL:
            written.add(conv.number_reg)
        if st.op is StepOp.LOAD_ARG:
            written.add(st.args[0])
        if st.op is StepOp.DELIVER_IF_PENDING:
            written.update((st.args[2], conv.number_reg))
    # even what the original fully writes: a faulting instruction writes nothing
    assert written <= set(pushed) | set(in_area), (name, written, pushed, in_area)
    assert not (pushed and in_area)
    # no step changes flags: only ops documented as flag-free exist (no arithmetic step kinds at all)
    assert all(isinstance(st.op, StepOp) for st in steps)


def test_inline_classes_make_no_exit_except_conditional_delivery():
    for asm, name in (("cli", "cli"), ("pushfq", "pushfq"), ("popfq", "popfq"), ("mov rax, cr3", "mov.from.cr3"),
                      ("sgdt [rax]", "sgdt"), ("smsw eax", "smsw")):
        steps = lower(_site_for(name, asm, 64))
        assert StepOp.HYPERCALL not in [st.op for st in steps], name
    assert lower(_site_for("cli", "cli", 64)) == (lower(_site_for("cli", "cli", 64)))


def test_rep_string_io_is_one_string_hypercall():
    steps = lower(_site_for("rep.outsb", "rep outsb", 64))
    calls = [st for st in steps if st.op is StepOp.HYPERCALL]
    assert [c.args[0] for c in calls] == [Hypercall.STRING_OUT]
    assert [st.args[1] for st in steps if st.op is StepOp.LOAD_ARG] == [
        "port", "element_size", "count", "buffer_va", "flags"]


def test_no_catalog_lowering_ever_fits_in_place():
    # the longest site forms are well under the smallest lowering: document it as a check
    for bits in (32, 64):
        for asm, name in (("cli", "cli"), ("lgdt [eax + ebx*8 + 0x12345678]", "lgdt"), ("mov eax, cr0", "mov.from.cr0")):
            if bits == 64:
                asm = asm.replace("eax", "rax").replace("ebx", "rbx")
            site = _site_for(name, asm, bits)
            assert not _in_place_fits(lower(site), site.size)
    assert not _in_place_fits((), 6)
    assert {e.lowering for e in ENTRIES} <= set(Lowering)


# --------------------------------------------------------------------------- the real samples


@pytest.fixture(scope="module", params=[p for p in REAL if p.exists()], ids=lambda p: p.name)
def real(request):
    image = load_image(request.param)
    return image, decode(image)


def test_real_sample_invariants(real):
    image, d = real
    ends = symbol_boundaries_of(image.symbols)
    p = plan(d, boundaries=ends)
    check_invariants(d, p)
    for s in p.sites:
        if s.patch is not None:
            assert not [e for e in ends if s.patch.start_va < e < s.patch.end_va]
    assert 0.0 <= p.trap_share <= 1.0
    text = p.format()
    assert "trap fallback share" in text and f"{len(p.sites)} sites" in text
    assert p == plan(d, boundaries=ends), "deterministic"
    assert p.format() == plan(d, boundaries=ends).format()


def test_zoo_mostly_trampolines():
    for path in REAL[:2]:
        image = load_image(path)
        p = plan(decode(image), boundaries=symbol_boundaries_of(image.symbols))
        assert p.trap_share < 0.05, p.format()
        assert {s.cls for s in p.sites} >= {LoweringClass.INTERRUPT_FLAG, LoweringClass.FLAGS,
                                             LoweringClass.STRING_IO}


@pytest.mark.parametrize("bits", (32, 64))
def test_hypercall_lowerings_use_no_stack(bits):
    """An instruction may run before the guest has a stack (a PVH entry starting with lgdt): hypercall
    lowerings keep registers in the save area and end at the hypercall (the VMM puts them back, the
    index and count registers of string I/O advanced)."""
    R = "r" if bits == 64 else "e"
    for asm, name in (("rep insb", "rep.insb"), ("outsb", "outsb"), (f"lgdt [{R}ax]", "lgdt"),
                      (f"mov cr3, {R}ax", "mov.to.cr3"), ("mov ds, ax", "mov.to.ds"), ("wrmsr", "wrmsr")):
        steps = lower(_site_for(name, asm, bits))
        assert {st.op for st in steps} <= {StepOp.SAVE_AREA, StepOp.LOAD_ARG, StepOp.HYPERCALL}, (asm, steps)
        assert steps[-1].op is StepOp.HYPERCALL


def test_memory_destination_scratch_avoids_the_operand_registers():
    steps = lower(_site_for("sgdt", "sgdt [rcx + rdx]", 64))
    (save,) = [st for st in steps if st.op is StepOp.SAVE]
    assert save.args[0] not in ("rcx", "rdx")


def test_rip_relative_site_operand_is_flagged():
    d = snippet("lgdt [rip + 0x1000]; ret")
    assert at(plan(d), BASE).site_rip_relative


def test_sixteen_bit_sites_trap():
    code, _ = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_16).asm("cli; nop; nop; nop; nop; ret", 0x7c00)
    raw = bytes(code)
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_16)
    insns = tuple(Insn(a, n, 16, raw[a - 0x7c00 : a - 0x7c00 + n], m, o) for a, n, m, o in md.disasm_lite(raw, 0x7c00))
    d = Decoded(insns, frozenset({0x7c00}), (Region(0x7c00, 0x7c00 + len(raw), 16, ModeSource.USER, ".text"),),
                (), tuple(_sites(insns)), ())
    assert at(plan(d), 0x7c00).tactic is Tactic.TRAP
