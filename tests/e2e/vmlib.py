"""Helpers for the mig2-vm end-to-end tests: a small QMP client and a Vm
class that starts mig2-vm processes and always cleans them up.

Environment (set by tests/e2e/meson.build):
  MIG2_VM         path of the mig2-vm binary of this build tree
  MIG2CTL         path of mig2ctl
  MIG2_E2E_SCALE  multiplier for every timeout (3 in the sanitizer tree)

Stdlib only.
"""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def _die_with_parent():
    """preexec_fn: the VM gets SIGKILL if the test process dies without
    cleaning up (meson's timeout kills the whole process group anyway)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)       # PR_SET_PDEATHSIG
    except Exception:                       # not Linux: nothing to do
        pass


def _default_binary(env, rel):
    path = os.environ.get(env)
    if path:
        return path
    return os.path.join(ROOT, 'build', rel)


MIG2_VM = _default_binary('MIG2_VM', os.path.join('vm', 'mig2-vm'))
MIG2CTL = _default_binary('MIG2CTL', os.path.join('tools', 'mig2ctl'))
SCALE = float(os.environ.get('MIG2_E2E_SCALE', '1') or '1')

MiB = 1 << 20
PAGE = 4096

FINAL_STATUSES = ('completed', 'failed', 'cancelled')


def scaled(seconds):
    """A timeout that allows for a slower (sanitizer) build."""
    return seconds * SCALE


class QmpError(Exception):
    """An {"error": {"class", "desc"}} reply."""

    def __init__(self, cls, desc, command):
        super().__init__('%s: %s (%s)' % (command, desc, cls))
        self.cls = cls
        self.desc = desc
        self.command = command


class QmpClosed(Exception):
    pass


class Qmp:
    """One QMP connection: greeting, qmp_capabilities, commands with ids.

    Events that arrive while waiting for a reply are kept in self.events.
    """

    def __init__(self, path, timeout=None):
        self.path = path
        self.timeout = timeout if timeout is not None else scaled(30)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(path)
        self.buf = b''
        self.events = []
        self.next_id = 1
        self.greeting = self._recv(self.timeout)
        if 'QMP' not in self.greeting:
            raise QmpClosed('no QMP greeting: %r' % (self.greeting,))

    def negotiate(self):
        return self.execute('qmp_capabilities')

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _recv(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            nl = self.buf.find(b'\n')
            if nl >= 0:
                line, self.buf = self.buf[:nl], self.buf[nl + 1:]
                line = line.strip()
                if not line:
                    continue
                return json.loads(line.decode('utf-8'))
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError('QMP %s: no message within %.1f s'
                                   % (self.path, timeout))
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise QmpClosed('QMP %s: connection closed' % self.path)
            self.buf += data

    def send_raw(self, text):
        """Send bytes as they are (for malformed-input tests)."""
        if isinstance(text, str):
            text = text.encode('utf-8')
        self.sock.sendall(text)

    def recv_reply(self, msg_id=None, timeout=None):
        """The next non-event message (with id @msg_id if given)."""
        timeout = timeout if timeout is not None else self.timeout
        deadline = time.monotonic() + timeout
        while True:
            msg = self._recv(max(0.01, deadline - time.monotonic()))
            if 'event' in msg:
                self.events.append(msg)
                continue
            if msg_id is not None and msg.get('id') != msg_id:
                continue
            return msg

    def cmd(self, name, args=None, timeout=None):
        """Run @name; return the whole reply ({"return"} or {"error"})."""
        msg_id = 'e2e-%d' % self.next_id
        self.next_id += 1
        req = {'execute': name, 'id': msg_id}
        if args is not None:
            req['arguments'] = args
        self.send_raw(json.dumps(req) + '\n')
        return self.recv_reply(msg_id, timeout)

    def execute(self, name, args=None, timeout=None):
        """Run @name; return its "return" value or raise QmpError."""
        rsp = self.cmd(name, args, timeout)
        if 'error' in rsp:
            raise QmpError(rsp['error'].get('class'), rsp['error'].get('desc'),
                           name)
        return rsp['return']

    def wait_event(self, name, match=None, timeout=None):
        """Return (and consume) the first event @name whose data has the
        items of @match, waiting up to @timeout seconds."""
        timeout = timeout if timeout is not None else self.timeout
        deadline = time.monotonic() + timeout

        def ok(ev):
            data = ev.get('data') or {}
            return ev.get('event') == name and all(
                data.get(k) == v for k, v in (match or {}).items())

        while True:
            for i, ev in enumerate(self.events):
                if ok(ev):
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError('no event %s %r within %.1f s'
                                   % (name, match, timeout))
            try:
                msg = self._recv(left)
            except TimeoutError:
                continue
            if 'event' in msg:
                self.events.append(msg)

    def drain_events(self, seconds=0.0):
        """Collect events that arrive within @seconds; return them all."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                msg = self._recv(left)
            except TimeoutError:
                break
            if 'event' in msg:
                self.events.append(msg)
        evs, self.events = self.events, []
        return evs


