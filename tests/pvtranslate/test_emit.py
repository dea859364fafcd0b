"""Emitter: static checks on the real samples' outputs (re-parse, unchanged bytes, patches, trampolines, note)."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import capstone
import lief
import pytest

from pvtranslate.abi import (HYPERCALL_ENTRY, HYPERCALL_INSN, SITE_TABLE_ENTRY, SITE_TABLE_HEADER, UNWIND_ACCESS,
                             unpack_note)
from pvtranslate.decode import decode
from pvtranslate.emit import (
    EmitError,
    EmitOptions,
    _Asm,
    _patch_bytes,
    emit,
)
from pvtranslate.image import AlreadyTranslatedError, load_image
from pvtranslate.plan import StepOp, Tactic, TrapKind, symbol_boundaries_of, plan

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
# Every sample's output gets the static checks below (re-parse, unchanged bytes, trampolines, site table).
REAL = tuple(sorted(p for p in SAMPLES.rglob("*.elf") if not p.name.endswith(".pv.elf")))
_CS = {64: capstone.CS_MODE_64, 32: capstone.CS_MODE_32}

lief.logging.disable()


def _plan_of(path: Path):
    image = load_image(path)
    return plan(decode(image), boundaries=symbol_boundaries_of(image.symbols))


@pytest.fixture(scope="module", params=REAL, ids=lambda p: p.name)
def emitted(request, tmp_path_factory):
    path: Path = request.param
    the_plan = _plan_of(path)
    out_path = tmp_path_factory.mktemp("emit") / (path.stem + ".pv.elf")
    result = emit(path, the_plan, EmitOptions(output_path=out_path))
    return path, the_plan, result, out_path


def _loads(binary):
    return [s for s in binary.segments if s.type == lief.ELF.Segment.TYPE.LOAD]


def _read(binary, va: int, size: int) -> bytes:
    return bytes(binary.get_content_from_virtual_address(va, size))


def _md(bits: int) -> capstone.Cs:
    return capstone.Cs(capstone.CS_ARCH_X86, _CS[bits])


class TestOutput:
    def test_written_file_is_the_result_and_reparses(self, emitted) -> None:
        _path, _plan, result, out_path = emitted
        assert out_path.read_bytes() == result.output
        assert lief.ELF.parse(str(out_path)) is not None
        assert not [p for p in out_path.parent.iterdir() if p.name.startswith(".pvtranslate-")]

    def test_bytes_outside_patches_unchanged(self, emitted) -> None:
        path, the_plan, result, _ = emitted
        before = lief.ELF.parse(str(path))
        after = lief.ELF.parse(io.BytesIO(result.output))
        patched = set()
        for s in the_plan.sites:
            if s.patch is not None:
                patched.update(range(s.patch.start_va, s.patch.end_va))
        after_loads = {s.virtual_address: s for s in _loads(after)}
        for seg in _loads(before):
            old = bytes(seg.content)
            new = bytes(after_loads[seg.virtual_address].content)
            assert len(new) == len(old)
            diff = [seg.virtual_address + i for i, (a, b) in enumerate(zip(old, new)) if a != b]
            assert set(diff) <= patched, [hex(d) for d in diff if d not in patched][:5]

    def test_new_segment_paddr_offset_matches(self, emitted) -> None:
        path, _plan, result, _ = emitted
        before = lief.ELF.parse(str(path))
        offsets = {s.physical_address - s.virtual_address for s in _loads(before)}
        after = lief.ELF.parse(io.BytesIO(result.output))
        assert {s.physical_address - s.virtual_address for s in _loads(after)} == offsets
        new = [s for s in _loads(after) if s.virtual_address == result.shared_page_va]
        assert len(new) == 1 and new[0].virtual_address % 0x1000 == 0
        top = max(s.virtual_address + s.virtual_size for s in _loads(before))
        assert new[0].virtual_address >= top
        assert result.area.va >= new[0].virtual_address
        assert result.area.va + result.area.size <= new[0].virtual_address + new[0].virtual_size

    def test_note_round_trips(self, emitted) -> None:
        _path, the_plan, result, out_path = emitted
        after = lief.ELF.parse(io.BytesIO(result.output))
        descs = []
        for seg in after.segments:
            if seg.type == lief.ELF.Segment.TYPE.NOTE:
                data = bytes(seg.content)
                if data[12:16] == b"PVTR":
                    descs.append(unpack_note(data))
        assert len(descs) == 1
        d = descs[0]
        assert d.shared_page_va == result.shared_page_va
        assert d.site_table_va == result.site_table_va
        assert d.site_count == len(the_plan.sites)
        with pytest.raises(AlreadyTranslatedError):
            load_image(out_path)

    def test_site_table_lists_every_site(self, emitted) -> None:
        _path, the_plan, result, _ = emitted
        after = lief.ELF.parse(io.BytesIO(result.output))
        blob = _read(after, result.site_table_va, result.site_table_size)
        magic, count, n_hc, _ = SITE_TABLE_HEADER.unpack_from(blob)
        assert magic == b"PVST" and count == len(the_plan.sites)
        off = SITE_TABLE_HEADER.size
        vas = []
        for _ in range(count):
            va, tramp, tactic, size, _cls, _r, raw = SITE_TABLE_ENTRY.unpack_from(blob, off)
            vas.append(va)
            off += SITE_TABLE_ENTRY.size
        assert vas == [s.va for s in the_plan.sites]
        records = [HYPERCALL_ENTRY.unpack_from(blob, off + k * HYPERCALL_ENTRY.size) for k in range(n_hc)]
        hcs = [va for va, _site, flags, _codes in records if not flags & UNWIND_ACCESS]   # not access points
        for h in hcs:
            assert _read(after, h, 2) == HYPERCALL_INSN
        assert [r.va for r in result.sites] == vas


class TestPatches:
    def test_each_patch_jumps_to_its_trampoline_or_traps(self, emitted) -> None:
        _path, the_plan, result, _ = emitted
        after = lief.ELF.parse(io.BytesIO(result.output))
        recs = {r.va: r for r in result.sites}
        for s in the_plan.sites:
            if s.patch is None:
                assert s.joined_to is not None
                continue
            data = _read(after, s.patch.start_va, len(s.patch))
            if s.tactic is Tactic.TRAP:
                assert data == (b"\xcc" if s.trap is TrapKind.INT3 else HYPERCALL_INSN + b"\xcc" * (len(data) - 2))
                continue
            assert s.tactic is Tactic.TRAMPOLINE_JUMP
            insn = next(_md(s.bits).disasm(data, s.patch.start_va))
            assert insn.mnemonic == "jmp" and insn.size == 5
            target = int(insn.op_str, 16)
            assert target == recs[s.va].trampoline_va
            assert result.area.va <= target < result.area.va + result.area.size
            assert data[5:] == b"\xcc" * (len(data) - 5)

    def test_trampolines_follow_plan_order(self, emitted) -> None:
        _path, the_plan, result, _ = emitted
        after = lief.ELF.parse(io.BytesIO(result.output))
        by_va = {s.va: s for s in the_plan.sites}
        checked = 0
        for rec in result.sites:
            if rec.trampoline_range is None:
                continue
            s = by_va[rec.va]
            lo, hi = rec.trampoline_range
            code = _read(after, lo, hi - lo)
            insns = list(_md(s.bits).disasm(code, lo))
            assert sum(i.size for i in insns) == len(code), f"trampoline {lo:#x} does not decode fully"
            anchors = []
            for st in s.sequence:
                if st.op is StepOp.SAVE:
                    anchors.append(("push", st.args[0]))
                elif st.op is StepOp.RESTORE:
                    anchors.append(("pop", st.args[0]))
                elif st.op is StepOp.HYPERCALL:
                    anchors.append(("int", "0x82"))
                elif st.op is StepOp.REPLAY:
                    va, raw, rip, branch = st.args
                    orig = next(_md(s.bits).disasm(raw, va))
                    if branch and orig.mnemonic == "call":  # push of the original return address, jmp
                        anchors.append(("jmp", orig.op_str))
                    elif branch:
                        anchors.append((orig.mnemonic, orig.op_str))  # same absolute target, now rel32
                    elif rip:
                        anchors.append(("rip", orig.mnemonic))  # target checked in the next test
                    else:
                        anchors.append(("raw", raw))
                elif st.op is StepOp.JUMP_BACK:
                    anchors.append(("jmp", hex(st.args[0])))
            k = 0
            for i in insns:
                if k == len(anchors):
                    break
                a = anchors[k]
                if a[0] == "raw":
                    ok = bytes(i.bytes) == a[1]
                elif a[0] == "rip":
                    ok = i.mnemonic == a[1] and "rip" in i.op_str
                else:
                    ok = i.mnemonic == a[0] and i.op_str == a[1]
                if ok:
                    k += 1
            assert k == len(anchors), f"{s.va:#x} {s.text}: anchor {anchors[k] if k < len(anchors) else None} missing"
            hcs = [i.address for i in insns if bytes(i.bytes) == HYPERCALL_INSN]
            assert tuple(hcs) == rec.hypercall_vas
            checked += 1
        assert checked == sum(1 for s in the_plan.sites if s.tactic is Tactic.TRAMPOLINE_JUMP and s.joined_to is None)

    def test_displaced_rip_relative_operands_point_to_the_same_address(self, emitted) -> None:
        _path, the_plan, result, _ = emitted
        after = lief.ELF.parse(io.BytesIO(result.output))
        md = _md(64)
        md.detail = True
        recs = {r.va: r for r in result.sites}
        for s in the_plan.sites:
            for d in s.displaced:
                if not d.needs_rip_relocation:
                    continue
                orig = next(md.disasm(d.raw, d.va))
                want = d.va + len(d.raw) + orig.disp
                lo, hi = recs[s.va].trampoline_range
                found = [i for i in md.disasm(_read(after, lo, hi - lo), lo)
                         if i.mnemonic == orig.mnemonic and "rip" in i.op_str]
                assert any(i.address + i.size + i.disp == want for i in found)

    def test_keystone_quirks_avoided(self, emitted) -> None:
        _path, the_plan, result, _ = emitted
        after = lief.ELF.parse(io.BytesIO(result.output))
        by_va = {s.va: s for s in the_plan.sites}
        for rec in result.sites:
            if rec.trampoline_range is None:
                continue
            s = by_va[rec.va]
            lo, hi = rec.trampoline_range
            widths = [st.args[1] for st in s.sequence if st.op is StepOp.PUSH_FLAGS_VIRTUAL_IF]
            pushfs = [i for i in _md(s.bits).disasm(_read(after, lo, hi - lo), lo) if i.mnemonic.startswith("pushf")]
            assert [2 if i.mnemonic == "pushf" else 8 if i.mnemonic == "pushfq" else 4 for i in pushfs] == widths


class TestKeystoneQuirks:
    """Keystone 0.9.2 behaviour the emitter works around. Fails if a version fixes it."""

    def test_absolute_operand_becomes_rip_relative_in_64_bit(self) -> None:
        import keystone

        ks = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64)
        enc, _ = ks.asm("mov rcx, qword ptr [0x1234]", 0x100000)
        insn = next(_md(64).disasm(bytes(enc), 0x100000))
        assert insn.op_str == "rcx, qword ptr [rip + 0x1234]"

    def test_absolute_operand_is_reexpressed(self) -> None:
        from pvtranslate.emit import _Mem

        a = _Asm(0x100000, 64, 0x4242, 0x200000, 0x201000)
        a.with_mem("lea rax, {m}", _Mem(None, None, 1, 0x1234, None, None))
        insn = next(_md(64).disasm(bytes(a.code), 0x100000))
        assert insn.mnemonic == "lea" and "rip" in insn.op_str
        assert insn.address + insn.size + int(insn.op_str.split("rip ")[1].replace(" ", "").rstrip("]"), 16) == 0x1234


class TestFailures:
    def test_error_mid_emit_leaves_no_file(self, tmp_path, monkeypatch) -> None:
        import pvtranslate.emit as em

        path = SAMPLES / "zoo" / "zoo64.elf"
        the_plan = _plan_of(path)
        out = tmp_path / "x.pv.elf"

        def boom(*_a, **_k):
            raise EmitError("injected")

        monkeypatch.setattr(em, "_verify", boom)
        with pytest.raises(EmitError, match="injected"):
            emit(path, the_plan, EmitOptions(output_path=out))
        assert list(tmp_path.iterdir()) == []

    def test_failed_write_leaves_no_temp(self, tmp_path, monkeypatch) -> None:
        import pvtranslate.elfwrite as ew

        def bad_replace(*_a):
            raise OSError("disk full")

        path = SAMPLES / "zoo" / "zoo64.elf"
        the_plan = _plan_of(path)
        monkeypatch.setattr(ew.os, "replace", bad_replace)
        with pytest.raises(OSError, match="disk full"):
            emit(path, the_plan, EmitOptions(output_path=tmp_path / "y.elf"))
        assert list(tmp_path.iterdir()) == []

    def test_keystone_error_names_site_and_text(self) -> None:
        a = _Asm(0x1000, 64, 0x4242, 0x2000, 0x3000)
        with pytest.raises(EmitError, match=r"0x4242.*'mov rax, \[\[bogus'"):
            a.asm("mov rax, [[bogus")

    def test_out_of_reach_trampoline_is_refused(self) -> None:
        the_plan = _plan_of(SAMPLES / "zoo" / "zoo64.elf")
        s = next(x for x in the_plan.sites if x.tactic is Tactic.TRAMPOLINE_JUMP and x.patch is not None)
        with pytest.raises(EmitError, match="rel32 reach"):
            _patch_bytes(s, s.va + (3 << 30))

    def test_high_physical_offset_is_kept(self, tmp_path) -> None:
        src = SAMPLES / "hello" / "hello_pvh64.elf"
        raw = bytearray(src.read_bytes())
        phoff, = struct.unpack_from("<Q", raw, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", raw, 0x36)
        delta = 0x4000_0000
        for k in range(phnum):
            off = phoff + k * phentsize
            if struct.unpack_from("<I", raw, off)[0] == 1:  # PT_LOAD: paddr += delta
                paddr, = struct.unpack_from("<Q", raw, off + 0x18)
                struct.pack_into("<Q", raw, off + 0x18, paddr + delta)
        shifted = tmp_path / "shifted.elf"
        shifted.write_bytes(bytes(raw))
        result = emit(shifted, _plan_of(shifted), EmitOptions(output_path=tmp_path / "shifted.pv.elf"))
        after = lief.ELF.parse(io.BytesIO(result.output))
        assert {s.physical_address - s.virtual_address for s in _loads(after)} == {delta}
        assert result.area.seg_paddr == result.shared_page_va + delta


def test_growth_is_reported() -> None:
    path = SAMPLES / "zoo" / "zoo64.elf"
    result = emit(path, _plan_of(path))
    assert result.growth == len(result.output) - os.path.getsize(path) > 0


class TestLoweringsExecute:
    """Run single trampolines of zoo64's output in Unicorn (not a guest run): flags and stack effects."""

    @pytest.fixture(scope="class")
    @classmethod
    def zoo64(cls):
        path = SAMPLES / "zoo" / "zoo64.elf"
        the_plan = _plan_of(path)
        result = emit(path, the_plan)
        return the_plan, result, lief.ELF.parse(io.BytesIO(result.output))

    def _run(self, zoo64, entry: str, rflags: int, stack_words: list[int], vif: int, pending: int = 0):
        from unicorn import UC_ARCH_X86, UC_HOOK_INTR, UC_MODE_64, Uc
        from unicorn.x86_const import UC_X86_REG_EFLAGS, UC_X86_REG_RAX, UC_X86_REG_RSP

        the_plan, result, out = zoo64
        site = next(s for s in the_plan.sites if s.entry_name == entry and s.patch is not None
                    and s.tactic is Tactic.TRAMPOLINE_JUMP)
        rec = next(r for r in result.sites if r.va == site.va)
        lo, hi = rec.trampoline_range
        uc = Uc(UC_ARCH_X86, UC_MODE_64)
        seg = next(s for s in _loads(out) if s.virtual_address == result.shared_page_va)
        uc.mem_map(seg.virtual_address, (seg.virtual_size + 0xFFF) & ~0xFFF)
        uc.mem_write(seg.virtual_address, bytes(seg.content))
        uc.mem_write(result.shared_page_va + 8, bytes([vif, pending]))
        uc.mem_map(0x7000_0000, 0x10000)
        sp = 0x7000_8000
        uc.mem_write(sp, b"".join(struct.pack("<Q", w) for w in stack_words))
        uc.reg_write(UC_X86_REG_RSP, sp)
        uc.reg_write(UC_X86_REG_EFLAGS, rflags)
        calls = []
        uc.hook_add(UC_HOOK_INTR, lambda u, n, _d: (calls.append(u.reg_read(UC_X86_REG_RAX)), u.emu_stop()))
        # stop at the final jump back (the last instruction of the trampoline)
        last = list(_md(64).disasm(_read(out, lo, hi - lo), lo))[-1]
        uc.emu_start(lo, last.address)
        return uc, site, calls, uc.reg_read(UC_X86_REG_RSP), uc.reg_read(UC_X86_REG_EFLAGS), sp

    def test_pushfq_pushes_virtual_if(self, zoo64) -> None:
        uc, site, calls, rsp, _fl, sp = self._run(zoo64, "pushfq", 0x202 | 0x85, [0, 0], vif=0)
        assert not calls
        # pushfq, then replayed displaced instructions may move rsp (a pop): find the image where pushf put it
        image, = struct.unpack("<Q", uc.mem_read(sp - 8, 8))
        assert image & 0x200 == 0 and image & 0xFF == 0x87  # IF from the virtual IF, arithmetic flags real

    @pytest.mark.parametrize("image,vif_after", [(0x200 | 0x400 | 0x800 | 0xD5, 1), (0x0, 0)])
    def test_popfq_lowering(self, zoo64, image: int, vif_after: int) -> None:
        import dataclasses

        from unicorn import UC_ARCH_X86, UC_HOOK_INTR, UC_MODE_64, Uc
        from unicorn.x86_const import UC_X86_REG_EFLAGS, UC_X86_REG_RAX, UC_X86_REG_RCX, UC_X86_REG_RSP

        from pvtranslate.emit import encode_site
        from pvtranslate.plan import Step

        the_plan, _r, _o = zoo64
        site = next(s for s in the_plan.sites if s.entry_name == "popfq")
        alone = dataclasses.replace(site, displaced=(), joined=(),
                                    sequence=(*site.steps, Step(StepOp.JUMP_BACK, (site.va + 1,))))
        shared, table, start = 0x20_0000, 0x20_1000, 0x20_1100
        code, hcs, _pc_map = encode_site(alone, {}, start, shared, table)
        uc = Uc(UC_ARCH_X86, UC_MODE_64)
        uc.mem_map(shared, 0x3000)
        uc.mem_write(table, bytes(b & ~2 for b in range(256)))
        uc.mem_write(start, code)
        uc.mem_write(shared + 8, bytes([1 - vif_after, 1]))  # virtual IF flips; an event is pending
        uc.mem_map(0x7000_0000, 0x10000)
        sp = 0x7000_8000
        uc.mem_write(sp, struct.pack("<Q", image))
        uc.reg_write(UC_X86_REG_RSP, sp)
        uc.reg_write(UC_X86_REG_RAX, 0x1111)
        uc.reg_write(UC_X86_REG_RCX, 0x2222)
        uc.reg_write(UC_X86_REG_EFLAGS, 0x202 if not image else 0x2)
        calls = []
        uc.hook_add(UC_HOOK_INTR, lambda u, n, _d: calls.append((n, u.reg_read(UC_X86_REG_RAX))))
        uc.emu_start(start, start + len(code) - 5)  # stop at the jump back
        fl = uc.reg_read(UC_X86_REG_EFLAGS)
        assert uc.reg_read(UC_X86_REG_RSP) == sp + 8
        assert fl & 0xCD5 == image & 0xCD5  # DF, OF, SF, ZF, AF, PF, CF from the image
        assert uc.mem_read(shared + 8, 1)[0] == vif_after
        assert (uc.reg_read(UC_X86_REG_RAX), uc.reg_read(UC_X86_REG_RCX)) == (0x1111, 0x2222)
        assert calls == [(0x82, 10)]  # DELIVER_PENDING (the VMM ignores it while virtual IF is 0)
        assert len([h for h in hcs if not h.access]) == 1


