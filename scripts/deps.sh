#!/usr/bin/env bash
# Install the Debian 12 packages mig2 needs to build, test and benchmark.
#
# Idempotent and quiet: when everything is installed it only asks dpkg and
# exits 0 without touching apt.  Otherwise it runs `apt-get update` once and
# installs the missing packages (as root, or through sudo).
set -euo pipefail

packages=(
    build-essential meson ninja-build pkg-config
    clang libclang-rt-14-dev llvm           # asan/ubsan tree, llvm-symbolizer
    libgnutls28-dev gnutls-bin              # SHA-256/HMAC, TLS tests
    libcmocka-dev libjson-c-dev
    valgrind python3
    iproute2 qemu-system-x86 socat          # interop tests against QEMU
)

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$status" in
        *" ok installed") ;;
        *) missing+=("$p") ;;
    esac
done

[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps.sh: installing ${missing[*]}" >&2

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "deps.sh: not root and no sudo; install as root: ${missing[*]}" >&2
        exit 1
    fi
    sudo=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-q -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=300 -o Acquire::Retries=3)

log=$(mktemp)
trap 'rm -f "$log"' EXIT
run_apt() {
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get "${apt_opts[@]}" "$@" >"$log" 2>&1; then
        cat "$log" >&2
        echo "deps.sh: apt-get $1 failed" >&2
        exit 1
    fi
}
run_apt update
run_apt install -y --no-install-recommends "${missing[@]}"

echo "deps.sh: done" >&2
