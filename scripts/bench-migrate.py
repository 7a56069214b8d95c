#!/usr/bin/env python3
"""Migration throughput benchmark (issue 4, "Benchmark: make bench").

In one run on this machine, with the same guest RAM (one file of random
data, created once per run and removed at the end) it measures:

  1. the bare limit: bench/rawcopy moving the RAM from a private file
     mapping into fresh THP-advised anonymous memory over 1, 2 and 4
     loopback TCP streams with no protocol, and raw loopback TCP from a hot
     1 MiB buffer for reference;
  2. mig2 v2 migrations between two mig2-vm processes (default device set,
     source RAM from --memory-file, destination --incoming defer, with and
     without --mem-prealloc), max-bandwidth 0, multifd off and on with 1, 2
     and 4 channels (capability and channel count set on the source only):
     total time, throughput, downtime, setup time, round trips to the first
     RAM byte, and the guest digests of both sides (a mismatch fails);
  3. if qemu-system-x86_64 is installed: QEMU 7.2 migrating the same RAM
     (-M pc -S, file-backed pc.ram, max-bandwidth 100 GiB/s), multifd off and
     1, 2, 4 channels (set on both sides before migrate-incoming);
  4. mig2 with --devices more devices (default 10,000) and 16 MiB of RAM:
     setup time (the handshake of two large manifests) and downtime (mostly
     device state), which grow with the device count.

Configurations are interleaved (every configuration once per repetition),
so slow drift of the machine hits all of them alike, and within a
repetition the runs a ratio compares come back to back: the bare copy with
N streams, then mig2 and QEMU with N channels.  Medians (min..max) are
printed with the ratios mig2/bare-limit (same stream count) and mig2/QEMU
(same channel count), each also per repetition, and the issue's targets
marked PASS/FAIL (on the ratio of the medians).
The targets are informational: the exit status is 1 only when a run failed
outright (digest mismatch, crash, timeout, error), 2 on a usage or setup
error.

Noise on a small shared VM is handled, and reported, as follows: before
each run the script waits (up to --quiet-wait s) for the machine to be
idle, reads the RAM file back into the page cache (the host pages out
memory idle for a minute) and touches and frees --pretouch bytes of memory
(the host takes back memory the guest frees; the first touch of such memory
costs ~5-7 us per 4 KiB).  A run during which other processes used more
than 10% of a CPU is repeated (--noisy-retries).

Usage: scripts/bench-migrate.py [--reps N] [--size SIZE] [--quick]
           [--json FILE] [--tree DIR] [--channels 1,2,4]
           [--prealloc off|on|both] [--no-qemu] [--timeout SEC]
           [--pretouch SIZE] [--quiet-wait SEC] [--noisy-retries N]
           [--devices N] [--verbose]

Python 3 standard library only.
"""

import argparse
import json
import mmap
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

GiB = 1 << 30
MiB = 1 << 20
# "Unlimited" for QEMU 7.2 (max-bandwidth 0 also means unlimited there, but
# the reference figures were taken with 100 GiB/s).
QEMU_MAX_BANDWIDTH = 100 * GiB
POLL_S = 0.02

# Guest RAM of the many-devices runs (--devices).
DEVICES_RAM = 16 * MiB

TARGET_QEMU_RATIO = 1.5
TARGET_BARE_RATIO = 0.85
TARGET_DOWNTIME_MS = 50


class BenchError(Exception):
    """A run that failed outright."""


class QmpError(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def parse_size(s):
    s = s.strip()
    mul = 1
    if s[-1:] in "bB" and len(s) > 1 and s[-2:-1].isalpha():
        s = s[:-1]
    suffix = s[-1:].upper()
    if suffix in ("K", "M", "G", "T"):
        mul = 1 << (10 * "KMGT".index(suffix) + 10)
        s = s[:-1]
    v = int(s) * mul
    if v <= 0 or v % (2 * MiB):
        raise argparse.ArgumentTypeError(
            "size must be a positive multiple of 2 MiB")
    return v


def parse_size_or_zero(s):
    return 0 if s.strip() == "0" else parse_size(s)


def parse_channels(s):
    out = [int(x) for x in s.split(",") if x]
    if not out or any(c < 1 or c > 64 for c in out):
        raise argparse.ArgumentTypeError("channel counts are 1..64")
    return out


# --------------------------------------------------------------------------
# Processes and QMP


class Procs:
    """Every process started, so that a finally block can kill and reap
    each one by PID."""

    def __init__(self):
        self.live = []

    def start(self, name, argv, logdir):
        path = os.path.join(logdir, name + ".log")
        with open(path, "wb") as out:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT)
        p.bench_name = name
        p.bench_log = path
        self.live.append(p)
        return p

    def reap(self, p, grace=0.0):
        """Wait up to @grace s for @p to exit, then SIGKILL it by PID;
        always reaps it.  Returns its exit status."""
        deadline = time.monotonic() + grace
        while p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        rc = p.wait()
        if p in self.live:
            self.live.remove(p)
        return rc

    def reap_all(self):
        for p in list(self.live):
            self.reap(p)


def log_tail(p, n=6):
    try:
        with open(p.bench_log, "rb") as f:
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(lines[-n:])


def proc_died(p):
    rc = p.poll()
    if rc is None:
        return None
    what = ("signal %d" % -rc) if rc < 0 else ("exit %d" % rc)
    return "%s died (%s): %s" % (p.bench_name, what, log_tail(p))