# ---------------------------------------------------------------- Keystone cache

def _fresh(bits: int, text: str, pc: int) -> bytes:
    import keystone
    ks = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64 if bits == 64 else keystone.KS_MODE_32)
    return bytes(ks.asm(text, pc)[0] or b"")


@pytest.mark.parametrize("sample", ["zoo/zoo32.elf", "zoo/zoo64.elf", "io/io64.elf", "irq/irq32.elf"])
def test_every_cached_encoding_is_what_keystone_gives_at_that_address(sample, tmp_path, monkeypatch):
    """Each encoding emit used, from its cache or patched from a RIP-relative form, against a fresh
    Keystone call for that text at that address."""
    from pvtranslate import emit as E
    monkeypatch.setattr(E, "_ENCODED", {})
    monkeypatch.setattr(E, "_RIP_FORMS", {})
    texts, rip = [], []
    assemble, mem_ref = E._assemble, _Asm.mem_ref

    def recording_assemble(bits, text, pc):
        enc = assemble(bits, text, pc)
        texts.append((bits, text, pc, enc))
        return enc

    def recording_mem_ref(self, template, target):
        before, pc = len(self.code), self.pc
        mem_ref(self, template, target)
        if self.bits == 64:
            rip.append((template, pc, target, bytes(self.code[before:])))

    monkeypatch.setattr(E, "_assemble", recording_assemble)
    monkeypatch.setattr(_Asm, "mem_ref", recording_mem_ref)
    emit(SAMPLES / sample, _plan_of(SAMPLES / sample), EmitOptions(output_path=tmp_path / "out.elf"))
    assert len({t for _b, t, _pc, _e in texts}) < len(texts), "the sample must reuse some text"
    for bits, text, pc, enc in texts:
        assert enc == _fresh(bits, text, pc), (bits, text, hex(pc))
    assert rip or sample.endswith("32.elf")
    for template, pc, target, enc in rip:
        rel = target - (pc + len(enc))
        assert enc == _fresh(64, template.format(m=f"[rip {'+' if rel >= 0 else '-'} {abs(rel):#x}]"), pc)


