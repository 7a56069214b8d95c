#!/usr/bin/env bash
# scripts/demo.sh [BUILD_DIR]
#
# A real v2 migration between two mig2-vm processes on loopback, driven
# through QMP exactly as a management app would: a 256 MiB source (half of
# it random data) with the default devices and a guest workload dirtying
# RAM, a destination started with only an address.  Prints progress, the negotiated summary and both
# digests; exits 0 only when the digests match.
set -euo pipefail

cd "$(dirname "$0")/.."
build=${1:-build}
vm=$build/vm/mig2-vm
ctl=$build/tools/mig2ctl
for b in "$vm" "$ctl"; do
    [ -x "$b" ] || { echo "demo: $b is missing; run make first" >&2; exit 1; }
done

tmp=$(mktemp -d /tmp/mig2-demo.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

wait_socket() {
    for _ in $(seq 100); do
        [ -S "$1" ] && return 0
        sleep 0.05
    done
    echo "demo: $1 did not appear" >&2
    return 1
}

echo "==> starting the destination (it is given nothing but an address)"
"$vm" --name dst --qmp "unix:$tmp/dst.qmp" --memory 256M --mem-prealloc \
    --incoming defer \
    2>"$tmp/dst.log" &
pids+=($!)
# Guest RAM with something in it: 128 MiB of random data, then zeros.
head -c 128M /dev/urandom >"$tmp/ram.img"
truncate -s 256M "$tmp/ram.img"
echo "==> starting the source: 256 MiB (half random), default devices," \
     "workload 5000 pages/s"
"$vm" --name src --qmp "unix:$tmp/src.qmp" --memory 256M \
    --memory-file "$tmp/ram.img" --workload dirty-rate=5000 \
    2>"$tmp/src.log" &
pids+=($!)
wait_socket "$tmp/dst.qmp"
wait_socket "$tmp/src.qmp"

# Port 0: the destination picks a free port and reports it, as QEMU does.
"$ctl" "$tmp/dst.qmp" migrate-incoming '{"channels": [{"channel-type":
    "handshake", "addr": {"transport": "socket", "type": "inet",
    "host": "127.0.0.1", "port": "0"}}]}' >/dev/null
addr=$("$ctl" --compact "$tmp/dst.qmp" query-migrate |
       python3 -c 'import json,sys; print(json.load(sys.stdin)["socket-address"][0])')
port=${addr##*:}
echo "==> destination listening on $addr"

# Only the source is configured; the handshake carries it all across.
"$ctl" "$tmp/src.qmp" migrate-set-parameters \
    '{"max-bandwidth": 268435456, "downtime-limit": 100}' >/dev/null
"$ctl" "$tmp/src.qmp" migrate "{\"channels\": [{\"channel-type\":
    \"handshake\", \"addr\": {\"transport\": \"socket\", \"type\": \"inet\",
    \"host\": \"127.0.0.1\", \"port\": \"$port\"}}]}" >/dev/null

echo "==> migrating"
status=0
"$ctl" --timeout 60 --interval 0.2 "$tmp/src.qmp" migrate-status || status=$?

echo "==> negotiated"
"$ctl" --compact "$tmp/src.qmp" x-query-handshake | python3 -c '
import json, sys
h = json.load(sys.stdin)
print("  revision %s, %s round trip(s) before the first RAM byte"
      % (h.get("revision"), h.get("round-trips")))
print("  destination build: %s" % h.get("peer-build"))
f = h.get("features", {})
print("  features in use: %s" % ", ".join(f.get("common", [])))
if f.get("peer-lacks"):
    print("  destination lacks: %s" % ", ".join(f["peer-lacks"]))
print("  devices: %s" % ", ".join("%s@%s v%s" % (d["id"], d["instance"],
      d["version"]) for d in h.get("device-versions", [])))
changed = [c for c in h.get("configuration", []) if c["status"] != "accepted"]
for c in changed:
    print("  config %s: %s -> %s (%s)" % (c["name"], c["proposed"],
          c["final"], c["status"]))
if h.get("transcript-hash"):
    print("  transcript %s" % h["transcript-hash"])
if h.get("problems"):
    for p in h["problems"]:
        print("  problem %s %s: expected %s, got %s" % (p["kind"], p["path"],
              p["expected"], p["actual"]))
'
"$ctl" --compact "$tmp/src.qmp" query-migrate | python3 -c '
import json, sys
q = json.load(sys.stdin)
r = q.get("ram", {})
print("  total %s ms, setup %s ms, downtime %s ms, %.1f MiB sent, %s dirty rounds"
      % (q.get("total-time"), q.get("setup-time"), q.get("downtime"),
         r.get("transferred", 0) / 1048576.0, r.get("dirty-sync-count")))
if q.get("error-desc"):
    print("  error: " + q["error-desc"])
'

src_digest=$("$ctl" --compact "$tmp/src.qmp" x-query-guest-digest |
             python3 -c 'import json,sys; print(json.load(sys.stdin)["digest"])')
dst_digest=$("$ctl" --compact "$tmp/dst.qmp" x-query-guest-digest |
             python3 -c 'import json,sys; print(json.load(sys.stdin)["digest"])')
src_state=$("$ctl" --compact "$tmp/src.qmp" query-status |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
dst_state=$("$ctl" --compact "$tmp/dst.qmp" query-status |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
echo "==> source      $src_state  digest $src_digest"
echo "==> destination $dst_state  digest $dst_digest"

"$ctl" "$tmp/src.qmp" quit >/dev/null 2>&1 || true
"$ctl" "$tmp/dst.qmp" quit >/dev/null 2>&1 || true

if [ "$status" -eq 0 ] && [ "$src_digest" = "$dst_digest" ]; then
    echo "==> digests match: the guest arrived intact"
    exit 0
fi
echo "==> MISMATCH or failed migration (see above)" >&2
exit 1