class Qmp:
    """A minimal QMP client over a unix socket (works for QEMU and
    mig2-vm)."""

    def __init__(self, path, proc, timeout):
        deadline = time.monotonic() + timeout
        self.proc = proc
        while True:
            err = proc_died(proc)
            if err:
                raise BenchError(err)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                break
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise BenchError("%s: QMP socket %s did not appear in "
                                     "%.0f s" % (proc.bench_name, path,
                                                 timeout))
                time.sleep(0.02)
        self.sock = s
        self.sock.settimeout(timeout)
        self.rfile = s.makefile("rb")
        greeting = self._read()
        if "QMP" not in greeting:
            raise BenchError("%s: not a QMP greeting: %r"
                             % (proc.bench_name, greeting))
        self.cmd("qmp_capabilities")

    def _read(self):
        try:
            line = self.rfile.readline()
        except (socket.timeout, OSError) as e:
            raise BenchError("%s: QMP read failed: %s (%s)"
                             % (self.proc.bench_name, e,
                                proc_died(self.proc) or "process alive"))
        if not line:
            raise BenchError("%s: QMP connection closed (%s)"
                             % (self.proc.bench_name,
                                proc_died(self.proc) or "process alive"))
        return json.loads(line)

    def cmd(self, name, args=None, timeout=None):
        msg = {"execute": name}
        if args is not None:
            msg["arguments"] = args
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            self.sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as e:
            raise BenchError("%s: QMP write failed: %s (%s)"
                             % (self.proc.bench_name, e,
                                proc_died(self.proc) or "process alive"))
        while True:
            r = self._read()
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise QmpError("%s: %s: %s" % (self.proc.bench_name, name,
                                               r["error"].get("desc")))
            # An event: skip it.

    def close(self):
        try:
            self.rfile.close()
            self.sock.close()
        except OSError:
            pass


def proc_cpu(pid):
    """User and system CPU seconds, minor and major faults and, from
    /proc/PID/io, bytes read from storage and read()/write() syscall
    counts of @pid (recvmsg/sendmsg are not counted there), or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    tck = os.sysconf("SC_CLK_TCK")
    # After the ")": state is field 3, minflt 10, utime 14, stime 15.
    r = {"user": int(fields[11]) / tck, "sys": int(fields[12]) / tck,
         "minflt": int(fields[7]), "majflt": int(fields[9])}
    try:
        with open("/proc/%d/io" % pid) as f:
            for line in f:
                k, v = line.split(":")
                if k in ("syscr", "syscw", "read_bytes"):
                    r[k] = int(v)
    except (OSError, ValueError):
        pass
    return r


def machine_busy():
    """CPU seconds all processes used so far (all CPUs: user, nice and
    system; not irq and softirq, where loopback TCP does part of its work
    without charging it to a task) and the machine's total CPU seconds."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    tck = os.sysconf("SC_CLK_TCK")
    return (v[0] + v[1] + v[2]) / tck, sum(v) / tck


def self_cpu():
    t = os.times()
    return t.user + t.system


def wait_quiet(max_wait, threshold=0.10, sample=0.3):
    """Wait (up to @max_wait s) until the machine is nearly idle: less than
    @threshold of its CPU time busy over @sample s.  Another build or test
    run on a 2-core machine would otherwise decide the result.  Returns
    (seconds waited, busy fraction of the last sample)."""
    t0 = time.monotonic()
    while True:
        b0, a0 = machine_busy()
        time.sleep(sample)
        b1, a1 = machine_busy()
        frac = (b1 - b0) / (a1 - a0) if a1 > a0 else 0.0
        waited = time.monotonic() - t0
        if frac < threshold or waited >= max_wait:
            return waited, frac


def other_cpu(busy0, self0, cpu0, cpu1):
    """CPU seconds the rest of the machine used between the snapshots:
    machine busy time minus the two VM processes and this script."""
    busy = machine_busy()[0] - busy0 - (self_cpu() - self0)
    for a, b in zip(cpu0, cpu1):
        if a and b:
            busy -= (b["user"] + b["sys"]) - (a["user"] + a["sys"])
    return round(max(busy, 0.0), 3)


def is_noisy(r):
    """Did other processes use more than 10% of one CPU during the measured
    window (and more than /proc/stat's 10 ms resolution)?"""
    other = r.get("other_cpu_s")
    if other is None or other < 0.03:
        return False
    window = r.get("seconds") or (r.get("total_ms") or 0) / 1000.0
    return other > 0.1 * window


def cpu_delta(a, b):
    if not a or not b:
        return None
    d = {k: round(b[k] - a[k], 3) for k in a if k in b}
    d["cpu"] = round(d["user"] + d["sys"], 3)
    return d


def sockets_of(pid):
    """How many sockets process @pid holds, from its /proc/PID/fd links.

    This is how the bench sees the destination's migration connections:
    the count during the migration less the count before it (QMP and
    listening sockets).  Reading /proc/net/tcp instead walks the whole
    established-hash table on every read (262,144 buckets here: ~9 ms of
    CPU a call), which at one call per poll took ~15% of the machine
    away from the migration being measured, and none from the bare copy.
    """
    n = 0
    d = "/proc/%d/fd" % pid
    try:
        fds = os.listdir(d)
    except OSError:
        return 0
    for fd in fds:
        try:
            if os.readlink(os.path.join(d, fd)).startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_migration(qmp, proc_src, proc_dst, dst_qmp, base, timeout,
                   t_migrate):
    """Poll the source's query-migrate until it ends; then the
    destination's.  Returns (source info, dst done seconds after migrate,
    max connections seen)."""
    deadline = t_migrate + timeout
    max_conns = 0
    info = {}
    while True:
        for p in (proc_src, proc_dst):
            err = proc_died(p)
            if err:
                raise BenchError(err)
        info = qmp.cmd("query-migrate")
        max_conns = max(max_conns, sockets_of(proc_dst.pid) - base)
        st = info.get("status")
        if st in ("completed", "failed", "cancelled"):
            break
        if time.monotonic() > deadline:
            raise BenchError("timeout after %g s (status %s)" % (timeout,
                                                                    st))
        time.sleep(POLL_S)
    if info.get("status") != "completed":
        raise BenchError("source: migration %s: %s" % (
            info.get("status"), info.get("error-desc", "no error-desc")))
    src_done = time.monotonic() - t_migrate
    while True:
        err = proc_died(proc_dst)
        if err:
            raise BenchError(err)
        d = dst_qmp.cmd("query-migrate")
        if d.get("status") == "completed":
            break
        if d.get("status") in ("failed", "cancelled"):
            raise BenchError("destination: migration %s: %s" % (
                d.get("status"), d.get("error-desc", "no error-desc")))
        if time.monotonic() > deadline:
            raise BenchError("destination not completed after %.0f s "
                             "(status %s)" % (timeout, d.get("status")))
        time.sleep(0.01)
    dst_done = time.monotonic() - t_migrate
    return info, src_done, dst_done, max_conns


