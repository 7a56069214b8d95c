#!/usr/bin/env bash
# scripts/build.sh DIR [MESON-SETUP-OPTION...]
#
# Configure build tree DIR (once; CC from the environment picks the compiler
# then) and build it with ninja.  meson.build guards optional sources with
# fs.exists(), which meson only evaluates at configure time, so the tree is
# reconfigured whenever the set of such files changes (a new test, the
# example, the bench, vm/ or tools/ appearing).
set -euo pipefail

cd "$(dirname "$0")/.."
dir=${1:?usage: scripts/build.sh DIR [meson setup options]}
shift

shopt -s nullglob
have=$(for f in lib/*.c tests/*/*.c tests/*/meson.build examples/*.c \
                bench/*.c vm/meson.build tools/meson.build \
                fuzz/*.c fuzz/meson.build; do
           if [ -e "$f" ]; then echo "$f"; fi
       done)
stamp=$dir/.mig2-inputs

if [ ! -f "$dir/meson-private/coredata.dat" ]; then
    meson setup "$dir" "$@"
    printf '%s\n' "$have" >"$stamp"
elif [ ! -f "$dir/build.ninja" ] || [ "$have" != "$(cat "$stamp" 2>/dev/null)" ]; then
    meson setup --reconfigure "$dir" "$@"
    printf '%s\n' "$have" >"$stamp"
fi

ninja -C "$dir"
