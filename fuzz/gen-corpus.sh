#!/usr/bin/env bash
# fuzz/gen-corpus.sh -- regenerate the seed corpora in fuzz/corpus/
#
#   handshake_src, handshake_dst, error, channel, manifest
#       build-fuzz/fuzz/gen_corpus: engine pairs run in memory and the
#       spec's hex examples (see gen_corpus.c)
#   legacy
#       real v3 streams: a mig2-vm (1 MiB of RAM, the devices of
#       fuzz/fuzzvm.h) migrates to `file:`, idle and with a guest workload
#   qmp
#       client sessions written below: every command of mig2-vm's table
#       with valid and invalid arguments
#
# Seeds whose names start with "regress-" are inputs that once found a bug;
# this script never touches them.  Run from anywhere; needs the fuzz tree
# (scripts/fuzz.sh --build, done here).
set -euo pipefail

cd "$(dirname "$0")/.."
bash scripts/fuzz.sh --build >/dev/null

out=fuzz/corpus
b=build-fuzz
for t in handshake_src handshake_dst error channel manifest legacy qmp; do
    mkdir -p "$out/$t"
    find "$out/$t" -type f ! -name 'regress-*' -delete
done

"$b/fuzz/gen_corpus" docs/protocol.md "$out"

# ---- legacy: streams saved by a real mig2-vm ----
# Same machine, RAM and --device list as fuzz/fuzzvm.h.
devices=(e1000 "cpu,apic-id=1,xsave=on" "serial,fifo=on"
         "virtio-net,rss=on,mac=52:54:00:12:34:99" "virtio-blk,x-inflight=2"
         "rtc,x-reinject=3")
