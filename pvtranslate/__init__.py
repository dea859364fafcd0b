"""pvtranslate owns the static paravirtualization of x86 guest kernel binaries.

This package file stays standard-library only and imports none of its submodules: the VMM imports
``pvtranslate.abi`` and must not pull Capstone, Keystone or LIEF in through here.
"""

__all__ = ["PvTranslateError"]


class PvTranslateError(Exception):
    """Root of every error raised by pvtranslate (ABI, catalog, planner, emitter)."""
