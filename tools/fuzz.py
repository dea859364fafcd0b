#!/usr/bin/env python3
"""Fuzz the translator: random guests from seeds, each translated and run against its original.

Usage: tools/fuzz.py [--seeds A:B] [--jobs N] [--scheduler ADDRESS] [--out DIR] [--no-minimize]
                     [--bits 32|64] [--cases N] [--timeout S] [--inject-bug] [--print-program SEED]

The same as ``pvtranslate fuzz``; pvtranslate/fuzz.py says what a verdict means and what DIR holds.
Example: tools/fuzz.py --seeds 0:10000 --jobs 2 --out /tmp/fuzz
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pvtranslate.fuzz import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
