"""tools/fetch_vmlinux.py and the ELF reading of tools/bench_translate.py, offline, on synthetic inputs."""
from __future__ import annotations

import gzip
import importlib.util
import io
import lzma
import struct
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    sys.path.insert(0, str(ROOT / "tools"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fv = _load("fetch_vmlinux")
bench = _load("bench_translate")

# an ELF64 x86-64 header (e_ident, e_type EXEC, e_machine 62) and some bytes after it
TINY_ELF = (b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HHI", 2, 62, 1)).ljust(64, b"\0") + bytes(range(256)) * 8


def make_bzimage(payload: bytes, setup_sects: int = 3, offset: int = 0x1C0, version: int = 0x20F,
                 size_trailer: bool = True) -> bytes:
    """Real-mode setup sectors with the setup header, then protected-mode code, the payload at
    `offset` into it, followed by the 4-byte size the kernel's build appends (inside payload_length)."""
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, version)
    stream = payload + (struct.pack("<I", len(TINY_ELF)) if size_trailer else b"")
    struct.pack_into("<II", setup, 0x248, offset, len(stream))
    return bytes(setup) + b"\x90" * offset + stream + bytes(64)


KERNEL_XZ = dict(format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32,   # as scripts/xz_wrap.sh: BCJ x86 + LZMA2
                 filters=[{"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2, "preset": 6}])


@pytest.mark.parametrize("compress", [lambda d: lzma.compress(d, **KERNEL_XZ), gzip.compress,
                                      lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE)],
                         ids=["xz-bcj", "gzip", "lzma"])
def test_extracts_the_elf_payload(compress):
    assert fv.extract_vmlinux(make_bzimage(compress(TINY_ELF))) == TINY_ELF


def test_uncompressed_payload():
    assert fv.extract_vmlinux(make_bzimage(TINY_ELF, size_trailer=False)) == TINY_ELF


def test_setup_sects_zero_means_four():
    image = bytearray(make_bzimage(gzip.compress(TINY_ELF), setup_sects=4))
    image[0x1F1] = 0
    assert fv.extract_vmlinux(bytes(image)) == TINY_ELF


def _zstd_case() -> tuple[bytes, str]:
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return make_bzimage(b"\x28\xb5\x2f\xfd" + bytes(32)), "pip install zstandard"
    return make_bzimage(b"\x89LZO" + bytes(8)), "lzo"


@pytest.mark.parametrize("image, message", [
    (b"MZ" + bytes(0x300), "no 'HdrS'"),
    (make_bzimage(gzip.compress(TINY_ELF), version=0x206), "need >= 2.08"),
    (make_bzimage(b"\x02\x21\x4c\x18" + bytes(32)), "lz4"),
    _zstd_case(),
    (make_bzimage(gzip.compress(TINY_ELF))[:0x900], "outside"),
    (make_bzimage(b"\x1f\x8b" + bytes(40)), "cannot decompress"),
    (make_bzimage(gzip.compress(b"not an elf" * 10)), "not an ELF file"),
    (make_bzimage(gzip.compress(TINY_ELF[:18] + b"\x03\x00" + TINY_ELF[20:])), "not an ELF64 little-endian x86-64"),
], ids=["not-bzimage", "old-protocol", "lz4", "zstd-or-lzo", "truncated", "corrupt", "not-elf", "not-x86-64"])
def test_refuses_with_a_clear_message(image, message):
    with pytest.raises(fv.FetchError, match=message.replace("(", r"\(")):
        fv.extract_vmlinux(image)


def _tar_xz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_deb(files: dict[str, bytes]) -> bytes:
    members = [("debian-binary", b"2.0\n"), ("control.tar.xz", _tar_xz({"./control": b"Package: x\n"})),
               ("data.tar.xz", _tar_xz(files))]
    out = b"!<arch>\n"
    for name, data in members:
        out += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode() + data
        out += b"\n" * (len(data) & 1)
    return out


def test_deb_to_vmlinux():
    bzimage = make_bzimage(lzma.compress(TINY_ELF, **KERNEL_XZ))
    deb = make_deb({"./boot/config-6.1.0-9-amd64": b"CONFIG_X86_64=y\n", "./boot/vmlinuz-6.1.0-9-amd64": bzimage,
                    "./lib/modules/6.1.0-9-amd64/kernel/x.ko": b"\0"})
    name, data = fv.vmlinuz_from_deb(deb)
    assert (name, data) == ("vmlinuz-6.1.0-9-amd64", bzimage)
    assert fv.extract_vmlinux(data) == TINY_ELF


def test_deb_without_a_kernel():
    with pytest.raises(fv.FetchError, match="no /boot/vmlinuz"):
        fv.vmlinuz_from_deb(make_deb({"./boot/config-1": b""}))
    with pytest.raises(fv.FetchError, match="not a .deb"):
        fv.vmlinuz_from_deb(b"PK\3\4")


def test_fetch_uses_the_cache_and_says_when_apt_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))           # no apt-cache, no apt-get
    with pytest.raises(fv.FetchError, match="apt-cache not found"):
        fv.fetch(where=tmp_path / "empty")
    cached = tmp_path / "cache" / "vmlinux-linux-image-9-amd64-unsigned"
    cached.parent.mkdir()
    cached.write_bytes(TINY_ELF)
    assert fv.fetch("linux-image-9-amd64-unsigned", tmp_path / "cache") == cached
    assert fv.fetch(where=tmp_path / "cache") == cached                # offline: the newest cached one


def test_bench_sweeps_the_sections_the_translator_decodes():
    from pvtranslate.image import load_image
    elf = ROOT / "samples" / "hello" / "hello_pvh64.elf"
    ours = [(name, addr, bytes(data)) for name, addr, data in bench.exec_sections(elf.read_bytes())]
    assert ours == [(r.name, r.start_va, bytes(r.data)) for r in load_image(elf).code]


def test_bench_sweep_counts_across_chunks_as_one_whole_section_sweep(monkeypatch):
    import capstone
    elf = ROOT / "samples" / "zoo" / "zoo64.elf"
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    whole = 0
    for _name, addr, data in bench.exec_sections(elf.read_bytes()):
        off = 0
        while off < len(data):
            insns = list(md.disasm_lite(data[off:], addr + off))
            whole += len(insns)
            off = insns[-1][0] + insns[-1][1] - addr if insns else off + 1
    monkeypatch.setattr(bench, "SWEEP_CHUNK", 7)   # cuts inside instructions
    assert bench.work_sweep(elf)["instructions"] == whole > 100
