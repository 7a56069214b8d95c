#!/usr/bin/env bash
# scripts/check.sh [MESON-TEST-OPTION...]
#
# Build and run every test suite twice, then smoke-test the fuzzers:
#   build/       gcc, debugoptimized
#   build-asan/  clang, AddressSanitizer + UndefinedBehaviorSanitizer, any
#                report fails the test (-fno-sanitize-recover=all)
#   build-fuzz/  clang, libFuzzer + ASan + UBSan (scripts/fuzz.sh): each
#                fuzz target runs over its seed corpus and mutates for
#                FUZZ_SMOKE_SECONDS (default 8), one test each (suite fuzz)
# then print one final line "N passed, N failed" summing all trees.
#
# Counting, from the summary `meson test` prints: "Ok" is passed;
# "Fail", "Timeout" and "Unexpected Pass" are failed ("Expected Fail" and
# "Skipped" are neither).  A tree that does not configure or build counts as
# one failure (and when build/ fails, build-asan/ is not tried).  A
# `meson test` that fails without any failed test in its summary also
# counts as one failure.  Exits 1 when anything failed.
set -uo pipefail

cd "$(dirname "$0")/.."

passed=0
failed=0

# summary_count LOG LABEL: the number on the last "LABEL: N" line, or 0.
summary_count() {
    local n
    n=$(grep -E "^$2:[[:space:]]+[0-9]+" "$1" | tail -n 1 | grep -oE '[0-9]+' | tail -n 1)
    echo "${n:-0}"
}

# run_tree NAME -- build and test one tree; returns 1 if it did not build.
run_tree() {
    local dir=$1 log rc ok fail timeout upass
    shift
    echo "==> $dir: configure and build"
    if ! bash scripts/build.sh "$dir" "$@"; then
        echo "==> $dir: BUILD FAILED"
        failed=$((failed + 1))
        return 1
    fi

    echo "==> $dir: meson test"
    log=$(mktemp)
    meson test -C "$dir" --print-errorlogs "${test_args[@]}" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}

    ok=$(summary_count "$log" 'Ok')
    fail=$(summary_count "$log" 'Fail')
    timeout=$(summary_count "$log" 'Timeout')
    upass=$(summary_count "$log" 'Unexpected Pass')
    rm -f "$log"

    fail=$((fail + timeout + upass))
    if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
        echo "==> $dir: meson test exited $rc"
        fail=1
    fi
    echo "==> $dir: $ok passed, $fail failed"
    passed=$((passed + ok))
    failed=$((failed + fail))
    return 0
}

test_args=("$@")

if CC=gcc run_tree build -Dbuildtype=debugoptimized; then
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
    export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
    test_args+=(--timeout-multiplier 3)
    CC=clang run_tree build-asan \
        -Dbuildtype=debugoptimized \
        -Db_sanitize=address,undefined \
        -Db_lundef=false \
        "-Dc_args=-fno-sanitize-recover=all -fno-omit-frame-pointer"
    mapfile -t fuzz_options < <(bash scripts/fuzz.sh --meson-options)
    CC=clang run_tree build-fuzz "${fuzz_options[@]}"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
