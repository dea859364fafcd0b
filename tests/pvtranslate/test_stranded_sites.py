"""A patch that runs on through a short site it would otherwise strand, checked end to end.

Linux's ``sync_core`` returns to itself through an ``iret`` built right after ``pushf`` and a read of
``cs``: the ``pushf``'s trampoline would end exactly at the ``iret``, which can neither displace what
follows it nor (those bytes being patched) what precedes it. The planner joins the ``iret`` into the
``pushf``'s trampoline instead of leaving it a trap; here the original and the translation run side
by side in the VMM and must print and exit alike, with no trap and no escape.
"""
from __future__ import annotations

import pytest

import hostile_guests as H
from pvtranslate.plan import Tactic
from pvtranslate.translate import TranslateOptions, translate
from vmm.run import run

IRET_TO_SELF = {
    64: ["mov eax, ss", "push rax", "push rsp", "add qword ptr [rsp], 8", "pushfq", "mov eax, cs", "push rax",
         "push iret_done", "iretq", "iret_done:"],
    # (Keystone 0.9.2 cannot fix up a label as a 32-bit push immediate: push imm32 is spelled out)
    32: ["pushfd", "mov eax, cs", "push eax", ".byte 0x68", ".long iret_done", "iretd", "iret_done:"],
}
# a port write between a jcc and its target, after an in whose patch would end right before it
PORT_AFTER_JCC = ["mov dx, 0x80", "in eax, dx", "test al, 0x10", "je port_done", "and eax, 0xffffffef",
                  "out dx, eax", "port_done:"]


@pytest.mark.parametrize("bits", [64, 32])
def test_joined_sites_run_as_the_original(bits, tmp_path) -> None:
    body = []
    for k in range(3):   # with the digest printed between rounds, so a wrong return shows
        body += [line.replace("iret_done", f"iret_done{k}").replace("port_done", f"port_done{k}")
                 for line in IRET_TO_SELF[bits] + PORT_AFTER_JCC]
        body += ["mov {si}, {after}", "call puts"]
    guest = tmp_path / f"stranded{bits}.elf"
    built = H.build(bits, body)
    guest.write_bytes(built.elf)
    translation = translate(guest, TranslateOptions(output=tmp_path / f"stranded{bits}.pv.elf"))
    sites = {s.va: s for s in translation.plan.sites if built.labels["main"] <= s.va < built.labels["exit"]}
    irets = [s for s in sites.values() if s.entry_name.startswith("iret")]
    outs = [s for s in sites.values() if s.text == "out dx, eax"]
    assert len(irets) == len(outs) == 3
    for s in irets + outs:
        assert s.tactic is Tactic.TRAMPOLINE_JUMP and s.joined_to is not None, s
        lead = sites[s.joined_to]
        assert lead.patch.start_va < s.va and lead.patch.end_va == s.va + len(s.raw)
    native = run(guest, mode="native")
    pv = run(translation.output_path)
    assert pv.mode == "pv" and pv.escapes == ()
    assert native.console.count(b"after\n") == 3
    assert (pv.console, pv.exit_status, pv.error) == (native.console, native.exit_status, native.error)
