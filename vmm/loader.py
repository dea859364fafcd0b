"""Boot protocols (PVH ELF note, multiboot v1): put a kernel and its boot info in RAM, return a record."""
from __future__ import annotations

import enum
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from . import layout
from .elf import ElfImage, parse_elf
from .errors import LoadError
from .memory import GuestRam

XEN_ELFNOTE_PHYS32_ENTRY = 18
PVH_START_MAGIC = 0x336EC578
MB1_HEADER_MAGIC = 0x1BADB002
MB1_BOOT_MAGIC = 0x2BADB002
MB1_SEARCH_BYTES = 8192
MB1_AOUT_KLUDGE = 1 << 16
E820_RAM = 1
E820_RESERVED = 2


class BootProtocol(enum.Enum):
    PVH = "pvh"
    MULTIBOOT1 = "multiboot1"


@dataclass(frozen=True)
class Module:
    """A boot module, given as QEMU's -initrd entries are: "FILE [ARGS]"; the whole text is its command line."""

    spec: str

    @property
    def path(self) -> str:
        return self.spec.split(" ", 1)[0]

    @property
    def args(self) -> str:
        return self.spec.partition(" ")[2]


@dataclass(frozen=True)
class BootRecord:
    """Where the loader put things and the register values the boot protocol promises at entry."""

    protocol: BootProtocol
    entry_pa: int
    eax: int
    ebx: int
    image: ElfImage
    kernel_end_pa: int
    boot_info_pa: int


def e820_map(ram_bytes: int) -> list[tuple[int, int, int]]:
    """The memory map SeaBIOS reports on QEMU's `pc` machine with this much RAM (base, length, type):
    it keeps the top 128 KiB of RAM for itself, and reserves the BIOS ROM and the AMD HyperTransport hole."""
    usable_top = ram_bytes - layout.FIRMWARE_RESERVED_BYTES
    return [
        (0, layout.LOW_RAM_TOP, E820_RAM),
        (layout.LOW_RAM_TOP, 0xA0000 - layout.LOW_RAM_TOP, E820_RESERVED),
        (0xF0000, 0x10000, E820_RESERVED),
        (layout.HIGH_RAM_START, usable_top - layout.HIGH_RAM_START, E820_RAM),
        (usable_top, layout.FIRMWARE_RESERVED_BYTES, E820_RESERVED),
        (layout.BIOS_ROM_BASE, (1 << 32) - layout.BIOS_ROM_BASE, E820_RESERVED),
        (layout.AMD_HT_HOLE_BASE, layout.AMD_HT_HOLE_BYTES, E820_RESERVED),
    ]


def load_kernel(path: str | Path, ram: GuestRam, cmdline: str = "", modules: tuple[Module, ...] = (),
                kernel_name: str | None = None, modules_at: int | None = None) -> BootRecord:
    path = str(path)
    try:
        kind = stat.S_IFMT(os.stat(path).st_mode)
        if kind in (stat.S_IFDIR, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFSOCK):   # /dev/zero would never end
            raise LoadError(f"{path}: cannot read the guest image (it is a "
                            f"{'directory' if kind == stat.S_IFDIR else 'device or socket'}, not a file)")
        data = Path(path).read_bytes()
    except OSError as exc:
        raise LoadError(f"{path}: cannot read the guest image ({exc.strerror})") from exc
    return load_image(data, path, ram, cmdline, modules, kernel_name, modules_at)


def load_image(data: bytes, path: str, ram: GuestRam, cmdline: str = "",
               modules: tuple[Module, ...] = (), kernel_name: str | None = None,
               modules_at: int | None = None) -> BootRecord:
    """Load an image already in memory (`path` names it in messages; `kernel_name`, default `path`, in
    the multiboot command line; modules go after the kernel, and at or above `modules_at` if given)."""
    image = parse_elf(data, path)
    mb_header = _find_multiboot_header(data)
    if mb_header is not None:
        if image.is64:
            raise LoadError(f"{path}: a multiboot v1 header in an ELF64 image; multiboot v1 loads ELF32 only "
                            "(as QEMU); remove the header and boot it through a PVH note instead")
        return _load_multiboot(image, mb_header, ram, cmdline, modules, kernel_name or path, modules_at or 0)
    note = image.note("Xen", XEN_ELFNOTE_PHYS32_ENTRY)
    if note is not None:
        return _load_pvh(image, note.desc, ram, cmdline, modules, modules_at or 0)
    raise LoadError(f"{path}: no boot protocol found: neither a PVH note (Xen note type "
                    f"{XEN_ELFNOTE_PHYS32_ENTRY}) nor a multiboot v1 header in the first {MB1_SEARCH_BYTES} bytes")