def run_record(size, info, total, conns, src_done, dst_done, cpu0, cpu1,
               pt, other, quiet):
    """What a mig2 or QEMU run reports alike: @info is the source's final
    query-migrate, @total its total time in ms (0: unknown)."""
    ram = info.get("ram", {})
    return {
        "total_ms": total,
        "setup_ms": info.get("setup-time"),
        "downtime_ms": info.get("downtime"),
        "gib_s": (size / GiB) / (total / 1000.0) if total else None,
        "mbps": ram.get("mbps"),
        "transferred": ram.get("transferred"),
        "normal": ram.get("normal"),
        "duplicate": ram.get("duplicate"),
        "dirty_sync_count": ram.get("dirty-sync-count"),
        "multifd_bytes": ram.get("multifd-bytes", info.get("multifd-bytes")),
        "connections": conns,
        "src_done_s": round(src_done, 4),
        "dst_done_s": round(dst_done, 4),
        "cpu_src": cpu_delta(cpu0[0], cpu1[0]),
        "cpu_dst": cpu_delta(cpu0[1], cpu1[1]),
        "pretouch_s": round(pt, 3),
        "other_cpu_s": other,
        "quiet_wait_s": round(quiet[0], 2),
        "busy_before": round(quiet[1], 3),
    }


# --------------------------------------------------------------------------
# The three kinds of run


