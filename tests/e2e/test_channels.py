#!/usr/bin/env python3
"""End-to-end tests of multifd channels (spec section 12): RAM over 1, 2
and 4 session-bound channels, channels arriving in any order, rogue
connections refused while a migration runs, a negotiated channel that never
arrives, a destination policy clamping the channel count, and a migration
between two network namespaces joined by a veth pair.

Only the source sets multifd (capability and multifd-channels); the
destination learns it all from the handshake.  The rogue connections are
built here, byte by byte, from the spec: channel headers (12.2) and the
ERROR frames they are answered with (6.6)."""

import os
import shutil
import socket
import struct
import subprocess
import time
import unittest

from vmlib import (FINAL_STATUSES, MiB, TcpRelay, VmTestCase, capability,
                   config_entry, handshake_info, make_memory_file,
                   migrate_args, scaled, tcp_addr, wait_migration,
                   wait_transferred)

RAM = 64 * MiB
WORKLOAD = ('--workload', 'dirty-rate=2000')

# Spec constants: frames (4.2, 12.3), error codes (10.2), problem kinds
# (10.3), ERROR TLVs (6.6), channel header (12.2).
FRAME_ERROR = 0x000f
FRAME_CHANNEL_ACCEPT = 0x0201
FLAG_CRITICAL = 0x0001
CODE_PROTOCOL = 1
CODE_BUSY = 8
ERROR_RETRYABLE = 0x01
KIND_MALFORMED = 17
TLV_MESSAGE = 0x0001
TLV_PROBLEM = 0x0002
CHANNEL_MAGIC = 0x4d494732
QEVM_V4 = b'QEVM\0\0\0\4'


# ---- wire helpers -------------------------------------------------------

def channel_header(session_id, index, count, mac, ctype=b'multifd',
                   version=1):
    """A channel header (spec 12.2)."""
    assert len(session_id) == 16 and len(mac) == 32
    rest = (bytes([len(ctype)]) + ctype + struct.pack('>HH', index, count) +
            session_id + mac)
    assert len(rest) == 53 + len(ctype)
    return struct.pack('>IHH', CHANNEL_MAGIC, version, len(rest)) + rest


def header_session_id(header):
    """The session id inside a channel header."""
    tlen = header[8]
    off = 8 + 1 + tlen + 4
    return header[off:off + 16]


def parse_frames(data):
    """[(type, flags, payload)] of a byte string of whole frames (4.1)."""
    frames = []
    while data:
        if len(data) < 8:
            raise AssertionError('truncated frame header: %r' % data)
        ftype, flags, length = struct.unpack('>HHI', data[:8])
        if len(data) < 8 + length:
            raise AssertionError('truncated frame 0x%04x: %d of %d bytes'
                                 % (ftype, len(data) - 8, length))
        frames.append((ftype, flags, data[8:8 + length]))
        data = data[8 + length:]
    return frames


def _str16(p, off):
    n, = struct.unpack('>H', p[off:off + 2])
    return p[off + 2:off + 2 + n].decode('utf-8'), off + 2 + n


def parse_error(payload):
    """An ERROR payload (6.6): {code, flags, message, problems: [(kind,
    path, expected, actual)]}."""
    code, flags = struct.unpack('>IB', payload[:5])
    out = {'code': code, 'flags': flags, 'message': None, 'problems': []}
    off = 5
    while off < len(payload):
        ttype, tlen = struct.unpack('>HI', payload[off:off + 6])
        value = payload[off + 6:off + 6 + tlen]
        assert len(value) == tlen, 'TLV runs past the ERROR payload'
        off += 6 + tlen
        if ttype & 0x7fff == TLV_MESSAGE:
            out['message'], _ = _str16(value, 0)
        elif ttype & 0x7fff == TLV_PROBLEM:
            kind, = struct.unpack('>H', value[:2])
            path, o = _str16(value, 2)
            expected, o = _str16(value, o)
            actual, o = _str16(value, o)
            assert o == len(value), 'bytes left in a PROBLEM TLV'
            out['problems'].append((kind, path, expected, actual))
    return out


