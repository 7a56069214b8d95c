#!/usr/bin/env bash
# scripts/bench.sh [HANDSHAKE-OPTION...]: run the benchmarks from the release
# tree (make bench builds it first).
#
#  1. bench/handshake prints its table: bytes per direction and wall time
#     (median, min, max) of a full in-memory handshake per manifest size,
#     and the time/size targets.  Arguments go to it (e.g. --iterations 50);
#     a --sizes among them replaces MIG2_BENCH_SIZES for both steps.
#  2. For each size, `handshake --once N` runs under callgrind with
#     collection toggled on bench_one_handshake() only, so the count covers
#     the handshake (both engines, created to freed) and not the profile
#     building or process start-up.  Prints instructions, instructions per
#     device and the 10,000/1,000 ratio against its target (<= 12x).
#  3. scripts/bench-migrate.py: migration throughput of 1 GiB of random
#     guest RAM -- the bare limit (bench/rawcopy, 1/2/4 loopback TCP
#     streams), mig2 v2 between two mig2-vm processes (multifd off and
#     1/2/4 channels) and, when qemu-system-x86_64 is installed, QEMU 7.2
#     -- medians of 5 runs, ratios and the issue-4 targets -- and a
#     VM with 10,000 more devices (setup time and downtime).  A few minutes.
#
# Environment: MIG2_BENCH_TREE (default build-release),
#              MIG2_BENCH_SIZES (default 10,100,1000,10000),
#              MIG2_BENCH_MIGRATE: arguments for bench-migrate.py (default
#              "--reps 5"; e.g. "--quick", or "skip" to leave step 3 out).
# Exits non-zero when a binary or valgrind is missing, a handshake fails
# or a migration run fails outright (digest mismatch, crash, timeout);
# never because a speed or size target is missed.
set -euo pipefail

cd "$(dirname "$0")/.."
tree=${MIG2_BENCH_TREE:-build-release}
sizes=${MIG2_BENCH_SIZES:-10,100,1000,10000}
bin=$tree/bench/handshake
fn=bench_one_handshake

args=("$@")
for ((i = 0; i + 1 < ${#args[@]}; i++)); do
    if [ "${args[i]}" = --sizes ]; then
        sizes=${args[i + 1]}
    fi
done

if [ ! -x "$bin" ]; then
    echo "bench.sh: $bin is missing; build it with 'make bench' (or" \
         "scripts/build.sh $tree -Dbuildtype=release)" >&2
    exit 1
fi

echo "==> $bin --sizes $sizes $*"
"$bin" --sizes "$sizes" "$@"

echo
echo "==> instructions per handshake: valgrind --tool=callgrind" \
     "--toggle-collect=$fn $bin --once N"
if ! command -v valgrind >/dev/null 2>&1; then
    echo "bench.sh: valgrind is not installed (scripts/deps.sh installs it)" >&2
    exit 1
fi
# (No `nm | grep -q`: grep exiting early would fail nm under pipefail.)
if command -v nm >/dev/null 2>&1 &&
        ! grep -qw "$fn" <<<"$(nm "$bin" 2>/dev/null || true)"; then
    echo "bench.sh: $bin has no symbol $fn (stripped?); callgrind would" \
         "count nothing" >&2
    exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT

declare -A instr=()
IFS=, read -r -a size_list <<<"$sizes"
printf '%8s %15s %12s\n' devices instructions "per device"
for n in "${size_list[@]}"; do
    if ! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
            --toggle-collect="$fn" "$bin" --once "$n" >/dev/null 2>"$log"; then
        cat "$log" >&2
        echo "bench.sh: callgrind run with $n devices failed" >&2
        exit 1
    fi
    # "==PID== Collected : 123456" (events while $fn was on the stack).
    count=$(sed -n 's/^==[0-9]*== Collected : *\([0-9][0-9]*\).*/\1/p' "$log")
    if [ -z "$count" ]; then
        cat "$log" >&2
        echo "bench.sh: no 'Collected :' line in callgrind's output" >&2
        exit 1
    fi
    instr[$n]=$count
    awk -v n="$n" -v c="$count" \
        'BEGIN { printf "%8d %15d %12.0f\n", n, c, c / n }'
done

if [ -n "${instr[1000]:-}" ] && [ -n "${instr[10000]:-}" ]; then
    awk -v a="${instr[1000]}" -v b="${instr[10000]}" 'BEGIN {
        r = b / a
        printf "  10,000/1,000 instructions   %14.2fx   %-12s %s\n", r,
               "<= 12x", (r <= 12 ? "PASS" : "FAIL")
    }'
else
    echo "  10,000/1,000 instructions: not measured (sizes need 1000 and 10000)"
fi

migrate_args=${MIG2_BENCH_MIGRATE:---reps 5}
if [ "$migrate_args" = skip ]; then
    echo
    echo "==> migration throughput: skipped (MIG2_BENCH_MIGRATE=skip)"
    exit 0
fi
read -r -a migrate_argv <<<"$migrate_args"
echo
echo "==> migration throughput: python3 scripts/bench-migrate.py" \
     "--tree $tree ${migrate_argv[*]}"
python3 scripts/bench-migrate.py --tree "$tree" "${migrate_argv[@]}"