class Bench:
    def __init__(self, opts, procs):
        self.o = opts
        self.procs = procs
        self.tmp = tempfile.mkdtemp(prefix="mig2-bench.")
        self.ram = os.path.join(self.tmp, "ram.img")
        self.seq = 0

    def rundir(self, tag):
        self.seq += 1
        d = os.path.join(self.tmp, "%03d-%s" % (self.seq, tag))
        os.mkdir(d)
        return d

    def cleanup(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def make_ram(self):
        t = time.monotonic()
        chunk = 64 * MiB
        with open(self.ram, "wb") as f:
            left = self.o.size
            while left:
                n = min(chunk, left)
                f.write(os.urandom(n))
                left -= n
            # Written back now, not in the middle of a measurement.
            f.flush()
            os.fsync(f.fileno())
        return time.monotonic() - t

    def warm_up(self, size):
        """Touch @size bytes of THP-advised anonymous memory and free it;
        returns the seconds the touch took.

        This machine is a VM whose host backs guest memory lazily and takes
        back what the guest frees (virtio-balloon free page reporting, ~2 s
        after the memory is freed): the first touch of such memory costs
        ~5-7 us per 4 KiB instead of ~0.2 us (1 GiB: ~1.5-2 s).  Which run
        gets such memory is luck, and it would decide the result.  Memory
        touched and freed right before a run is what the kernel is most
        likely to hand out next, within the ~2 s before it is reported.

        The RAM file is read back first: the host also pages out memory
        (page cache included) that was idle for a minute."""
        t = time.monotonic()
        buf = bytearray(4 * MiB)
        with open(self.ram, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass
        if size <= 0:
            return time.monotonic() - t
        m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        try:
            if hasattr(m, "madvise") and hasattr(mmap, "MADV_HUGEPAGE"):
                m.madvise(mmap.MADV_HUGEPAGE)
            for off in range(0, size, 4096):
                m[off] = 1
        finally:
            m.close()
        return time.monotonic() - t

    # -- 1. the bare limit ---------------------------------------------------

    def rawcopy(self, mode, streams):
        argv = [self.o.rawcopy, "--size", str(self.o.size), "--streams",
                str(streams), "--json"]
        if mode == "hot":
            argv.append("--hot")
        else:
            argv += ["--file", self.ram]
            if mode == "memcpy":
                argv.append("--memcpy")
        d = self.rundir("rawcopy-%s-%d" % (mode, streams))
        quiet = wait_quiet(self.o.quiet_wait)
        pt = self.warm_up(self.o.pretouch if mode != "hot" else 0)
        p = self.procs.start("rawcopy", argv, d)
        try:
            deadline = time.monotonic() + self.o.timeout
            while p.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            if p.poll() is None:
                raise BenchError("rawcopy: timeout after %.0f s"
                                 % self.o.timeout)
            if p.returncode != 0:
                raise BenchError("rawcopy failed (exit %d): %s"
                                 % (p.returncode, log_tail(p)))
            with open(p.bench_log) as f:
                line = [ln for ln in f if ln.startswith("{")][-1]
            r = json.loads(line)
        finally:
            self.procs.reap(p)
        if not r.get("ok") or (mode != "hot" and not r.get("verified")):
            raise BenchError("rawcopy: run not verified: %s" % line.strip())
        out = {"seconds": r["seconds"], "gib_s": r["gib_per_s"],
               "cpu_s": r.get("cpu_s"), "other_cpu_s": r.get("other_cpu_s"),
               "quiet_wait_s": round(quiet[0], 2),
               "busy_before": round(quiet[1], 3)}
        if mode != "hot":
            out["pretouch_s"] = round(pt, 3)
        return out

    # -- 2. mig2 -------------------------------------------------------------

    def mig2(self, channels, prealloc, devices=0):
        """@channels None: multifd off.  @devices: that many more devices
        on both sides (serial and rtc, each with state of its own) and
        DEVICES_RAM of guest RAM instead of the RAM file, for what the
        device count costs: setup (handshake) and downtime (state)."""
        o = self.o
        d = self.rundir("mig2")
        size = DEVICES_RAM if devices else o.size
        size_arg = "%dM" % (size // MiB)
        src_sock = os.path.join(d, "src.qmp")
        dst_sock = os.path.join(d, "dst.qmp")
        extra = []
        for i in range(devices):
            extra += ["--device", "serial,baud=%d" % (50 + i)
                      if i % 2 else "rtc,base=%d" % (1700000000 + i)]
        dst_argv = [o.vm, "--name", "dst", "--qmp", "unix:" + dst_sock,
                    "--memory", size_arg, "--incoming", "defer"] + extra
        if prealloc:
            dst_argv.append("--mem-prealloc")
        src_argv = [o.vm, "--name", "src", "--qmp", "unix:" + src_sock,
                    "--memory", size_arg] + extra
        if not devices:
            src_argv += ["--memory-file", self.ram]
        started = []
        qmps = []
        grace = 0.0
        # Idle machine first; the pre-touch comes right before 'migrate',
        # after both processes are up, so that no start-up time passes
        # between it and the transfer (see warm_up).
        quiet = wait_quiet(o.quiet_wait)
        try:
            dst = self.procs.start("mig2-dst", dst_argv, d)
            started.append(dst)
            src = self.procs.start("mig2-src", src_argv, d)
            started.append(src)
            dq = Qmp(dst_sock, dst, 60)
            qmps.append(dq)
            sq = Qmp(src_sock, src, 60)
            qmps.append(sq)

            dq.cmd("migrate-incoming", {"channels": [{
                "channel-type": "handshake",
                "addr": {"transport": "socket", "type": "inet",
                         "host": "127.0.0.1", "port": "0"}}]})
            addr = None
            for _ in range(200):
                q = dq.cmd("query-migrate")
                if q.get("socket-address"):
                    addr = q["socket-address"][0]
                    break
                time.sleep(0.01)
            if not addr:
                raise BenchError("destination reported no socket-address")
            port = int(str(addr).rsplit(":", 1)[1])

            # Only the source is configured; the handshake carries it.
            note = []
            try:
                sq.cmd("migrate-set-capabilities", {"capabilities": [
                    {"capability": "multifd",
                     "state": channels is not None}]})
            except QmpError as e:
                if channels is not None:
                    raise BenchError("multifd capability refused: %s" % e)
            params = {"max-bandwidth": 0}
            if channels is not None:
                params["multifd-channels"] = channels
            sq.cmd("migrate-set-parameters", params)

            pt = self.warm_up(0 if devices else o.pretouch)
            cpu0 = (proc_cpu(src.pid), proc_cpu(dst.pid))
            busy0, self0 = machine_busy()[0], self_cpu()
            socks = sockets_of(dst.pid)
            t0 = time.monotonic()
            sq.cmd("migrate", {"channels": [{
                "channel-type": "handshake",
                "addr": {"transport": "socket", "type": "inet",
                         "host": "127.0.0.1", "port": str(port)}}]})
            info, src_done, dst_done, conns = wait_migration(
                sq, src, dst, dq, socks, o.timeout, t0)
            cpu1 = (proc_cpu(src.pid), proc_cpu(dst.pid))
            other = other_cpu(busy0, self0, cpu0, cpu1)

            hs = sq.cmd("x-query-handshake")
            neg = {c.get("name"): c.get("final")
                   for c in hs.get("configuration", [])
                   if c.get("name") in ("multifd", "multifd-channels")}
            sd = sq.cmd("x-query-guest-digest", timeout=120)
            dd = dq.cmd("x-query-guest-digest", timeout=120)
            if sd.get("digest") != dd.get("digest"):
                raise BenchError("digest mismatch: source %s (ram %s) vs "
                                 "destination %s (ram %s)"
                                 % (sd.get("digest"), sd.get("ram"),
                                    dd.get("digest"), dd.get("ram")))
            for q in (sq, dq):
                try:
                    q.cmd("quit", timeout=5)
                except (QmpError, BenchError):
                    pass
            grace = 3.0         # let them exit on their own
            total = info.get("total-time") or 0
            if channels is not None and neg.get("multifd") is False:
                note.append("multifd not negotiated")
            r = run_record(size, info, total, conns, src_done, dst_done,
                           cpu0, cpu1, pt, other, quiet)
            r.update({
                "devices": len(hs.get("device-versions", [])),
                "round_trips": hs.get("round-trips"),
                "negotiated": neg,
                "digest": sd.get("digest"),
                "note": "; ".join(note),
            })
            return r
        finally:
            for q in qmps:
                q.close()
            for p in started:
                self.procs.reap(p, grace=grace)

    # -- 3. QEMU 7.2 ---------------------------------------------------------

    def qemu(self, channels):
        o = self.o
        d = self.rundir("qemu")
        mb = o.size // MiB
        src_sock = os.path.join(d, "src.qmp")
        dst_sock = os.path.join(d, "dst.qmp")
        common = [o.qemu, "-accel", "tcg", "-display", "none", "-nodefaults"]
        src_argv = common + [
            "-M", "pc,memory-backend=pc.ram", "-m", str(mb), "-S",
            "-object", "memory-backend-file,id=pc.ram,size=%dM,mem-path=%s,"
                       "share=off" % (mb, self.ram),
            "-qmp", "unix:%s,server=on,wait=off" % src_sock]
        dst_argv = common + [
            "-M", "pc", "-m", str(mb), "-incoming", "defer",
            "-qmp", "unix:%s,server=on,wait=off" % dst_sock]
        started = []
        qmps = []
        grace = 0.0
        # Idle machine first, then the pre-touch right before the start.
        quiet = wait_quiet(o.quiet_wait)
        pt = self.warm_up(o.pretouch)
        try:
            dst = self.procs.start("qemu-dst", dst_argv, d)
            started.append(dst)
            src = self.procs.start("qemu-src", src_argv, d)
            started.append(src)
            dq = Qmp(dst_sock, dst, 60)
            qmps.append(dq)
            sq = Qmp(src_sock, src, 60)
            qmps.append(sq)
            # QEMU needs multifd on both sides, before migrate-incoming.
            for q in (sq, dq):
                q.cmd("migrate-set-capabilities", {"capabilities": [
                    {"capability": "multifd",
                     "state": channels is not None}]})
                params = {"max-bandwidth": QEMU_MAX_BANDWIDTH}
                if channels is not None:
                    params["multifd-channels"] = channels
                q.cmd("migrate-set-parameters", params)
            port = free_port()
            uri = "tcp:127.0.0.1:%d" % port
            dq.cmd("migrate-incoming", {"uri": uri})
            cpu0 = (proc_cpu(src.pid), proc_cpu(dst.pid))
            busy0, self0 = machine_busy()[0], self_cpu()
            socks = sockets_of(dst.pid)
            t0 = time.monotonic()
            sq.cmd("migrate", {"uri": uri})
            info, src_done, dst_done, conns = wait_migration(
                sq, src, dst, dq, socks, o.timeout, t0)
            cpu1 = (proc_cpu(src.pid), proc_cpu(dst.pid))
            other = other_cpu(busy0, self0, cpu0, cpu1)
            for q in (sq, dq):
                try:
                    q.cmd("quit", timeout=5)
                except (QmpError, BenchError):
                    pass
            grace = 3.0         # let them exit on their own
            total = info.get("total-time") or 0
            note = None
            if not total:
                # Seen once: a completed QEMU 7.2 reported no total-time.
                # The polled wall time (20 ms steps) stands in for it.
                total = int(round(src_done * 1000))
                note = "no total-time from QEMU; polled wall time used"
            r = run_record(o.size, info, total, conns, src_done, dst_done,
                           cpu0, cpu1, pt, other, quiet)
            r["note"] = note
            return r
        finally:
            for q in qmps:
                q.close()
            for p in started:
                self.procs.reap(p, grace=grace)


# --------------------------------------------------------------------------
# Statistics and the table


def stat(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals),
            "max": max(vals), "n": len(vals)}


def fmt(s, spec="%.2f", width=0):
    if s is None:
        text = "-"
    else:
        text = "%s (%s..%s)" % (spec % s["median"], spec % s["min"],
                                spec % s["max"])
    return text.ljust(width) if width else text


def fmt1(s, spec="%.2f"):
    return "-" if s is None else spec % s["median"]


def ratio(a, b):
    if a is None or b is None or not b["median"]:
        return None
    return a["median"] / b["median"]


def paired(a_runs, b_runs, key="gib_s"):
    """Per-repetition ratios a/b of runs from the same repetition (run
    back to back): their median, min and max, or None."""
    b_by_rep = {r["rep"]: r[key] for r in b_runs
                if r.get(key) and "rep" in r}
    vals = [r[key] / b_by_rep[r["rep"]] for r in a_runs
            if r.get(key) and r.get("rep") in b_by_rep]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals),
            "max": max(vals), "n": len(vals)}