def talk(host, port, data, half_close=True):
    """Connect, send @data, close our sending side (unless @half_close is
    false: a client that just stops), and read until the peer closes.
    Returns what it sent; fails if it never closes."""
    s = socket.create_connection((host, port), timeout=scaled(10))
    try:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        got = b''
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                raise AssertionError('%s:%d did not close the connection; '
                                     'got %r' % (host, port, got))
            if not chunk:
                return got
            got += chunk
    finally:
        s.close()


class Recorder(TcpRelay):
    """A TCP proxy in front of a destination that keeps the first bytes of
    every connection a source opens through it: the channel headers of a
    real session, to replay later."""

    def __init__(self, target_port):
        self.heads = []
        super().__init__(target_port, self._watch)

    def _watch(self, index, to_target):
        if not to_target:
            return None
        rec = bytearray()
        self.heads.append(rec)

        def feed(data):
            if len(rec) < 512:
                rec.extend(data[:512 - len(rec)])
        return feed

    def channel_headers(self):
        """The whole channel headers that went through, in arrival order."""
        out = []
        for h in self.heads:
            h = bytes(h)
            if h[:4] == b'MIG2' and len(h) >= 8:
                total = 8 + struct.unpack('>H', h[6:8])[0]
                if len(h) >= total:
                    out.append(h[:total])
        return out


# ---- test cases ---------------------------------------------------------

