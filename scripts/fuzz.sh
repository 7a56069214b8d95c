#!/usr/bin/env bash
# scripts/fuzz.sh [TARGET...]      build build-fuzz/, run each target
#                                  FUZZ_SECONDS (default 60) seconds
# scripts/fuzz.sh --build          only configure and build build-fuzz/
# scripts/fuzz.sh --meson-options  print the tree's meson options, one a line
#
# The fuzzing tree: clang, libFuzzer coverage on every object, ASan and
# UBSan with no recovery.  Targets run one after the other (fuzz/run.sh);
# the last lines are a table of executions, exec/s and coverage per target.
# Exits 1 if any target found a crash, leak, timeout or sanitizer report.
set -uo pipefail

cd "$(dirname "$0")/.."

dir=build-fuzz
options=(
    -Dfuzzing=true
    -Dbuildtype=debugoptimized
    -Db_sanitize=address,undefined
    -Db_lundef=false
    "-Dc_args=-fno-sanitize-recover=all -fno-omit-frame-pointer"
)

case "${1:-}" in
--meson-options)
    printf '%s\n' "${options[@]}"
    exit 0
    ;;
--build)
    CC=clang exec bash scripts/build.sh "$dir" "${options[@]}"
    ;;
esac

CC=clang bash scripts/build.sh "$dir" "${options[@]}" || exit 1

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for t in "$dir"/fuzz/fuzz_*; do
        [ -f "$t" ] && [ -x "$t" ] && targets+=("${t##*/fuzz_}")
    done
fi

summary=()
failed=0
for t in "${targets[@]}"; do
    echo "==> fuzz $t: ${FUZZ_SECONDS:-60} s"
    line=$(bash fuzz/run.sh "$dir/fuzz/fuzz_$t" "$t")
    rc=$?
    echo "$line"
    summary+=("$(head -n 1 <<<"$line")")
    [ "$rc" -ne 0 ] && failed=$((failed + 1))
done

echo "==> summary"
printf '%s\n' "${summary[@]}"
echo "$failed of ${#targets[@]} targets failed"
[ "$failed" -eq 0 ]