def fmt_ratio(r):
    return "-" if r is None else "%.2fx" % r


def distinct(runs, key):
    vals = sorted({str(r.get(key)) for r in runs if r.get(key) is not None})
    return ",".join(vals) if vals else "-"


def config_name(kind, channels, prealloc=None):
    if kind == "devices":
        return "%d more devices" % channels
    if kind == "mig2":
        base = "multifd off" if channels is None else "multifd %d" % channels
        return "%s%s" % (base, ", dst prealloc" if prealloc else "")
    if kind == "qemu":
        return "multifd off" if channels is None else "multifd %d" % channels
    return "%d stream%s" % (channels, "" if channels == 1 else "s")


def print_table(res, opts):
    size_gib = opts.size / GiB
    out = []
    w = out.append
    w("")
    w("== Migration throughput: %.2f GiB of random guest RAM, %d rep(s), "
      "median (min..max) ==" % (size_gib, opts.reps))
    w("")
    w("1. Bare limit (bench/rawcopy): file mapping -> fresh THP-advised "
      "memory over loopback TCP, no protocol")
    w("   %-26s %-26s %s" % ("", "GiB/s", "seconds"))
    for n in opts.channels:
        rs = res["rawcopy"].get(("file", n), [])
        w("   %-26s %-26s %s" % ("file, " + config_name("raw", n),
                                 fmt(stat(rs, "gib_s"), "%.2f"),
                                 fmt(stat(rs, "seconds"), "%.3f")))
    for n in opts.channels:
        rs = res["rawcopy"].get(("hot", n), [])
        w("   %-26s %-26s %s" % ("hot 1 MiB buffer, %d" % n,
                                 fmt(stat(rs, "gib_s"), "%.2f"),
                                 fmt(stat(rs, "seconds"), "%.3f")))
    for n in opts.channels:
        rs = res["rawcopy"].get(("memcpy", n), [])
        if rs:
            w("   %-26s %-26s %s" % ("memcpy, no TCP, %d thr" % n,
                                     fmt(stat(rs, "gib_s"), "%.2f"),
                                     fmt(stat(rs, "seconds"), "%.3f")))
    w("")
    if opts.pretouch:
        pt = [{"s": r["pretouch_s"]} for k in ("rawcopy", "mig2", "qemu")
              for rs in res[k].values() for r in rs if "pretouch_s" in r]
        c = res.get("cold")
        w("   Pre-touch: right before each run (and once at the start) the "
          "RAM file was read back into the page cache and")
        w("   %.1f GiB of THP-advised memory touched and freed, so that the "
          "run's fresh memory is backed by the host (this VM"
          % (opts.pretouch / GiB))
        w("   returns freed memory to its host after ~2 s; a first touch then "
          "costs ~5-7 us per 4 KiB).  First pre-touch: %s;"
          % ("%.2f s" % c["seconds"] if c else "-"))
        w("   per run: median %s s (slow = the memory was cold).  "
          "--pretouch 0 measures without." % fmt(stat(pt, "s"), "%.2f"))
    else:
        w("   No pre-touch (--pretouch 0): each run's fresh memory may or "
          "may not be backed by the host yet (~5-7 us per 4 KiB when not).")
    allruns = [r for k in ("rawcopy", "mig2", "qemu")
               for rs in res[k].values() for r in rs]
    oth = [r for r in allruns if r.get("other_cpu_s") is not None and
           r["other_cpu_s"] >= 0]
    noisy = [r for r in allruns if r.get("noisy")]
    busy = [r for r in allruns if (r.get("busy_before") or 0) >= 0.10]
    w("   Machine load: %d run(s) repeated because other processes used more "
      "than 10%% of a CPU during the measured window;"
      % len(res["discarded"]))
    w("   %d kept although still noisy after %d retries, %d started on a "
      "machine still busy after %.0f s of waiting for idle."
      % (len(noisy), opts.noisy_retries, len(busy), opts.quiet_wait))
    w("   Other processes' CPU-s per kept run: %s."
      % fmt(stat(oth, "other_cpu_s"), "%.2f"))

    def vm_rows(title, kind, keys):
        w("")
        w(title)
        w("   %-26s %-18s %-18s %-6s %-14s %-5s %-3s %-5s %-6s %s"
          % ("", "total ms", "GiB/s", "mbps", "downtime ms", "setup",
             "RT", "conns", "dstlag", "CPU s src/dst"))
        for key in keys:
            rs = res[kind].get(key, [])
            name = config_name(kind, *key)
            if not rs:
                failed = res["failed"].get("%s %s" % (kind, name), 0)
                w("   %-26s %s" % (name, "no successful run (%d failed)"
                                   % failed if failed else "not run"))
                continue
            lag = [{"lag": (r["dst_done_s"] - r["src_done_s"]) * 1000}
                   for r in rs]
            cpu_s = [{"c": r["cpu_src"]["cpu"]} for r in rs
                     if r.get("cpu_src")]
            cpu_d = [{"c": r["cpu_dst"]["cpu"]} for r in rs
                     if r.get("cpu_dst")]
            w("   %-26s %-18s %-18s %-6s %-14s %-5s %-3s %-5s %-6s %s/%s" % (
                name, fmt(stat(rs, "total_ms"), "%.0f"),
                fmt(stat(rs, "gib_s"), "%.2f"),
                fmt1(stat(rs, "mbps"), "%.0f"),
                fmt(stat(rs, "downtime_ms"), "%.0f"),
                fmt1(stat(rs, "setup_ms"), "%.0f"),
                distinct(rs, "round_trips") if kind == "mig2" else "-",
                distinct(rs, "connections"),
                fmt1(stat(lag, "lag"), "%.0f"),
                fmt1(stat(cpu_s, "c"), "%.2f"),
                fmt1(stat(cpu_d, "c"), "%.2f")))
            notes = {r.get("note") for r in rs if r.get("note")}
            if kind == "mig2" and key[0] and \
                    max(r.get("connections") or 0 for r in rs) <= 1:
                notes.add("never more than 1 connection seen: the RAM "
                          "went over the main channel only")
            for n in sorted(notes):
                w("   %-26s note: %s" % ("", n))

    mig2_keys = [(c, p) for p in opts.prealloc_list
                 for c in [None] + opts.channels]
    vm_rows("2. mig2 v2 (mig2-vm, default devices, max-bandwidth 0, "
            "dst --incoming defer)", "mig2", mig2_keys)
    if res.get("qemu_skipped"):
        w("")
        w("3. QEMU 7.2: skipped (%s)" % res["qemu_skipped"])
    else:
        vm_rows("3. QEMU 7.2 (-M pc -S -nodefaults, file-backed pc.ram, "
                "max-bandwidth 100 GiB/s, TCG)", "qemu",
                [(c,) for c in [None] + opts.channels])
    w("   total/downtime/setup ms and mbps: the source's query-migrate; GiB/s:"
      " guest RAM size / total-time; RT: round trips")
    w("   from connect to the first RAM byte (x-query-handshake); conns: most"
      " sockets the destination held beyond its idle ones")
    w("   (its migration connections) seen while polling every %d ms; "
      "dstlag: ms from the source's 'completed' to"
      % int(POLL_S * 1000))
    w("   the destination's; CPU s: user+sys of each process between "
      "'migrate' and completion (medians).")

    # Ratios.
    w("")
    w("4. Ratios of median throughput (GiB/s); in brackets the median "
      "(min..max) of the same ratio per repetition,")
    w("   between runs made back to back")
    w("   %-26s %-26s %-26s %s" % ("mig2 config", "mig2/bare limit",
                                   "mig2/QEMU", "(bare limit, QEMU GiB/s)"))
    ratios = {}
    for p in opts.prealloc_list:
        for c in [None] + opts.channels:
            mr = res["mig2"].get((c, p), [])
            br = res["rawcopy"].get(("file", c or 1), [])
            qr = res["qemu"].get((c,), [])
            m, bare, q = stat(mr, "gib_s"), stat(br, "gib_s"), stat(qr, "gib_s")
            rb, rq = ratio(m, bare), ratio(m, q)
            pb, pq = paired(mr, br), paired(mr, qr)
            ratios[(c, p)] = (rb, rq, pb, pq)

            def cell(r, pr):
                if r is None:
                    return "-"
                return "%s [%s]" % (fmt_ratio(r), fmt(pr, "%.2f")
                                    if pr else "-")
            w("   %-26s %-26s %-26s (%s vs %s, %s)" % (
                config_name("mig2", c, p), cell(rb, pb), cell(rq, pq),
                fmt1(m), fmt1(bare), fmt1(q)))

    # Targets (informational).
    w("")
    w("5. Targets (issue 4, 2 cores; informational, evaluated on the "
      "destination without --mem-prealloc, as QEMU's)")
    targets = []
    rb, rq, pb, pq = ratios.get((2, False), (None, None, None, None))
    if 2 not in opts.channels or False not in opts.prealloc_list:
        rb = rq = pb = pq = None

    def per_rep(pr):
        return "" if pr is None else \
            " (per repetition: %s)" % fmt(pr, "%.2f")

    def verdict(ok):
        return "n/a " if ok is None else ("PASS" if ok else "FAIL")

    ok = None if rq is None else rq >= TARGET_QEMU_RATIO
    targets.append({"name": "mig2 2 channels >= 1.5x QEMU 7.2 throughput",
                    "value": rq, "pass": ok, "per_rep": pq})
    w("   %s  mig2 2 channels >= %.2fx QEMU 7.2 (multifd 2):  %s%s"
      % (verdict(ok), TARGET_QEMU_RATIO, fmt_ratio(rq), per_rep(pq)))
    ok = None if rb is None else rb >= TARGET_BARE_RATIO
    targets.append({"name": "mig2 2 channels >= 0.85x bare limit 2 streams",
                    "value": rb, "pass": ok, "per_rep": pb})
    w("   %s  mig2 2 channels >= %.2fx bare limit (2 streams): %s%s"
      % (verdict(ok), TARGET_BARE_RATIO, fmt_ratio(rb), per_rep(pb)))
    dts = [(config_name("mig2", c, False),
            stat(res["mig2"].get((c, False), []), "downtime_ms"))
           for c in [None] + opts.channels]
    dts = [(n, s) for n, s in dts if s is not None]
    worst = max(dts, key=lambda x: x[1]["median"]) if dts else None
    ok = None if worst is None else worst[1]["median"] < TARGET_DOWNTIME_MS
    targets.append({"name": "downtime < 50 ms (idle, default devices)",
                    "value": worst[1]["median"] if worst else None,
                    "pass": ok})
    w("   %s  downtime < %d ms, idle %.2f GiB guest, default devices "
      "(worst median over the configs): %s"
      % (verdict(ok), TARGET_DOWNTIME_MS, size_gib,
         "-" if worst is None else "%.0f ms (%s)" % (worst[1]["median"],
                                                     worst[0])))
    if opts.size != GiB:
        w("   (the targets are defined for 1 GiB; this run used %.2f GiB)"
          % size_gib)
    if opts.devices:
        w("")
        w("6. Many devices: mig2 with %d more devices (serial and rtc) on "
          "both sides, %d MiB of RAM, multifd off" % (opts.devices,
                                                      DEVICES_RAM // MiB))
        w("   %-26s %-18s %-18s %-18s %s" % ("", "setup ms", "downtime ms",
                                            "total ms", "devices"))
        rs = res["devices"].get((opts.devices,), [])
        if rs:
            w("   %-26s %-18s %-18s %-18s %s" % (
                config_name("devices", opts.devices),
                fmt(stat(rs, "setup_ms"), "%.0f"),
                fmt(stat(rs, "downtime_ms"), "%.0f"),
                fmt(stat(rs, "total_ms"), "%.0f"), distinct(rs, "devices")))
        else:
            w("   %-26s no successful run" % config_name("devices",
                                                      opts.devices))
        w("   setup: the handshake (both manifests); downtime: mostly "
          "device state.")

    if res["failures"]:
        w("")
        w("FAILED RUNS (%d):" % len(res["failures"]))
        for f in res["failures"]:
            w("   %s rep %d: %s" % (f["config"], f["rep"], f["error"]))
    print("\n".join(out), flush=True)
    return targets


def jsonable(res, opts, targets):
    def runs(d, fmt_key):
        return [{"config": fmt_key(k), "runs": v,
                 "summary": {m: stat(v, m) for m in
                             ("gib_s", "seconds", "total_ms", "downtime_ms",
                              "setup_ms", "mbps") if stat(v, m)}}
                for k, v in d.items()]
    return {
        "size": opts.size,
        "reps": opts.reps,
        "channels": opts.channels,
        "host": {"cpus": os.cpu_count(), "kernel": os.uname().release},
        "ram_file_seconds": res.get("ram_file_seconds"),
        "pretouch": opts.pretouch,
        "first_pretouch": res.get("cold"),
        "rawcopy": runs(res["rawcopy"],
                        lambda k: {"mode": k[0], "streams": k[1]}),
        "mig2": runs(res["mig2"],
                     lambda k: {"multifd-channels": k[0],
                                "dst-prealloc": k[1]}),
        "qemu": runs(res["qemu"], lambda k: {"multifd-channels": k[0]}),
        "devices": runs(res["devices"], lambda k: {"more-devices": k[0]}),
        "qemu_skipped": res.get("qemu_skipped"),
        "targets": targets,
        "failures": res["failures"],
        "discarded_noisy_runs": res["discarded"],
    }


# --------------------------------------------------------------------------


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    ap = argparse.ArgumentParser(
        description="mig2 migration throughput benchmark: bare limit, "
                    "mig2 v2 and QEMU 7.2 on this machine")
    ap.add_argument("--reps", type=int, default=None,
                    help="repetitions per configuration (default 3; "
                         "--quick: 1)")
    ap.add_argument("--size", type=parse_size, default=None,
                    help="guest RAM size (default 1G; --quick: 128M)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 128 MiB, 1 rep, no prealloc variant, "
                         "1 and 2 channels")
    ap.add_argument("--json", metavar="FILE",
                    help="write machine-readable results to FILE")
    ap.add_argument("--tree", default=os.environ.get("MIG2_BENCH_TREE",
                                                     "build-release"),
                    help="build tree with vm/mig2-vm and bench/rawcopy "
                         "(default build-release)")
    ap.add_argument("--channels", type=parse_channels, default=None,
                    help="stream/channel counts (default 1,2,4)")
    ap.add_argument("--prealloc", choices=("off", "on", "both"),
                    default=None,
                    help="mig2 destination --mem-prealloc (default both; "
                         "--quick: off)")
    ap.add_argument("--no-qemu", action="store_true",
                    help="skip QEMU 7.2 even if installed")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per run before it counts as failed "
                         "(default 120)")
    ap.add_argument("--pretouch", type=parse_size_or_zero, default=None,
                    help="memory to touch and free right before each run "
                         "(default 2x --size, at most half the available "
                         "memory; 0 disables)")
    ap.add_argument("--quiet-wait", type=float, default=20.0,
                    help="before each run, wait up to this many seconds "
                         "for the machine to be idle (default 20)")
    ap.add_argument("--noisy-retries", type=int, default=2,
                    help="repeat a run up to this many times when other "
                         "processes used more than 10%% of a CPU during "
                         "it (default 2)")
    ap.add_argument("--devices", type=int, default=None,
                    help="also migrate a VM with this many more devices "
                         "(default 10000, --quick: 1000; 0 skips it)")
    ap.add_argument("--verbose", action="store_true",
                    help="print every run's result as it finishes")
    opts = ap.parse_args()

    if opts.quick:
        opts.size = opts.size or 128 * MiB
        opts.reps = opts.reps or 1
        opts.channels = opts.channels or [1, 2]
        opts.prealloc = opts.prealloc or "off"
        opts.timeout = opts.timeout or 60
        opts.devices = 1000 if opts.devices is None else opts.devices
    opts.devices = 10000 if opts.devices is None else opts.devices
    opts.size = opts.size or GiB
    opts.reps = 3 if opts.reps is None else opts.reps
    opts.channels = opts.channels or [1, 2, 4]
    opts.prealloc = opts.prealloc or "both"
    opts.timeout = opts.timeout or 120
    if opts.pretouch is None:
        opts.pretouch = 2 * opts.size
        try:
            with open("/proc/meminfo") as f:
                avail = [int(ln.split()[1]) * 1024 for ln in f
                         if ln.startswith("MemAvailable:")][0]
            opts.pretouch = min(opts.pretouch,
                                avail // 2 // (2 * MiB) * (2 * MiB))
        except (OSError, IndexError, ValueError):
            pass
    opts.prealloc_list = {"off": [False], "on": [True],
                          "both": [False, True]}[opts.prealloc]
    if opts.reps < 1:
        ap.error("--reps must be at least 1")

    tree = opts.tree if os.path.isabs(opts.tree) else os.path.join(root,
                                                                   opts.tree)
    opts.vm = os.path.join(tree, "vm", "mig2-vm")
    opts.rawcopy = os.path.join(tree, "bench", "rawcopy")
    for b in (opts.vm, opts.rawcopy):
        if not os.access(b, os.X_OK):
            log("bench-migrate: %s is missing; build it with 'make bench' "
                "(or scripts/build.sh %s -Dbuildtype=release)" % (b, tree))
            return 2
    opts.qemu = None if opts.no_qemu else shutil.which("qemu-system-x86_64")

    def on_signal(sig, frame):
        # Unwind through the finally blocks: kill, reap, remove temp files.
        raise SystemExit(128 + sig)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    procs = Procs()
    bench = Bench(opts, procs)
    res = {"rawcopy": {}, "mig2": {}, "qemu": {}, "devices": {},
           "failures": [], "failed": {}, "discarded": []}
    if not opts.qemu:
        res["qemu_skipped"] = ("--no-qemu" if opts.no_qemu else
                               "qemu-system-x86_64 is not installed")
        log("bench-migrate: QEMU 7.2 part skipped: %s" % res["qemu_skipped"])

    def record(kind, key, rep, fn, *args):
        name = "%s %s" % (kind, config_name(kind, *key)
                          if kind != "rawcopy" else "%s %d" % key)
        for attempt in range(1 + opts.noisy_retries):
            t = time.monotonic()
            try:
                r = fn(*args)
            except (BenchError, QmpError, OSError, ValueError) as e:
                res["failures"].append({"config": name, "rep": rep + 1,
                                        "error": str(e)})
                res["failed"][name] = res["failed"].get(name, 0) + 1
                log("  FAILED %s (rep %d): %s" % (name, rep + 1, e))
                return
            if opts.verbose:
                log("  %s rep %d (%.1f s): %s"
                    % (name, rep + 1, time.monotonic() - t,
                       json.dumps(r, sort_keys=True)))
            if not is_noisy(r):
                break
            if attempt < opts.noisy_retries:
                # Another process competed for the CPUs: measure again.
                r["config"] = name
                res["discarded"].append(r)
                log("  %s rep %d: other processes used %.2f CPU-s meanwhile;"
                    " repeating it" % (name, rep + 1, r["other_cpu_s"]))
            else:
                r["noisy"] = True
        r["rep"] = rep + 1
        res[kind].setdefault(key, []).append(r)

    started = time.monotonic()
    targets = []
    try:
        log("bench-migrate: %d MiB of random guest RAM in %s"
            % (opts.size // MiB, bench.ram))
        res["ram_file_seconds"] = round(bench.make_ram(), 3)
        if opts.pretouch:
            try:
                sec = bench.warm_up(opts.pretouch)
                res["cold"] = {"bytes": opts.pretouch,
                               "seconds": round(sec, 3)}
            except (OSError, ValueError) as e:
                log("bench-migrate: pre-touch failed: %s" % e)
                opts.pretouch = 0
        for rep in range(opts.reps):
            log("bench-migrate: repetition %d of %d (%.0f s so far)"
                % (rep + 1, opts.reps, time.monotonic() - started))
            # What a ratio compares runs back to back: the bare copy with
            # N streams, then mig2 and QEMU with N channels, so that the
            # machine's drift within a repetition (its memory is backed
            # by the host lazily) hits both sides of a ratio alike.
            # (multifd off and 1 channel share the 1-stream bare copy.)
            for c in [None] + opts.channels:
                if c != 1:
                    record("rawcopy", ("file", c or 1), rep, bench.rawcopy,
                           "file", c or 1)
                for p in opts.prealloc_list:
                    record("mig2", (c, p), rep, bench.mig2, c, p)
                if opts.qemu:
                    record("qemu", (c,), rep, bench.qemu, c)
            if opts.devices:
                record("devices", (opts.devices,), rep, bench.mig2, None,
                       False, opts.devices)
            for n in opts.channels:
                record("rawcopy", ("hot", n), rep, bench.rawcopy, "hot", n)
            for n in opts.channels:
                record("rawcopy", ("memcpy", n), rep, bench.rawcopy,
                       "memcpy", n)
        log("bench-migrate: done in %.0f s" % (time.monotonic() - started))
        targets = print_table(res, opts)
        if opts.json:
            with open(opts.json, "w") as f:
                json.dump(jsonable(res, opts, targets), f, indent=1,
                          sort_keys=True)
                f.write("\n")
    finally:
        procs.reap_all()
        bench.cleanup()
    return 1 if res["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