tmp=$(mktemp -d)
vm_pid=
cleanup() {
    [ -n "$vm_pid" ] && kill "$vm_pid" 2>/dev/null && wait "$vm_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

# save NAME [mig2-vm options...]: start a VM, migrate it to a file, stop it
# (after $settle seconds, so that a workload has written some pages).
settle=0
save() {
    local name=$1 args=() d
    shift
    for d in "${devices[@]}"; do
        args+=(--device "$d")
    done
    ASAN_OPTIONS=detect_leaks=0 "$b/vm/mig2-vm" --qmp "unix:$tmp/vm.qmp" \
        --memory 1M "${args[@]}" "$@" >"$tmp/vm.log" 2>&1 &
    vm_pid=$!
    for _ in $(seq 100); do
        [ -S "$tmp/vm.qmp" ] && break
        sleep 0.05
    done
    sleep "$settle"
    "$b/tools/mig2ctl" "$tmp/vm.qmp" migrate \
        "{\"uri\": \"file:$tmp/$name\"}" >/dev/null
    "$b/tools/mig2ctl" --timeout 30 "$tmp/vm.qmp" migrate-status >/dev/null
    "$b/tools/mig2ctl" "$tmp/vm.qmp" quit >/dev/null || true
    wait "$vm_pid" || true
    vm_pid=
    rm -f "$tmp/vm.qmp"
    cp "$tmp/$name" "$out/legacy/$name"
    printf '%-14s %-28s %6s bytes\n' legacy "$name" "$(stat -c %s "$tmp/$name")"
}
save idle
# A guest that writes: a few non-zero pages, ticked device state, PART
# sections for the dirty rounds.
settle=0.4 save workload --workload dirty-rate=10
save paused -S

# ---- qmp: what clients send (byte 0: 1 = negotiate first) ----
qmp() {
    local name=$1 ctl=$2
    { printf "\\x$ctl"; cat; } >"$out/qmp/$name"
    printf '%-14s %-28s %6s bytes\n' qmp "$name" "$(stat -c %s "$out/qmp/$name")"
}
qmp negotiation 00 <<'EOF'
{"execute": "query-status"}
{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}
{"execute": "qmp_capabilities", "id": 1}
{"execute": "qmp_capabilities"}
{"execute": "query-version", "id": "v"}
EOF
qmp queries 01 <<'EOF'
{"execute": "query-commands"}
{"execute": "query-version", "id": 7}
{"execute": "query-status", "id": {"nested": [1, 2]}}
{"execute": "query-migrate"}
{"execute": "query-migrate-capabilities"}
{"execute": "query-migrate-parameters"}
{"execute": "x-query-handshake"}
{"execute": "x-query-guest-digest"}
EOF
qmp run-state 01 <<'EOF'
{"execute": "stop"}
{"execute": "query-status"}
{"execute": "cont"}
{'execute': 'stop', 'id': 'single-quoted'}
{"execute": "cont", "arguments": {"x": 1}}
{"execute": "quit"}
EOF
qmp migrate 01 <<'EOF'
{"execute": "migrate", "arguments": {"uri": "tcp:127.0.0.1:4444"}}
{"execute": "migrate", "arguments": {"uri": "unix:/tmp/none.sock", "detach": true}}
{"execute": "migrate", "arguments": {"uri": "exec:cat > /dev/null"}}
{"execute": "migrate", "arguments": {"uri": "file:/tmp/none"}}
{"execute": "migrate", "arguments": {"uri": "rdma:1.2.3.4:5"}}
{"execute": "migrate", "arguments": {"resume": true, "uri": "tcp:[::1]:1"}}
{"execute": "migrate", "arguments": {"channels": [{"channel-type": "handshake", "addr": {"transport": "socket", "type": "inet", "host": "127.0.0.1", "port": "4444"}}]}}
{"execute": "migrate", "arguments": {"channels": [{"channel-type": "main", "addr": {"transport": "socket", "type": "unix", "path": "/tmp/x.sock"}}]}}
{"execute": "migrate", "arguments": {"channels": [{"channel-type": "main", "addr": {"transport": "exec", "args": ["cat"]}}]}}
{"execute": "migrate", "arguments": {"channels": [{"channel-type": "main", "addr": {"transport": "file", "filename": "/tmp/f", "offset": 0}}]}}
{"execute": "migrate", "arguments": {"channels": [], "uri": "tcp:1:2"}}
{"execute": "migrate", "arguments": {"channels": [{"channel-type": "postcopy"}]}}
{"execute": "migrate-incoming", "arguments": {"uri": "tcp:0:4444", "exit-on-error": false}}
{"execute": "migrate-incoming", "arguments": {"channels": [{"channel-type": "handshake", "addr": {"transport": "socket", "type": "inet", "host": "0", "port": "0"}}]}}
{"execute": "migrate-cancel"}
{"execute": "migrate", "arguments": {"blk": false, "inc": false}}
EOF
qmp parameters 01 <<'EOF'
{"execute": "migrate-set-capabilities", "arguments": {"capabilities": [{"capability": "multifd", "state": true}, {"capability": "events", "state": false}]}}
{"execute": "migrate-set-capabilities", "arguments": {"capabilities": [{"capability": "no-such", "state": true}]}}
{"execute": "migrate-set-capabilities", "arguments": {"capabilities": {}}}
{"execute": "migrate-set-parameters", "arguments": {"multifd-channels": 4, "max-bandwidth": 0, "downtime-limit": 100}}
{"execute": "migrate-set-parameters", "arguments": {"multifd-channels": 0}}
{"execute": "migrate-set-parameters", "arguments": {"multifd-channels": 256}}
{"execute": "migrate-set-parameters", "arguments": {"max-bandwidth": -1}}
{"execute": "migrate-set-parameters", "arguments": {"multifd-compression": "zstd"}}
{"execute": "migrate-set-parameters", "arguments": {"multifd-compression": 3}}
{"execute": "migrate-set-parameters", "arguments": {"x-stall-timeout": 18446744073709551615}}
{"execute": "query-migrate-parameters"}
EOF
qmp malformed 01 <<'EOF'
{"execute": 1}
{"execute": "query-status", "arguments": []}
{"execute": "query-status", "extra": true}
{"arguments": {}}
[1, 2, 3]
"string"
null
{"execute": "nope"}
{"execute": "query-status"
}
{broken json
{"execute": "query-status"} {"execute": "query-status"}
{"execute": "\u00e9t\u00e9"}
EOF
