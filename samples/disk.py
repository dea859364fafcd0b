"""Makes the deterministic raw ATA disk image that the I/O sample kernels read and write.

Byte j of sector i is (i*131 + j*7 + (i >> 8)) & 0xff; samples/io/io.c computes the same formula.
Usage: python3 samples/disk.py OUT SECTORS   (prints the image's FNV-1a 32-bit checksum)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

SECTOR_SIZE = 512


def sector_bytes(index: int) -> bytes:
    """Contents of sector `index` of a fresh image."""
    return bytes((index * 131 + j * 7 + (index >> 8)) & 0xFF for j in range(SECTOR_SIZE))


def image_bytes(sectors: int) -> bytes:
    return b"".join(sector_bytes(i) for i in range(sectors))


def fnv1a32(data: bytes) -> int:
    """The checksum the I/O kernel prints for data it reads."""
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def make_disk_image(path: str | Path, sectors: int) -> Path:
    """Writes a fresh image of `sectors` 512-byte sectors to `path` (replacing it) and returns the path."""
    if sectors <= 0:
        raise ValueError(f"sectors must be positive, got {sectors}")
    path = Path(path)
    path.write_bytes(image_bytes(sectors))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="image file to write (raw format)")
    ap.add_argument("sectors", type=int, help="number of 512-byte sectors")
    args = ap.parse_args(argv)
    make_disk_image(args.out, args.sectors)
    print(f"{args.out}: {args.sectors} sectors, fnv1a32 {fnv1a32(args.out.read_bytes()):08x}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