class ChannelCase(VmTestCase):

    def memfile(self, size=RAM, name='ram'):
        return make_memory_file(os.path.join(self.tmp, name), size)

    def source(self, name, *args, ram=RAM, memfile=None, **kw):
        mem = memfile or self.memfile(ram, name + '.ram')
        return self.vm(name, '--memory', '%dM' % (ram // MiB),
                       '--memory-file', mem, *args, **kw)

    def set_multifd(self, src, channels, **params):
        """multifd on the source only, as the issue wants."""
        src.execute('migrate-set-capabilities', {'capabilities': [
            {'capability': 'multifd', 'state': True}]})
        params['multifd-channels'] = channels
        src.execute('migrate-set-parameters', params)

    def check_done(self, src, dst, ram=RAM, info=None):
        """Run states and digests after a completed migration; returns the
        (common) digest."""
        self.assertEqual(src.status(), 'postmigrate')
        self.assertEqual(dst.status(), 'running')
        d = src.digest()
        self.assertEqual(dst.digest(), d)
        if info is not None:
            self.assertEqual(info['ram']['total'], ram, info)
            self.assertEqual(info['ram']['remaining'], 0, info)
            # the whole RAM of the file went as data
            self.assertGreaterEqual(info['ram']['normal'], ram // 4096, info)
        return d

    def check_dest_multifd(self, dst, channels):
        """The destination took the source's choices from the handshake."""
        self.assertEqual(dst.execute('query-migrate-parameters')
                         ['multifd-channels'], channels)
        self.assertTrue(capability(dst, 'multifd'))

    def check_source_config(self, src, channels, status='accepted'):
        hs = handshake_info(src)
        self.assertIn('multichannel', hs['features']['common'])
        self.assertEqual(config_entry(hs, 'multifd')['final'], True)
        c = config_entry(hs, 'multifd-channels')
        self.assertEqual((c['status'], c['final']), (status, channels), c)
        return hs

    def rejected(self, dinfo):
        return [(r['reason'], r['detail'])
                for r in dinfo.get('x-rejected-connections', [])]


class ChannelCountTest(ChannelCase):
    """RAM from a file with no zero page over 1, 2 and 4 channels."""

    def run_counts(self, workload):
        mem = self.memfile()
        extra = WORKLOAD if workload else ()
        for n in (1, 2, 4):
            with self.subTest(channels=n):
                src = self.source('src%d' % n, *extra, memfile=mem)
                dst, addr = self.incoming('dst%d' % n, '--memory', '64M')
                self.set_multifd(src, n, **{'max-bandwidth': 0})
                before = src.digest()
                # the destination was told nothing
                self.assertFalse(capability(dst, 'multifd'))
                info, dinfo = self.migrate(src, dst, addr)
                after = self.check_done(src, dst, info=info)
                if not workload:
                    self.assertEqual(after, before)
                self.check_dest_multifd(dst, n)
                self.check_source_config(src, n)
                self.assertEqual(self.rejected(dinfo), [])
                self.quit_ok(src)
                self.quit_ok(dst)

    def test_idle(self):
        self.run_counts(workload=False)

    def test_workload(self):
        self.run_counts(workload=True)


class ChannelOrderTest(ChannelCase):
    """The destination takes channels in any order (--x-channel-test)."""

    def run_order(self, knob):
        src = self.source('src', *WORKLOAD, '--x-channel-test', knob)
        dst, addr = self.incoming('dst', '--memory', '64M')
        self.set_multifd(src, 4)
        info, dinfo = self.migrate(src, dst, addr)
        self.check_done(src, dst, info=info)
        self.check_dest_multifd(dst, 4)
        self.assertEqual(self.rejected(dinfo), [])
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_reverse_order(self):
        self.run_order('reverse')

    def test_random_order(self):
        self.run_order('random')


class SilentClientsTest(ChannelCase):
    """Silent connections that arrive with the real channels cannot keep
    them out: the destination serves all pending clients at once."""

    def test_silent_clients_do_not_delay_channels(self):
        src = self.source('src', '--x-channel-test', 'reverse')
        dst, addr = self.incoming('dst', '--memory', '64M')
        # A deadline far shorter than ten silent clients served one by one.
        self.set_multifd(src, 4, **{'x-channel-deadline': 3000})
        port = int(addr['port'])
        src.execute('migrate', migrate_args(addr))
        # After the handshake (the main connection is taken), while the
        # reversed channels are still connecting.
        wait_migration(src, ('active', 'completed', 'failed'))
        silent = []
        for _ in range(10):
            s = socket.create_connection(('127.0.0.1', port))
            self.addCleanup(s.close)
            silent.append(s)
        info = wait_migration(src, FINAL_STATUSES)
        self.assertEqual(info['status'], 'completed',
                         '%r\n%s' % (info, dst.stderr()))
        dinfo = wait_migration(dst, FINAL_STATUSES)
        self.check_done(src, dst, info=info)
        # Every silent client was dropped after its second, not admitted.
        reasons = [r for r, _ in self.rejected(dinfo)]
        self.assertLessEqual(len(reasons), 10, dinfo)
        self.assertTrue(all(r == 'channel/header' for r in reasons), dinfo)
        self.quit_ok(src)
        self.quit_ok(dst)


    def test_silent_clients_before_the_source(self):
        """Clients that connect first and send nothing (or garbage) do
        not take the main connection from the real source."""
        src = self.source('src')
        dst, addr = self.incoming('dst', '--memory', '64M')
        self.set_multifd(src, 2)
        port = int(addr['port'])
        for i in range(6):
            s = socket.create_connection(('127.0.0.1', port))
            self.addCleanup(s.close)
            if i % 2:
                s.sendall(b'GET / HTTP/1.0\r\n\r\n')
        t0 = time.monotonic()
        info, dinfo = self.migrate(src, dst, addr)
        self.check_done(src, dst, info=info)
        # No waiting out a header deadline for the silent ones.
        self.assertLess(time.monotonic() - t0, scaled(4))
        self.quit_ok(src)
        self.quit_ok(dst)


class RogueTest(ChannelCase):
    """Connections that must not join a running migration."""

    ROGUE_RAM = 96 * MiB
    BANDWIDTH = 32 * MiB        # ~3 s of RAM: time for the rogues

    def check_refused(self, answer, code=CODE_PROTOCOL, path=None):
        """@answer is one ERROR frame (the connection closed after it)."""
        frames = parse_frames(answer)
        self.assertEqual(len(frames), 1, frames)
        ftype, flags, payload = frames[0]
        self.assertEqual(ftype, FRAME_ERROR, frames)
        self.assertTrue(flags & FLAG_CRITICAL, frames)
        err = parse_error(payload)
        self.assertEqual(err['code'], code, err)
        self.assertTrue(err['message'], err)
        if path is not None:
            self.assertEqual([(k, p) for k, p, _, _ in err['problems']],
                             [(KIND_MALFORMED, path)], err)
        return err

    def previous_session_header(self):
        """A channel header of an earlier, completed migration, captured
        on the wire, and that session's id from x-query-handshake."""
        src = self.vm('old-src', '--memory', '16M')
        dst, addr = self.incoming('old-dst', '--memory', '16M')
        proxy = Recorder(int(addr['port']))
        self.addCleanup(proxy.close)
        self.set_multifd(src, 2)
        self.migrate(src, dst, tcp_addr('127.0.0.1', proxy.port))
        self.check_done(src, dst)
        sid = bytes.fromhex(handshake_info(src)['session-id'])
        self.assertEqual(len(sid), 16)
        headers = proxy.channel_headers()
        self.assertEqual(len(headers), 2, proxy.heads)
        for h in headers:
            self.assertEqual(header_session_id(h), sid)
        self.quit_ok(src)
        self.quit_ok(dst)
        return headers[0], sid

    def test_rogue_connections_while_migrating(self):
        """Garbage, a random session, the current session with a bad MAC,
        a header replayed from another session, and a second main channel:
        each answered with ERROR and closed; a header cut short: closed.
        All listed by the destination, and the migration completes
        untouched."""
        replay, old_sid = self.previous_session_header()

        src = self.source('src', ram=self.ROGUE_RAM)
        dst, addr = self.incoming('dst', '--memory', '96M')
        self.set_multifd(src, 2, **{'max-bandwidth': self.BANDWIDTH})
        before = src.digest()
        src.execute('migrate', migrate_args(addr))
        wait_transferred(src, 4 * MiB)
        sid = bytes.fromhex(handshake_info(src)['session-id'])
        self.assertNotEqual(sid, old_sid)
        port = int(addr['port'])

        # (a) plain garbage
        ans = talk('127.0.0.1', port, b'GET / HTTP/1.0\r\n\r\n' * 4)
        self.check_refused(ans, path='channel/header')
        # (b) a well-formed header of a session nobody ran
        ans = talk('127.0.0.1', port, channel_header(os.urandom(16), 0, 2,
                                                      os.urandom(32)))
        self.check_refused(ans, path='channel/session')
        # (c) this session's id, but not its key
        ans = talk('127.0.0.1', port, channel_header(sid, 1, 2,
                                                      os.urandom(32)))
        self.check_refused(ans, path='channel/mac')
        # (d) a genuine header, with a valid MAC, of the earlier session
        ans = talk('127.0.0.1', port, replay)
        self.check_refused(ans, path='channel/session')
        # (e) another source's main channel
        ans = talk('127.0.0.1', port, QEVM_V4)
        err = self.check_refused(ans, code=CODE_BUSY)
        self.assertTrue(err['flags'] & ERROR_RETRYABLE, err)
        # and a header cut short by a client that then says nothing: it
        # cannot hold the acceptor; dropped after its one second
        t0 = time.monotonic()
        ans = talk('127.0.0.1', port, channel_header(
            os.urandom(16), 0, 2, os.urandom(32))[:20], half_close=False)
        self.assertEqual(ans, b'')
        self.assertGreaterEqual(time.monotonic() - t0, 0.5)

        # all of that while the RAM was still moving
        self.assertEqual(src.query_migrate()['status'], 'active')
        self.assertEqual(dst.query_migrate()['status'], 'active')

        info, dinfo = self.wait_completed(src, dst)
        self.assertEqual(self.check_done(src, dst, ram=self.ROGUE_RAM,
                                         info=info), before)
        self.assertEqual([r for r, _ in self.rejected(dinfo)],
                         ['channel/header', 'channel/session', 'channel/mac',
                          'channel/session', 'busy', 'channel/header'], dinfo)
        self.assertIn('no complete header', self.rejected(dinfo)[-1][1])
        self.check_dest_multifd(dst, 2)
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_duplicate_and_extra_channels(self):
        """The source itself, once joined, opens a channel with an index
        already admitted (--x-channel-test duplicate) and one beyond the
        count (extra), both with a valid MAC: refused, the migration goes
        on with the channels it has."""
        for knob, reason, detail in (
                ('duplicate', 'channel/index', 'duplicate channel index'),
                ('extra', 'channel/count', 'channel count differs')):
            with self.subTest(knob=knob):
                src = self.source('src-' + knob, *WORKLOAD,
                                  '--x-channel-test', knob)
                dst, addr = self.incoming('dst-' + knob, '--memory', '64M')
                self.set_multifd(src, 2)
                info, dinfo = self.migrate(src, dst, addr)
                self.check_done(src, dst, info=info)
                rej = self.rejected(dinfo)
                self.assertEqual([r for r, _ in rej], [reason], dinfo)
                self.assertIn(detail, rej[0][1])
                # what the source's rogue channel was answered
                err = src.stderr()
                self.assertIn('test channel (%s) refused' % knob, err)
                self.assertIn(reason, err)
                self.check_dest_multifd(dst, 2)
                self.quit_ok(src)
                self.quit_ok(dst)


class MissingChannelTest(ChannelCase):
    """A negotiated channel that never arrives fails the migration by
    x-channel-deadline, naming the channel; nothing waits forever."""

    def test_missing_channel_fails_by_deadline(self):
        """The first RAM round (64 MiB at 16 MiB/s) lasts far longer than
        the 1 s deadline: the migration must fail when the deadline passes,
        not when the round's barrier comes."""
        mem = self.memfile()
        for stay in (True, False):
            with self.subTest(exit_on_error=not stay):
                src = self.source('src-%s' % stay, '--x-channel-test',
                                  'skip=1', memfile=mem)
                dst, addr = self.incoming('dst-%s' % stay, '--memory', '64M',
                                          exit_on_error=not stay)
                self.set_multifd(src, 2, **{'x-channel-deadline': 1000,
                                            'max-bandwidth': 16 * MiB})
                before = src.digest()
                t0 = time.monotonic()
                src.execute('migrate', migrate_args(addr))
                info = wait_migration(src, FINAL_STATUSES, interval=0.02)
                elapsed = time.monotonic() - t0
                self.assertEqual(info['status'], 'failed', info)
                self.assertGreaterEqual(elapsed, 0.9, info)
                # far below x-stall-timeout (30 s), and within the round
                self.assertLess(elapsed, scaled(2.5), info)
                self.assertLess(info['ram']['transferred'], RAM // 2, info)
                self.assertIn('multifd channel 1 of 2', info['error-desc'])
                self.assertIn('x-channel-deadline', info['error-desc'])
                self.assertIn('(timeout)', info['error-desc'])
                src.qmp.wait_event('MIGRATION', {'status': 'failed'},
                                   timeout=scaled(5))
                self.assertEqual(src.status(), 'running')
                self.assertEqual(src.digest(), before)
                if stay:
                    dinfo = wait_migration(dst, FINAL_STATUSES)
                    self.assertEqual(dinfo['status'], 'failed', dinfo)
                    self.assertIn('multifd channel 1 of 2',
                                  dinfo['error-desc'])
                    self.assertEqual(dst.status(), 'inmigrate')
                    self.quit_ok(dst)
                else:
                    self.assertEqual(dst.wait_exit(), 1, dst.stderr())
                    self.assertIn('multifd channel 1 of 2', dst.stderr())
                self.quit_ok(src)


class PolicyTest(ChannelCase):

    def test_policy_clamps_channel_count(self):
        """The source asks for 4 channels, the destination's policy allows
        2: the migration runs over 2, and both sides say so."""
        src = self.source('src', *WORKLOAD)
        dst, addr = self.incoming('dst', '--memory', '64M',
                                  '--migration-policy',
                                  'clamp:multifd-channels=2')
        self.set_multifd(src, 4)
        info, dinfo = self.migrate(src, dst, addr)
        self.check_done(src, dst, info=info)
        self.check_dest_multifd(dst, 2)
        c = config_entry(self.check_source_config(src, 2, 'clamped'),
                         'multifd-channels')
        self.assertEqual(c['proposed'], 4, c)
        self.assertEqual(config_entry(handshake_info(dst),
                                      'multifd-channels')['final'], 2)
        # the source opened 2 channels, not 4: nothing was refused
        self.assertEqual(self.rejected(dinfo), [])
        self.quit_ok(src)
        self.quit_ok(dst)


def _ip(*args):
    return subprocess.run(('ip',) + args, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=30)


class NetnsTest(ChannelCase):
    """Source and destination on different network stacks: two network
    namespaces of the test's own, joined by a veth pair."""

    def make_netns(self):
        if os.geteuid() != 0:
            self.skipTest('needs root to create network namespaces')
        if not shutil.which('ip'):
            self.skipTest('needs ip (iproute2) to create network namespaces')
        pid = os.getpid()
        ns_a, ns_b = 'mig2t-%d-a' % pid, 'mig2t-%d-b' % pid
        x = pid % 250 + 1
        for ns in (ns_a, ns_b):
            r = _ip('netns', 'add', ns)
            if r.returncode != 0:
                err = r.stderr.decode(errors='replace').strip()
                if 'not permitted' in err:
                    self.skipTest('cannot create network namespaces: ' + err)
                self.fail('ip netns add %s: %s' % (ns, err))
            self.addCleanup(_ip, 'netns', 'del', ns)
        veth_a, veth_b = 'm2t%da' % pid, 'm2t%db' % pid   # <= 15 chars
        steps = [
            ('link', 'add', veth_a, 'netns', ns_a, 'type', 'veth', 'peer',
             'name', veth_b, 'netns', ns_b),
            ('-n', ns_a, 'addr', 'add', '10.77.%d.1/24' % x, 'dev', veth_a),
            ('-n', ns_b, 'addr', 'add', '10.77.%d.2/24' % x, 'dev', veth_b),
            ('-n', ns_a, 'link', 'set', 'lo', 'up'),
            ('-n', ns_b, 'link', 'set', 'lo', 'up'),
            ('-n', ns_a, 'link', 'set', veth_a, 'up'),
            ('-n', ns_b, 'link', 'set', veth_b, 'up'),
        ]
        for step in steps:
            r = _ip(*step)
            self.assertEqual(r.returncode, 0, 'ip %s: %s' % (
                ' '.join(step), r.stderr.decode(errors='replace')))
        return ns_a, ns_b, '10.77.%d.1' % x

    def test_veth_between_namespaces(self):
        # namespaces first: their cleanup runs after the VMs' (LIFO)
        ns_a, ns_b, dst_ip = self.make_netns()
        mem = self.memfile()
        # `ip netns exec` execs mig2-vm in place: the PID is mig2-vm's
        dst = self.vm('dst', '--memory', '64M', '--incoming', 'defer',
                      wrapper=('ip', 'netns', 'exec', ns_a))
        src = self.source('src', *WORKLOAD, memfile=mem,
                          wrapper=('ip', 'netns', 'exec', ns_b))
        for v in (src, dst):
            with open('/proc/%d/comm' % v.pid) as f:
                self.assertEqual(f.read().strip(), 'mig2-vm')
        nets = {os.readlink('/proc/%d/ns/net' % p)
                for p in (os.getpid(), src.pid, dst.pid)}
        self.assertEqual(len(nets), 3, 'not three network stacks')
        dst.execute('migrate-incoming',
                    {'channels': [{'channel-type': 'handshake',
                                   'addr': tcp_addr(dst_ip, 0)}]})
        addr = tcp_addr(dst_ip, dst.incoming_port())
        self.set_multifd(src, 2)
        info, dinfo = self.migrate(src, dst, addr)
        self.check_done(src, dst, info=info)
        self.check_dest_multifd(dst, 2)
        self.check_source_config(src, 2)
        self.assertEqual(self.rejected(dinfo), [])
        self.quit_ok(src)
        self.quit_ok(dst)


if __name__ == '__main__':
    unittest.main(verbosity=2)