def free_tcp_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
    finally:
        s.close()


class LoopbackServer:
    """A TCP server on 127.0.0.1 (listening on .port): an accept thread
    hands each client to serve(conn), which subclasses define.  Subclasses
    set what serve() needs before calling __init__, which starts
    accepting.  close() stops accepting, calls close_connections() and
    joins every thread started with spawn()."""

    def __init__(self, poll=0.1):
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.bind(('127.0.0.1', 0))
        self.ls.listen(16)
        self.ls.settimeout(poll)
        self.port = self.ls.getsockname()[1]
        self.stop = threading.Event()
        self.threads = []
        self.spawn(self._accept)

    def spawn(self, target, *args):
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self):
        while not self.stop.is_set():
            try:
                c, _ = self.ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            c.settimeout(None)
            self.serve(c)

    def serve(self, conn):
        raise NotImplementedError

    def close_connections(self):
        """Between the listener's close and the joins: end what serve()
        left open, so that its threads return."""

    def close(self):
        self.stop.set()
        self.ls.close()
        self.close_connections()
        for t in self.threads:
            t.join(5)


class TcpRelay(LoopbackServer):
    """A TCP relay on 127.0.0.1 (listening on .port) in front of
    127.0.0.1:@target_port: each client gets its own connection to the
    target and two threads pump the bytes.  @watch(index, to_target), called
    for both directions of the index-th connection as it is accepted, may
    return a function that sees every chunk of that direction, then b''
    at its end.  close() ends every socket and joins every thread."""

    def __init__(self, target_port, watch=None):
        self.target = ('127.0.0.1', int(target_port))
        self.watch = watch
        self.socks = []
        self.index = 0
        super().__init__()

    def serve(self, c):
        try:
            u = socket.create_connection(self.target)
        except OSError:
            c.close()
            return
        self.socks += [c, u]
        for a, b, up in ((c, u, True), (u, c, False)):
            feed = self.watch(self.index, up) if self.watch else None
            self.spawn(self._pump, a, b, feed)
        self.index += 1

    @staticmethod
    def _pump(a, b, feed):
        try:
            while True:
                try:
                    data = a.recv(262144)
                except OSError:
                    break
                if not data:
                    break
                if feed:
                    feed(data)
                try:
                    b.sendall(data)
                except OSError:
                    break
            try:
                b.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        finally:
            if feed:
                feed(b'')

    def close_connections(self):
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def tcp_addr(host, port):
    return {'transport': 'socket', 'type': 'inet', 'host': host,
            'port': str(port)}


def unix_addr(path):
    return {'transport': 'socket', 'type': 'unix', 'path': path}


def channels(addr, channel_type='handshake'):
    return [{'channel-type': channel_type, 'addr': addr}]


def handshake_channels(host, port):
    """QEMU's channels form selecting protocol v2 over TCP."""
    return channels(tcp_addr(host, port), 'handshake')


def handshake_unix_channels(path):
    return channels(unix_addr(path), 'handshake')


def main_channels(host, port):
    return channels(tcp_addr(host, port), 'main')


def main_unix_channels(path):
    return channels(unix_addr(path), 'main')


def sanitizer_env(tmpdir, name, base=None):
    """The environment for a process of this build tree named @name: its
    sanitizer reports (ASan, LeakSanitizer, UBSan) go to files
    @tmpdir/@name.sanitizer.PID, where sanitizer_reports() finds them,
    whatever the process's exit code.  Options already set (make check sets
    some) are kept; the variables are harmless to an unsanitized binary."""
    env = dict(os.environ if base is None else base)
    prefix = os.path.join(tmpdir, name + '.sanitizer')
    for var in ('ASAN_OPTIONS', 'UBSAN_OPTIONS'):
        opts = env.get(var, '')
        env[var] = (opts + ':' if opts else '') + 'log_path=' + prefix
    return env