@pytest.mark.parametrize("bits, text", [
    (64, "nop\njmp 0x1000"), (64, "l: jmp 0x1000"), (64, "nop; call 0x1000"), (32, "jne 0x1000"),
    (64, "mov ecx, dword ptr [0x1000 + 0]"), (64, "mov ecx, dword ptr [1000h]"), (64, "inc dword ptr [0x2000]"),
    (64, "mov ecx, dword ptr gs:[0x28]"), (64, "mov byte ptr [0x1000], 1"),
])
def test_address_dependent_text_is_not_cached(bits, text):
    """Keystone encodes these differently at another address (it makes 64-bit [absolute] RIP-relative)."""
    from pvtranslate.emit import _pc_independent
    assert _fresh(bits, text, 0x1000) != _fresh(bits, text, 0x7000_0000)
    assert not _pc_independent(bits, text)


@pytest.mark.parametrize("text", ["mov eax, dword ptr [-0x10]", "mov qword ptr [rip + 0x10], rax"])
def test_64bit_memory_operand_without_a_register_is_never_cached(text):
    """Keystone happens to encode these alike anywhere (moffs, a literal disp), but the rule stays simple."""
    from pvtranslate.emit import _pc_independent
    assert not _pc_independent(64, text)


@pytest.mark.parametrize("bits, text", [
    (64, "push rcx"), (64, "movzx ecx, byte ptr [rdx + rcx]"), (64, "mov byte ptr [rsp + 0x11], cl"),
    (64, "mov r10d, dword ptr fs:[r11 + 4]"), (32, "mov eax, dword ptr [0x1000]"), (32, "lea ecx, [ecx + edx*2]"),
])
def test_address_independent_text_is_cached_and_the_same_anywhere(bits, text):
    from pvtranslate.emit import _pc_independent
    assert _pc_independent(bits, text)
    assert _fresh(bits, text, 0x1000) == _fresh(bits, text, 0x7000_0000)
