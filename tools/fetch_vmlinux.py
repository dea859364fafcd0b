#!/usr/bin/env python3
"""Obtain a real distribution kernel: Debian's vmlinux (ELF64), from its linux-image package, cached.

`apt-get download` fetches the current amd64 kernel image package (the -unsigned one when it exists),
the .deb's /boot/vmlinuz-* (a bzImage) is taken out in pure Python (ar + tar), and the compressed ELF
payload is unpacked by following the x86 boot protocol's setup header. The ELF lands in the cache
directory ($XDG_CACHE_HOME/pvtranslate, else ~/.cache/pvtranslate); its path is printed.

Usage: tools/fetch_vmlinux.py [--package NAME] [--cache-dir DIR] [--force]
"""
from __future__ import annotations

import argparse
import bz2
import io
import lzma
import os
import re
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

META_PACKAGE = "linux-image-amd64"


class FetchError(Exception):
    """Anything that stops us from producing the vmlinux; the message says what to do."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pvtranslate"


# ---------------------------------------------------------------- bzImage -> ELF (x86 boot protocol)

def _decompress(payload: bytes) -> bytes:
    """Unpack a bzImage payload by its magic; the kernel may append bytes (size) after the stream."""
    if payload.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(payload)
    if payload.startswith(b"\x1f\x8b"):
        return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(payload)
    if payload.startswith(b"BZh"):
        return bz2.BZ2Decompressor().decompress(payload)
    if payload.startswith(b"\x5d\x00\x00"):
        return lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(payload)
    if payload.startswith(b"\x28\xb5\x2f\xfd"):
        try:
            import zstandard
        except ImportError:
            raise FetchError("the bzImage payload is zstd-compressed; hint: pip install zstandard") from None
        return zstandard.ZstdDecompressor().decompressobj().decompress(payload)
    if payload.startswith(b"\x7fELF"):
        return payload
    names = {b"\x89LZO": "lzo", b"\x02\x21\x4c\x18": "lz4 (legacy)"}
    kind = next((n for magic, n in names.items() if payload.startswith(magic)), f"magic {payload[:6].hex()}")
    raise FetchError(f"unsupported bzImage payload compression: {kind}")


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF vmlinux inside a bzImage (boot protocol >= 2.08: payload_offset/length at 0x248/0x24c)."""
    if len(bzimage) < 0x250 or bzimage[0x202:0x206] != b"HdrS":
        raise FetchError("not a bzImage: no 'HdrS' setup header signature at 0x202")
    version = struct.unpack_from("<H", bzimage, 0x206)[0]
    if version < 0x208:
        raise FetchError(f"boot protocol {version >> 8}.{version & 0xff:02d} has no payload fields (need >= 2.08)")
    setup_sects = bzimage[0x1F1] or 4          # 0 means 4, for old kernels
    pm_start = (setup_sects + 1) * 512         # the protected-mode code follows the real-mode setup
    offset, length = struct.unpack_from("<II", bzimage, 0x248)
    start = pm_start + offset
    if length == 0 or start + length > len(bzimage):
        raise FetchError(f"payload {start:#x}+{length:#x} lies outside the {len(bzimage):#x}-byte bzImage")
    try:
        elf = _decompress(bzimage[start:start + length])
    except (lzma.LZMAError, zlib.error, OSError, EOFError) as exc:
        raise FetchError(f"cannot decompress the bzImage payload: {exc}") from None
    check_elf64_x86_64(elf)
    return elf


def check_elf64_x86_64(elf: bytes) -> None:
    if elf[:4] != b"\x7fELF":
        raise FetchError("the unpacked payload is not an ELF file")
    if elf[4] != 2 or elf[5] != 1 or struct.unpack_from("<H", elf, 18)[0] != 62:
        raise FetchError("the unpacked payload is not an ELF64 little-endian x86-64 file")


# ---------------------------------------------------------------- .deb -> /boot/vmlinuz-*

def _ar_members(data: bytes):
    if not data.startswith(b"!<arch>\n"):
        raise FetchError("not a .deb (ar archive) file")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
        yield name, data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size & 1)


