"""The `pvtranslate` command end to end: output, report, --plan, and bad input with no output left."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lief
import pytest

from pvtranslate import abi

ROOT = Path(__file__).resolve().parents[2]
ZOO64 = ROOT / "samples" / "zoo" / "zoo64.elf"


def pvtranslate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "pvtranslate", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def test_translate_writes_output_and_report(tmp_path):
    out, report = tmp_path / "zoo64.pv.elf", tmp_path / "report.json"
    proc = pvtranslate(str(ZOO64), "-o", str(out), "--json", str(report), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:4] == b"\x7fELF"
    data = json.loads(report.read_text())
    assert data["statistics"]["sites"] == len(data["sites"]) > 0
    # every site of the output's own site table (read back from the file) is in the report
    binary = lief.parse(str(out))
    note = next(n for n in binary.notes if n.name.rstrip("\0") == "PVTR")
    desc = abi.unpack_descriptor(bytes(note.description))
    head = bytes(binary.get_content_from_virtual_address(desc.site_table_va, abi.SITE_TABLE_HEADER.size))
    table = abi.parse_site_table(bytes(binary.get_content_from_virtual_address(
        desc.site_table_va, abi.site_table_size(head))))
    assert sorted(table.sites) == sorted(int(site["va"], 16) for site in data["sites"])
    assert "trap fallback" in proc.stdout and "by tactic" in proc.stdout
    again = pvtranslate(str(out), "-o", str(tmp_path / "twice.elf"), cwd=tmp_path)
    assert again.returncode == 2 and "already translated" in again.stderr
    assert not (tmp_path / "twice.elf").exists()


def test_default_output_name_and_plan_only(tmp_path):
    guest = tmp_path / "zoo64.elf"
    guest.write_bytes(ZOO64.read_bytes())
    planned = pvtranslate(str(guest), "--plan", cwd=tmp_path)
    assert planned.returncode == 0 and "TRAMPOLINE_JUMP" in planned.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zoo64.elf"]      # --plan writes nothing
    assert pvtranslate(str(guest), cwd=tmp_path).returncode == 0
    assert (tmp_path / "zoo64.pv.elf").exists()


def test_reader_leaving_early_is_no_traceback(tmp_path):
    """`pvtranslate --plan | head -1`: the plan printout is cut short, quietly, with SIGPIPE's status."""
    import fcntl

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)       # far less than the zoo's plan: the writer must wait
    proc = subprocess.Popen([sys.executable, "-m", "pvtranslate", str(ZOO64), "--plan"], stdout=write_end,
                            stderr=subprocess.PIPE, cwd=tmp_path, env=env)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        assert b"site" in reader.readline()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and stderr == ""


@pytest.mark.parametrize("name, data, message", [
    ("text.elf", b"not an elf at all\n", "not an ELF"),
    ("trunc.elf", ZOO64.read_bytes()[:100], "truncated"),
])
def test_bad_input_leaves_no_output(tmp_path, name, data, message):
    guest = tmp_path / name
    guest.write_bytes(data)
    proc = pvtranslate(str(guest), "-o", str(tmp_path / "out.elf"), cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