def _find_multiboot_header(data: bytes) -> int | None:
    for off in range(0, min(len(data), MB1_SEARCH_BYTES) - 11, 4):
        magic, flags, checksum = struct.unpack_from("<III", data, off)
        if magic == MB1_HEADER_MAGIC and (magic + flags + checksum) & 0xFFFFFFFF == 0:
            return off
    return None


def _check_no_overlap(image: ElfImage) -> None:
    """Segments may not share physical memory (QEMU refuses overlapping regions too): this also bounds the
    loader's work by the RAM size, whatever the number of program headers."""
    ordered = sorted(image.segments, key=lambda s: s.paddr)
    for before, after in zip(ordered, ordered[1:]):
        if after.paddr < before.paddr + before.mem_size:
            raise LoadError(f"{image.path}: segments at physical {before.paddr:#x}-{before.paddr + before.mem_size:#x} "
                            f"and {after.paddr:#x}-{after.paddr + after.mem_size:#x} overlap (QEMU refuses "
                            "overlapping regions too); fix the program headers")


def _load_segments(image: ElfImage, ram: GuestRam) -> int:
    _check_no_overlap(image)
    end = 0
    for seg in image.segments:
        seg_end = seg.paddr + seg.mem_size
        if seg_end > ram.size:
            raise LoadError(f"{image.path}: segment at physical {seg.paddr:#x}-{seg_end:#x} does not fit in "
                            f"guest RAM (0-{ram.size:#x}); give the VM more memory with --mem or link the "
                            "kernel at a physical address in RAM")
        if seg.paddr < layout.BOOT_DATA_END and seg_end > layout.BOOT_DATA_START:
            raise LoadError(f"{image.path}: segment at physical {seg.paddr:#x}-{seg_end:#x} overlaps the "
                            f"boot data at {layout.BOOT_DATA_START:#x}-{layout.BOOT_DATA_END:#x}; "
                            "link the kernel at 1 MiB or above")
        ram.write(seg.paddr, image.data[seg.file_off:seg.file_off + seg.file_size])
        ram.write(seg.paddr + seg.file_size, bytes(seg.mem_size - seg.file_size))
        end = max(end, seg.paddr + seg.mem_size)
    return end


def _entry_physical(image: ElfImage) -> int:
    """e_entry is virtual; inside an executable segment linked high (vaddr != paddr), QEMU moves it to paddr."""
    for seg in image.segments:
        if seg.flags & 1 and seg.vaddr != seg.paddr and seg.vaddr <= image.entry_va < seg.vaddr + seg.file_size:
            return image.entry_va - seg.vaddr + seg.paddr
    return image.entry_va


def _check_entry(image: ElfImage, entry_pa: int) -> None:
    for seg in image.segments:
        if seg.paddr <= entry_pa < seg.paddr + seg.file_size:
            return
    raise LoadError(f"{image.path}: entry point {entry_pa:#x} is outside every loaded segment")


def _place_modules(modules: tuple[Module, ...], ram: GuestRam, start: int) -> list[tuple[int, int, str]]:
    placed, addr = [], (max(start, layout.HIGH_RAM_START) + 0xFFF) & ~0xFFF
    top = ram.size - layout.FIRMWARE_RESERVED_BYTES
    for mod in modules:
        try:
            blob = Path(mod.path).read_bytes()
        except OSError as exc:
            raise LoadError(f"module {mod.path}: cannot read it ({exc.strerror})") from exc
        if addr + len(blob) > top:
            raise LoadError(f"module {mod.path}: {len(blob)} bytes do not fit in guest RAM; use a larger --mem")
        ram.write(addr, blob)
        placed.append((addr, len(blob), mod))
        addr = (addr + len(blob) + 0xFFF) & ~0xFFF
    return placed


def _write_modlist(ram: GuestRam, modlist: bytes) -> None:
    if len(modlist) > layout.MODLIST_BYTES:
        raise LoadError(f"too many boot modules ({len(modlist)} bytes of module list, at most {layout.MODLIST_BYTES})")
    ram.write(layout.BOOT_MODLIST_PA, modlist)


def _write_cstring(ram: GuestRam, pa: int, text: str, end_pa: int) -> int:
    """Write a NUL-terminated string (bytes as the OS gave them) that must end before `end_pa`."""
    raw = os.fsencode(text) + b"\0"
    if pa + len(raw) > end_pa:
        raise LoadError(f"boot strings too long: {text[:40]!r}... does not fit in the {end_pa - pa} bytes left "
                        "for command lines; shorten the command line or module arguments")
    ram.write(pa, raw)
    return pa + len(raw)