def vmlinuz_from_deb(deb: bytes) -> tuple[str, bytes]:
    """(name, bytes) of the first ./boot/vmlinuz-* in the .deb's data.tar.{xz,gz,bz2,zst}."""
    for name, member in _ar_members(deb):
        if not name.startswith("data.tar"):
            continue
        if name.endswith(".zst"):
            raise FetchError("data.tar.zst in the .deb: not supported here; hint: dpkg-deb -x the package "
                             "and pass its boot/vmlinuz-* to --bzimage")
        with tarfile.open(fileobj=io.BytesIO(member), mode="r|*") as tar:
            for entry in tar:
                if entry.isfile() and re.fullmatch(r"(\./)?boot/vmlinuz-.*", entry.name):
                    return entry.name.rsplit("/", 1)[-1], tar.extractfile(entry).read()
        raise FetchError("the .deb has no /boot/vmlinuz-* file")
    raise FetchError("the .deb has no data.tar member")


# ---------------------------------------------------------------- apt

def _run(cmd: list[str], cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise FetchError(f"{cmd[0]} not found: this needs a Debian-like system with apt") from None
    if proc.returncode != 0:
        raise FetchError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return proc.stdout


def resolve_package() -> str:
    """The kernel image package linux-image-amd64 depends on, preferring its -unsigned twin."""
    deps = re.findall(r"Depends:\s*(linux-image-\S+)", _run(["apt-cache", "depends", META_PACKAGE]))
    if not deps:
        raise FetchError(f"apt knows no dependency of {META_PACKAGE}; hint: run apt-get update (as root)")
    unsigned = deps[0] + "-unsigned"
    try:
        _run(["apt-cache", "show", "--no-all-versions", unsigned])
        return unsigned
    except FetchError:
        return deps[0]


def download(package: str, where: Path) -> Path:
    for old in where.glob(f"{package}_*.deb"):
        old.unlink()
    try:
        _run(["apt-get", "download", "-q", package], cwd=where)
    except FetchError as exc:
        raise FetchError(f"{exc}\nhint: is Debian's package mirror reachable, and the package name right "
                         f"(apt-cache search linux-image)?") from None
    debs = sorted(where.glob(f"{package}_*.deb"))
    if not debs:
        raise FetchError(f"apt-get download {package} produced no .deb in {where}")
    return debs[-1]


def fetch(package: str | None = None, where: Path | None = None, force: bool = False) -> Path:
    """Path of the cached vmlinux, downloading and extracting it first if needed."""
    where = where or cache_dir()
    where.mkdir(parents=True, exist_ok=True)
    try:
        package = package or resolve_package()
    except FetchError:
        cached = sorted(where.glob("vmlinux-*"), key=lambda p: p.stat().st_mtime)
        if cached and not force:
            return cached[-1]            # offline, but we have one from before
        raise
    out = where / f"vmlinux-{package}"
    if out.exists() and not force:
        return out
    deb = download(package, where)
    try:
        name, bzimage = vmlinuz_from_deb(deb.read_bytes())
        elf = extract_vmlinux(bzimage)
    finally:
        deb.unlink()                     # ~70 MB we no longer need
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(elf)
    os.replace(tmp, out)
    print(f"fetch_vmlinux: {package}: {name} ({len(bzimage):,} bytes) -> ELF ({len(elf):,} bytes)", file=sys.stderr)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", help=f"kernel image package (default: what {META_PACKAGE} depends on, unsigned)")
    ap.add_argument("--cache-dir", type=Path, help=f"default: {cache_dir()}")
    ap.add_argument("--bzimage", type=Path, help="extract this bzImage instead (writes BZIMAGE.elf beside it)")
    ap.add_argument("--force", action="store_true", help="download again even if cached")
    args = ap.parse_args()
    try:
        if args.bzimage:
            out = args.bzimage.with_name(args.bzimage.name + ".elf")
            out.write_bytes(extract_vmlinux(args.bzimage.read_bytes()))
        else:
            out = fetch(args.package, args.cache_dir, args.force)
    except (FetchError, OSError) as exc:
        print(f"fetch_vmlinux: error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
