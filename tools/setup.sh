#!/usr/bin/env bash
# One-time set-up on a fresh Debian machine: QEMU (the oracle), the sample toolchain, and a virtualenv
# in .venv with pvtranslate/vmm and their test dependencies. Safe to run again; fast when done.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v qemu-system-x86_64 >/dev/null || need_apt+=(qemu-system-x86)
command -v gcc >/dev/null || need_apt+=(gcc)
command -v ld >/dev/null && command -v objcopy >/dev/null || need_apt+=(binutils)
if ((${#need_apt[@]})); then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    echo "setup: installing ${need_apt[*]} from Debian's packages" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if ! .venv/bin/python -c "import vmm, pvtranslate, unicorn, capstone, keystone, lief, pytest, distributed" \
        2>/dev/null \
        || [ ! -x .venv/bin/vmm ] || [ ! -x .venv/bin/pvtranslate ]; then
    echo "setup: installing Python packages into .venv" >&2
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[test,fuzz]'
fi
