#!/usr/bin/env bash
# Prepares the aarch64 side of qcc's tests (compiler/tests/aarch64_qemu.rs): a cross gcc that
# links qcc's aarch64 objects into static executables, and qemu-user to run them here.
#   aarch64-linux-gnu-gcc   Debian package gcc-aarch64-linux-gnu (+ libc6-dev-arm64-cross)
#   qemu-aarch64            Debian package qemu-user
# Idempotent: when every tool is already there it installs nothing and only prints versions.
set -euo pipefail

# Work from the repo root whatever the caller's cwd.
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# command -> the Debian package that provides it.
declare -A PACKAGE_FOR=(
    [aarch64-linux-gnu-gcc]=gcc-aarch64-linux-gnu
    [aarch64-linux-gnu-objdump]=binutils-aarch64-linux-gnu
    [qemu-aarch64]=qemu-user
)
# Static linking needs the target's libc headers and archives (libc.a) as well.
LIBC_ARCHIVE=/usr/aarch64-linux-gnu/lib/libc.a

missing=()
for tool in "${!PACKAGE_FOR[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${PACKAGE_FOR[$tool]}")
done
[[ -f $LIBC_ARCHIVE ]] || missing+=(libc6-dev-arm64-cross)

if ((${#missing[@]} > 0)); then
    # Root installs directly; anyone else needs sudo (non-interactive: fail rather than prompt).
    as_root=()
    if [[ $(id -u) -ne 0 ]]; then
        as_root=(sudo -n)
    fi
    echo "setup-cross: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -q
    "${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# --- summary ----------------------------------------------------------------
gcc_version=$(aarch64-linux-gnu-gcc -dumpfullversion)
qemu_version=$(qemu-aarch64 --version | head -n1)
echo "setup-cross: aarch64-linux-gnu-gcc $gcc_version, $qemu_version"