def _load_multiboot(image: ElfImage, header_off: int, ram: GuestRam, cmdline: str,
                    modules: tuple[Module, ...], kernel_name: str, modules_at: int = 0) -> BootRecord:
    flags = struct.unpack_from("<I", image.data, header_off + 4)[0]
    if flags & MB1_AOUT_KLUDGE:
        raise LoadError(f"{image.path}: multiboot a.out-kludge layout (flag bit 16) is not supported; "
                        "let the loader use the ELF program headers (clear bit 16)")
    end = _load_segments(image, ram)
    entry_pa = _entry_physical(image)
    _check_entry(image, entry_pa)
    # QEMU passes "<kernel path> <append>" as the multiboot command line.
    str_pa = _write_cstring(ram, layout.BOOT_CMDLINE_PA, f"{kernel_name} {cmdline}", layout.BOOT_MODLIST_PA)
    loader_name_pa = str_pa
    str_pa = _write_cstring(ram, str_pa, "qemu", layout.BOOT_MODLIST_PA)
    placed = _place_modules(modules, ram, max(end, modules_at))
    modlist = b""
    for mod_pa, size, mod in placed:
        mod_cmd_pa = str_pa
        str_pa = _write_cstring(ram, str_pa, mod.spec, layout.BOOT_MODLIST_PA)
        modlist += struct.pack("<IIII", mod_pa, mod_pa + size, mod_cmd_pa, 0)
    _write_modlist(ram, modlist)
    mmap = b"".join(struct.pack("<IQQI", 20, base, length, kind) for base, length, kind in e820_map(ram.size))
    ram.write(layout.BOOT_MMAP_PA, mmap)
    mem_upper_kib = (ram.size - layout.FIRMWARE_RESERVED_BYTES - layout.HIGH_RAM_START) // 1024
    mbi_flags = 0x001 | 0x002 | 0x004 | 0x008 | 0x040 | 0x200  # mem, boot_device, cmdline, mods, mmap, name
    mbi = struct.pack("<IIIIIII16sIIIIII", mbi_flags, layout.LOW_RAM_TOP // 1024, mem_upper_kib, 0x8000FFFF,
                      layout.BOOT_CMDLINE_PA, len(placed), layout.BOOT_MODLIST_PA, bytes(16),
                      len(mmap), layout.BOOT_MMAP_PA, 0, 0, 0, loader_name_pa)
    ram.write(layout.BOOT_INFO_PA, mbi)
    return BootRecord(BootProtocol.MULTIBOOT1, entry_pa, MB1_BOOT_MAGIC, layout.BOOT_INFO_PA, image, end,
                      layout.BOOT_INFO_PA)


def _load_pvh(image: ElfImage, desc: bytes, ram: GuestRam, cmdline: str, modules: tuple[Module, ...],
              modules_at: int = 0) -> BootRecord:
    if len(desc) not in (4, 8):
        raise LoadError(f"{image.path}: PVH entry note has a {len(desc)}-byte value; expected 4 or 8")
    entry_pa = int.from_bytes(desc, "little")
    end = _load_segments(image, ram)
    _check_entry(image, entry_pa)
    cmdline_pa = 0
    if cmdline:
        cmdline_pa = layout.BOOT_CMDLINE_PA
        _write_cstring(ram, cmdline_pa, cmdline, layout.BOOT_MODLIST_PA)
    placed = _place_modules(modules, ram, max(end, modules_at))
    str_pa = layout.BOOT_MODLIST_PA + layout.MODLIST_BYTES
    modlist = b""
    for mod_pa, size, mod in placed:
        mod_cmd_pa = 0                      # as QEMU: a PVH module gets a command line only if it has args
        if mod.args:
            mod_cmd_pa = str_pa
            str_pa = _write_cstring(ram, str_pa, mod.args, layout.BOOT_DATA_END)
        modlist += struct.pack("<QQQQ", mod_pa, size, mod_cmd_pa, 0)
    _write_modlist(ram, modlist)
    entries = e820_map(ram.size)
    ram.write(layout.BOOT_MMAP_PA, b"".join(struct.pack("<QQII", b, n, k, 0) for b, n, k in entries))
    start_info = struct.pack("<IIIIQQQQII", PVH_START_MAGIC, 1, 0, len(placed),
                             layout.BOOT_MODLIST_PA if placed else 0, cmdline_pa, 0,
                             layout.BOOT_MMAP_PA, len(entries), 0)
    ram.write(layout.BOOT_INFO_PA, start_info)
    return BootRecord(BootProtocol.PVH, entry_pa, 0, layout.BOOT_INFO_PA, image, end, layout.BOOT_INFO_PA)