def sanitizer_reports(tmpdir, name):
    """The text of every sanitizer report the process @name wrote ('' when
    there is none)."""
    texts = []
    for path in sorted(glob.glob(os.path.join(tmpdir,
                                              name + '.sanitizer*'))):
        with open(path, 'rb') as f:
            text = f.read().decode('utf-8', 'replace')
        if text.strip():
            texts.append('%s:\n%s' % (os.path.basename(path), text))
    return '\n'.join(texts)


def make_tmpdir(test):
    """A temp dir removed at cleanup; short enough for unix socket paths."""
    base = tempfile.gettempdir()
    if len(base) > 60:
        base = '/tmp'
    d = tempfile.mkdtemp(prefix='mig2e2e-', dir=base)
    test.addCleanup(shutil.rmtree, d, True)
    return d


def make_memory_file(path, size, seed=1):
    """Write @size bytes with no zero page, so every page is sent as data
    (a fresh anonymous guest is all zero pages and migrates in no time)."""
    block = bytearray(MiB)
    x = (0x9e3779b97f4a7c15 * seed) & 0xffffffffffffffff or 1
    for i in range(0, MiB, 8):
        x ^= (x << 13) & 0xffffffffffffffff
        x ^= x >> 7
        x ^= (x << 17) & 0xffffffffffffffff
        block[i:i + 8] = (x | 1).to_bytes(8, 'little')
    with open(path, 'wb') as f:
        for i in range(size // MiB):
            # vary each MiB a little so pages differ across the file
            block[0:8] = (i + 1).to_bytes(8, 'little')
            f.write(block)
    return path


class Vm:
    """A mig2-vm process with a QMP socket in a temp dir.

    Created through VmTestCase.vm(), which registers the cleanup: the
    process is stopped (quit, SIGTERM, SIGKILL) even when the test fails.
    """

    def __init__(self, tmpdir, name, args, binary=None, env=None,
                 wrapper=None):
        self.name = name
        self.tmpdir = tmpdir
        self.args = list(args)
        self.binary = binary or MIG2_VM
        self.qmp_path = os.path.join(tmpdir, name + '.qmp')
        self.stderr_path = os.path.join(tmpdir, name + '.stderr')
        self.proc = None
        self.qmp = None
        self.env = env
        # A command that execs the binary in place (e.g. ip netns exec NS),
        # so the PID is still mig2-vm's.
        self.wrapper = list(wrapper or ())

    # ---- process ----

    def start(self, timeout=None):
        timeout = timeout if timeout is not None else scaled(20)
        cmd = self.wrapper + [self.binary, '--name', self.name,
               '--qmp', 'unix:' + self.qmp_path] + self.args
        self._stderr = open(self.stderr_path, 'wb')
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=self._stderr,
                                     env=sanitizer_env(self.tmpdir, self.name,
                                                       self.env),
                                     preexec_fn=_die_with_parent)
        self.qmp = connect_qmp(self, timeout)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr(self):
        try:
            with open(self.stderr_path, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except OSError:
            return ''

    def sanitizer_reports(self):
        return sanitizer_reports(self.tmpdir, self.name)

    def wait_exit(self, timeout=None):
        """Wait for the process to end by itself; return its exit code."""
        timeout = timeout if timeout is not None else scaled(15)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError('%s did not exit within %.1f s'
                                 % (self.name, timeout))

    def quit(self, timeout=None):
        """QMP quit, wait for the exit; return the exit code."""
        timeout = timeout if timeout is not None else scaled(15)
        try:
            if self.qmp:
                self.qmp.execute('quit', timeout=timeout)
        except (OSError, QmpClosed, TimeoutError):
            pass
        rc = self.wait_exit(timeout)
        self._close()
        return rc

    def kill(self, sig=signal.SIGKILL):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def stop_process(self):
        """Cleanup: quit, then SIGTERM, then SIGKILL, by PID."""
        if self.proc is None:
            return
        if self.alive():
            try:
                if self.qmp:
                    self.qmp.send_raw('{"execute": "quit"}\n')
            except OSError:
                pass
            for sig, wait in ((None, scaled(5)), (signal.SIGTERM, scaled(5)),
                              (signal.SIGKILL, 10)):
                if sig is not None and self.alive():
                    try:
                        os.kill(self.proc.pid, sig)
                    except ProcessLookupError:
                        pass
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        else:
            self.proc.wait()
        self._close()

    def _close(self):
        if self.qmp:
            self.qmp.close()
            self.qmp = None
        if getattr(self, '_stderr', None):
            self._stderr.close()
            self._stderr = None

    # ---- QMP shortcuts ----

    def execute(self, name, args=None, timeout=None):
        return self.qmp.execute(name, args, timeout)

    def cmd(self, name, args=None, timeout=None):
        return self.qmp.cmd(name, args, timeout)

    def digest(self):
        return digest(self)

    def status(self):
        return status(self)

    def query_migrate(self):
        return self.execute('query-migrate')

    def incoming_port(self):
        """The TCP port an incoming migration listens on."""
        addr = self.query_migrate()['socket-address'][0]
        return int(addr.rsplit(':', 1)[1])


def connect_qmp(proc_owner, timeout):
    """Wait until @proc_owner's process (mig2-vm or QEMU: anything with
    .proc, .qmp_path, .name and .stderr()) answers on its QMP socket, and
    return the negotiated client.  Fails at once if the process exits."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc_owner.proc.poll() is not None:
            raise RuntimeError('%s exited with %s at start: %s'
                               % (proc_owner.name, proc_owner.proc.returncode,
                                  proc_owner.stderr()))
        if os.path.exists(proc_owner.qmp_path):
            qmp = None
            try:
                qmp = Qmp(proc_owner.qmp_path)
                qmp.negotiate()
                return qmp
            except (OSError, QmpClosed) as e:
                last = e
                if qmp:
                    qmp.close()
        time.sleep(0.02)
    raise RuntimeError('%s: QMP socket not ready within %.1f s (%s)'
                       % (proc_owner.name, timeout, last))


def digest(vm):
    """The guest digest (RAM and devices) of @vm."""
    return vm.execute('x-query-guest-digest')['digest']


def status(vm):
    """The run state of @vm (query-status)."""
    return vm.execute('query-status')['status']


def wait_migration(vm, statuses, timeout=None, interval=0.05):
    """Poll query-migrate until its status is in @statuses; return it."""
    if isinstance(statuses, str):
        statuses = (statuses,)
    timeout = timeout if timeout is not None else scaled(60)
    deadline = time.monotonic() + timeout
    info = None
    while time.monotonic() < deadline:
        info = vm.query_migrate()
        if info.get('status') in statuses:
            return info
        time.sleep(interval)
    raise AssertionError('%s: migration status %r not in %r after %.1f s '
                         '(stderr: %s)' % (vm.name, info, statuses, timeout,
                                           vm.stderr()[-2000:]))


def wait_state(vm, states, timeout=None):
    """Poll query-status until the run state is in @states; return it."""
    if isinstance(states, str):
        states = (states,)
    timeout = timeout if timeout is not None else scaled(20)
    deadline = time.monotonic() + timeout
    st = None
    while time.monotonic() < deadline:
        st = status(vm)
        if st in states:
            return st
        time.sleep(0.05)
    raise AssertionError('%s: run state %r not in %r after %.1f s'
                         % (vm.name, st, states, timeout))


def wait_transferred(vm, nbytes, timeout=None):
    """Wait until an outgoing migration is active with at least @nbytes
    of RAM transferred; return query-migrate."""
    timeout = timeout if timeout is not None else scaled(30)
    deadline = time.monotonic() + timeout
    info = None
    while time.monotonic() < deadline:
        info = vm.query_migrate()
        if info.get('status') in FINAL_STATUSES:
            raise AssertionError('%s: migration ended early: %r'
                                 % (vm.name, info))
        if (info.get('status') == 'active' and
                info.get('ram', {}).get('transferred', 0) >= nbytes):
            return info
        time.sleep(0.02)
    raise AssertionError('%s: less than %d bytes transferred after %.1f s: '
                         '%r' % (vm.name, nbytes, timeout, info))


def handshake_info(vm):
    return vm.execute('x-query-handshake')


def config_entry(hs, name):
    for c in hs.get('configuration', []):
        if c['name'] == name:
            return c
    raise KeyError(name)


def capability(vm, name):
    for c in vm.execute('query-migrate-capabilities'):
        if c['capability'] == name:
            return c['state']
    raise KeyError(name)


class VmTestCase(unittest.TestCase):
    """Base class: temp dir per test and VMs stopped at cleanup."""

    maxDiff = None

    def setUp(self):
        self.tmp = make_tmpdir(self)
        self._names = set()

    def vm(self, name, *args, start=True, binary=None, wrapper=None):
        """Start mig2-vm with @args; stopped at cleanup whatever happens."""
        assert name not in self._names, name
        self._names.add(name)
        v = Vm(self.tmp, name, args, binary=binary, wrapper=wrapper)
        # Cleanups run last-in first-out: stop, then look for reports.
        self.addCleanup(self.assertNoSanitizerReport, v)
        self.addCleanup(v.stop_process)
        if start:
            v.start()
        return v

    def incoming(self, name, *args, chan='handshake', transport='tcp',
                 exit_on_error=None):
        """A destination waiting with migrate-incoming (--incoming defer).

        Returns (vm, address for the source): a TCP port picked by the
        destination itself (port 0), or a unix socket in the temp dir.
        """
        v = self.vm(name, '--incoming', 'defer', *args)
        if transport == 'tcp':
            addr = tcp_addr('127.0.0.1', 0)
        else:
            addr = unix_addr(os.path.join(self.tmp, name + '.mig'))
        req = {}
        if chan == 'uri':
            req['uri'] = ('tcp:127.0.0.1:0' if transport == 'tcp'
                          else 'unix:' + addr['path'])
        else:
            req['channels'] = channels(addr, chan)
        if exit_on_error is not None:
            req['exit-on-error'] = exit_on_error
        v.execute('migrate-incoming', req)
        if transport == 'tcp':
            addr = tcp_addr('127.0.0.1', v.incoming_port())
        return v, addr

    def assertNoSanitizerReport(self, proc):
        """Fail when @proc (anything with .name and .sanitizer_reports())
        left a sanitizer report: a leak or error in a process that exits
        with 1 by design would otherwise go unnoticed."""
        text = proc.sanitizer_reports()
        if text:
            self.fail('%s: sanitizer report:\n%s' % (proc.name, text[-6000:]))

    def migrate(self, src, dst, addr, mode='handshake'):
        """Run a migration to completion; return the source's and the
        destination's final query-migrate."""
        src.execute('migrate', migrate_args(addr, mode))
        return self.wait_completed(src, dst)

    def wait_completed(self, src, dst):
        """Wait for a started migration to end on both sides, require
        'completed' on each; return both final query-migrate."""
        info = wait_migration(src, FINAL_STATUSES)
        self.assertEqual(info['status'], 'completed',
                         '%r\nsource stderr: %s\ndestination stderr: %s'
                         % (info, src.stderr(), dst.stderr()))
        dinfo = wait_migration(dst, FINAL_STATUSES)
        self.assertEqual(dinfo['status'], 'completed', dinfo)
        return info, dinfo

    def quit_ok(self, vm):
        """Stop @vm with QMP quit and require exit code 0 (catches
        sanitizer reports, which make the process exit non-zero)."""
        rc = vm.quit()
        self.assertEqual(rc, 0, '%s exited with %s; stderr:\n%s'
                         % (vm.name, rc, vm.stderr()))

    def assertFailedBeforeRam(self, info):
        """query-migrate of a source that failed before any RAM moved."""
        self.assertEqual(info['status'], 'failed', info)
        ram = info.get('ram', {})
        self.assertEqual(ram.get('normal', 0), 0, info)
        self.assertEqual(ram.get('duplicate', 0), 0, info)
        self.assertTrue(info.get('error-desc'), info)


def migrate_args(addr, mode='handshake'):
    """Arguments of "migrate" for @addr (tcp_addr/unix_addr): mode
    'handshake' or 'main' (channels form) or 'uri' (plain uri)."""
    if mode == 'uri':
        if addr['type'] == 'inet':
            return {'uri': 'tcp:%s:%s' % (addr['host'], addr['port'])}
        return {'uri': 'unix:' + addr['path']}
    return {'channels': channels(addr, mode)}
