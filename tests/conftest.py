"""Pytest set-up: tests import their support modules from this directory; `--runslow` enables long runs."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run the long-running workload samples")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running; enabled with --runslow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="long-running: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
