#!/usr/bin/env bash
# fuzz/run.sh [--smoke] TARGET-BINARY NAME [SECONDS]
#
# Run one libFuzzer target over its seed corpus (fuzz/corpus/NAME, never
# written to) and then mutate for SECONDS (default: FUZZ_SECONDS, else 60;
# with --smoke: FUZZ_SMOKE_SECONDS, else 8).  New inputs go to a working
# corpus next to the binary: fuzz-work/NAME/corpus (kept between runs of
# `make fuzz`; a smoke run starts from an empty one every time).  Crashes,
# leaks, timeouts and sanitizer reports are saved as
# fuzz-work/NAME/crash-*, leak-*, timeout-* ... and fail the run.
#
# FUZZ_ARGS adds libFuzzer flags (e.g. -runs=10000000); FUZZ_TIMEOUT is
# the per-input limit in seconds (default 10).
#
# Prints libFuzzer's log to fuzz-work/NAME/last.log and one summary line:
#   fuzz NAME: OK|FAILED  N runs, N exec/s, cov N, ft N, corpus N (T s)
# Exit status: libFuzzer's (0 only when it found nothing).
set -uo pipefail

smoke=false
if [ "${1:-}" = "--smoke" ]; then
    smoke=true
    shift
fi
bin=${1:?usage: run.sh [--smoke] TARGET-BINARY NAME [SECONDS]}
name=${2:?usage: run.sh [--smoke] TARGET-BINARY NAME [SECONDS]}
if $smoke; then
    seconds=${3:-${FUZZ_SMOKE_SECONDS:-8}}
else
    seconds=${3:-${FUZZ_SECONDS:-60}}
fi

here=$(cd "$(dirname "$0")" && pwd)
seeds=$here/corpus/$name
work=$(cd "$(dirname "$bin")" && pwd)/fuzz-work/$name
if $smoke; then
    work=$work-smoke
    rm -rf "$work"
fi
mkdir -p "$work/corpus"
log=$work/last.log

args=(
    -max_total_time="$seconds"
    -timeout="${FUZZ_TIMEOUT:-10}"      # one input; a hang is a finding
    -rss_limit_mb=2048
    -print_final_stats=1
    -artifact_prefix="$work/"
)
# NAME.dict, else the family's (handshake.dict for handshake_src).
if [ -f "$here/$name.dict" ]; then
    args+=(-dict="$here/$name.dict")
elif [ -f "$here/${name%%_*}.dict" ]; then
    args+=(-dict="$here/${name%%_*}.dict")
fi
dirs=("$work/corpus")
[ -d "$seeds" ] && dirs+=("$seeds")

# Any sanitizer report ends the run with a non-zero status.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

start=$(date +%s)
"$bin" "${args[@]}" ${FUZZ_ARGS:-} "${dirs[@]}" >"$log" 2>&1
rc=$?
elapsed=$(( $(date +%s) - start ))

stat() {
    sed -n "s/^stat::$1: *//p" "$log" | tail -n 1
}
runs=$(stat number_of_executed_units)
rate=$(stat average_exec_per_sec)
# The last status line: "#N  EVENT cov: C ft: F corp: K/..."
status=$(grep -E '^#[0-9]+' "$log" | grep ' cov: ' | tail -n 1)
cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status")
ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status")
corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$status")

verdict=OK
if [ "$rc" -ne 0 ]; then
    verdict=FAILED
fi
printf 'fuzz %s: %s  %s runs, %s exec/s, cov %s, ft %s, corpus %s (%s s)\n' \
    "$name" "$verdict" "${runs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" \
    "${corp:-?}" "$elapsed"
if [ "$rc" -ne 0 ]; then
    echo "---- $log (last 60 lines) ----"
    tail -n 60 "$log"
    for a in "$work"/crash-* "$work"/leak-* "$work"/timeout-* \
             "$work"/oom-* "$work"/slow-unit-*; do
        [ -e "$a" ] && echo "artifact: $a   reproduce: $bin $a"
    done
fi
exit "$rc"
