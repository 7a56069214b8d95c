#!/usr/bin/env bash
# scripts/bench.sh: run the benchmarks from the release tree (make bench
# builds it first).
#
# bench/handshake prints its own table.  Instruction counts under
# `valgrind --tool=callgrind` are planned: once the binary has a flag to run
# a single handshake (e.g. --callgrind-once N), run it here under callgrind.
set -euo pipefail

cd "$(dirname "$0")/.."
tree=${MIG2_BENCH_TREE:-build-release}
bin=$tree/bench/handshake

if [ ! -x "$bin" ]; then
    echo "bench.sh: $bin is not built (bench/handshake.c does not exist yet)"
    exit 0
fi

echo "==> $bin"
"$bin" "$@"
echo "==> callgrind instruction counts: not wired up yet (bench/handshake has no single-run flag)"
