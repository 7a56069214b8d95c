#!/usr/bin/env python3
"""One-way transports (file: and exec:) between mig2-vm processes: live
migration through an exec: pipe, the handshake refused up front, and the
v4 one-way stream (x-oneway-format v4, docs/protocol.md section 2.5): save
and restore with equal digests, an incompatible restore refused before any
state is read with the live handshake's problems, corrupted and truncated
files detected, and the reader telling v3 from v4 by itself."""

import os
import socket
import struct
import threading
import time
import unittest

from vmlib import (FINAL_STATUSES, MiB, VmTestCase, channels,
                   handshake_info, make_memory_file, migrate_args, scaled,
                   wait_migration, wait_state, wait_transferred)

MEM = ('--memory', '64M')
V3 = b'QEVM\0\0\0\3'
V4 = b'QEVM\0\0\0\4'


def frames(data):
    """Split a v4 stream after its preamble: [(offset, type, flags, len)]."""
    out, off = [], 8
    while off + 8 <= len(data):
        t, fl, n = struct.unpack('>HHI', data[off:off + 8])
        out.append((off, t, fl, n))
        off += 8 + n
    assert off == len(data), 'stream does not end on a frame boundary'
    return out


class OnewaySaves:
    """Saving to one-way transports; mixed into a VmTestCase (and used by
    test_analyze.py for the one-way v4 files it reads)."""

    def save(self, src, out, fmt=None):
        """migrate @src to @out ('file:...' or 'exec:...'); completed."""
        if fmt:
            src.execute('migrate-set-parameters', {'x-oneway-format': fmt})
        src.execute('migrate', {'uri': out})
        info = wait_migration(src, FINAL_STATUSES)
        self.assertEqual(info['status'], 'completed', info)
        self.assertEqual(src.status(), 'postmigrate')
        return info

    def restore(self, name, inc, *args, exit_on_error=None):
        """A destination restoring from @inc with migrate-incoming."""
        dst = self.vm(name, *(args or MEM), '--incoming', 'defer')
        req = {'uri': inc}
        if exit_on_error is not None:
            req['exit-on-error'] = exit_on_error
        dst.execute('migrate-incoming', req)
        return dst

    def saved_v4(self, *src_args, workload=True, mib=64):
        """(source vm, path) of a v4 file saved from a guest of @mib MiB
        whose RAM is not zero (self.saved_ram: the file it came from) and,
        with @workload, changes while it is saved.  @src_args replace
        --memory 64M."""
        mem = make_memory_file(os.path.join(self.tmp, 'ram'), mib * MiB,
                               seed=3)
        args = src_args or MEM
        extra = ('--workload', 'dirty-rate=2000') if workload else ()
        src = self.vm('src', *args, '--memory-file', mem, *extra)
        path = os.path.join(self.tmp, 'saved.v4')
        self.save(src, 'file:' + path, 'v4')
        self.saved_ram = mem
        return src, path


class OnewayTest(OnewaySaves, VmTestCase):

    def assertQmpError(self, vm, name, args, desc):
        rsp = vm.cmd(name, args)
        self.assertIn('error', rsp, '%s %r: %r' % (name, args, rsp))
        self.assertIn(desc, rsp['error']['desc'])

    # ---- legacy v3 and the transports themselves ----

    def test_exec_live_migration(self):
        """exec: between two running mig2-vm processes: the destination
        reads a FIFO the source's command writes, while the guest runs.
        Both stream formats; the destination finds out which by itself."""
        for fmt, head in (('legacy', V3), ('v4', V4)):
            with self.subTest(format=fmt):
                fifo = os.path.join(self.tmp, 'pipe-' + fmt)
                copy = os.path.join(self.tmp, 'copy-' + fmt)
                os.mkfifo(fifo)
                src = self.vm('src-' + fmt, *MEM, '--workload',
                              'dirty-rate=2000')
                dst = self.restore('dst-' + fmt,
                                   'exec:tee %s < %s' % (copy, fifo))
                self.assertEqual(dst.status(), 'inmigrate')
                src.execute('migrate-set-parameters',
                            {'x-oneway-format': fmt})
                src.execute('migrate', {'uri': 'exec:cat > ' + fifo})
                info = wait_migration(src, FINAL_STATUSES)
                self.assertEqual(info['status'], 'completed', info)
                dinfo = wait_migration(dst, FINAL_STATUSES)
                self.assertEqual(dinfo['status'], 'completed', dinfo)
                wait_state(dst, 'running')
                self.assertEqual(src.status(), 'postmigrate')
                self.assertEqual(dst.digest(), src.digest())
                with open(copy, 'rb') as f:
                    self.assertEqual(f.read(8), head)
                self.quit_ok(src)
                self.quit_ok(dst)

    def test_handshake_refused_before_anything_is_written(self):
        """channel-type handshake on file: or exec: is refused by the
        command itself, whatever x-oneway-format says: an existing file
        keeps its content, the command never runs, the guest runs on."""
        vm = self.vm('vm', *MEM, '--workload', 'dirty-rate=500')
        vm.execute('stop')
        dig = vm.digest()
        out = os.path.join(self.tmp, 'keep')
        marker = os.path.join(self.tmp, 'marker')
        with open(out, 'wb') as f:
            f.write(b'an earlier save')
        for fmt in ('legacy', 'v4'):
            vm.execute('migrate-set-parameters', {'x-oneway-format': fmt})
            self.assertQmpError(vm, 'migrate', {'channels': channels(
                {'transport': 'file', 'filename': out}, 'handshake')},
                "needs a bidirectional transport")
            self.assertQmpError(vm, 'migrate', {'channels': channels(
                {'transport': 'exec', 'args': [
                    'sh', '-c', 'touch %s; cat > %s' % (marker, out)]},
                'handshake')}, "needs a bidirectional transport")
        time.sleep(0.2)
        with open(out, 'rb') as f:
            self.assertEqual(f.read(), b'an earlier save')
        self.assertFalse(os.path.exists(marker))
        self.assertEqual(vm.query_migrate(), {})
        self.assertEqual(vm.status(), 'paused')
        self.assertEqual(vm.digest(), dig)
        vm.execute('cont')
        self.assertEqual(vm.status(), 'running')
        # and a save the normal way still works afterwards
        self.save(vm, 'file:' + out)
        self.quit_ok(vm)

    # ---- the parameter ----

    def test_x_oneway_format_parameter(self):
        vm = self.vm('vm', *MEM)
        params = vm.execute('query-migrate-parameters')
        self.assertEqual(params['x-oneway-format'], 'legacy')
        vm.execute('migrate-set-parameters', {'x-oneway-format': 'v4'})
        self.assertEqual(vm.execute('query-migrate-parameters')
                         ['x-oneway-format'], 'v4')
        self.assertQmpError(vm, 'migrate-set-parameters',
                            {'x-oneway-format': 'v5'},
                            "Parameter 'x-oneway-format' does not accept "
                            "value 'v5'")
        self.assertQmpError(vm, 'migrate-set-parameters',
                            {'x-oneway-format': 4},
                            "Invalid parameter type for 'x-oneway-format', "
                            "expected: string")
        # all or nothing, as QEMU does
        self.assertQmpError(vm, 'migrate-set-parameters',
                            {'downtime-limit': 123,
                             'x-oneway-format': 'bogus'},
                            "does not accept value 'bogus'")
        now = vm.execute('query-migrate-parameters')
        self.assertEqual(now['x-oneway-format'], 'v4')
        self.assertEqual(now['downtime-limit'], params['downtime-limit'])
        vm.execute('migrate-set-parameters', {'x-oneway-format': 'legacy'})
        self.assertEqual(vm.execute('query-migrate-parameters'), params)
        self.quit_ok(vm)

    def test_v4_only_changes_one_way_transports(self):
        """On a socket, main stays the v3 stream whatever the parameter."""
        src = self.vm('src', *MEM)
        dst, addr = self.incoming('dst', *MEM, chan='main')
        src.execute('migrate-set-parameters', {'x-oneway-format': 'v4'})
        src.execute('migrate', migrate_args(addr, 'main'))
        self.assertEqual(wait_migration(src, FINAL_STATUSES)['status'],
                         'completed')
        self.assertEqual(wait_migration(dst, FINAL_STATUSES)['status'],
                         'completed')
        # a v3 load leaves no handshake behind
        self.assertEqual(handshake_info(dst), {})
        self.assertEqual(dst.digest(), src.digest())
        self.quit_ok(src)
        self.quit_ok(dst)

    # ---- v4 save and restore ----

    def test_v4_file_roundtrip(self):
        src, path = self.saved_v4()
        saved = src.digest()
        with open(path, 'rb') as f:
            data = f.read()
        self.assertEqual(data[:8], V4)
        fr = frames(data)
        self.assertEqual([t for _, t, _, _ in fr[:2]], [0x0005, 0x0003])
        self.assertEqual(fr[0][2], 0x0001)          # MANIFEST is critical
        self.assertEqual(fr[1][3], 32)              # FINISHED
        self.assertEqual([t for _, t, _, _ in fr[-2:]], [0x0105, 0x0106])
        self.assertEqual(fr[-1][3], 32)             # DIGEST
        types = set(t for _, t, _, _ in fr)
        self.assertTrue({0x0101, 0x0102, 0x0103, 0x0104} <= types, types)
        # no frame a reader would have to answer, nothing from a reader
        self.assertFalse(types & {0x0001, 0x0002, 0x0004, 0x0181, 0x0182})
        hs = handshake_info(src)
        self.assertEqual(hs['role'], 'source')
        self.assertEqual(hs['round-trips'], 0)
        self.assertIn('oneway-manifest', hs['features']['common'])
        self.assertNotIn('return-path', hs['features']['common'])

        # restored twice: --incoming and migrate-incoming with channels
        dst = self.vm('dst', *MEM, '--incoming', 'file:' + path)
        info = wait_migration(dst, FINAL_STATUSES)
        self.assertEqual(info['status'], 'completed', info)
        wait_state(dst, 'running')
        self.assertEqual(dst.digest(), saved)
        dhs = handshake_info(dst)
        self.assertEqual(dhs['role'], 'destination')
        self.assertEqual(dhs['state'], 'complete')
        self.assertEqual(dhs['revision'], 1)
        self.assertEqual(dhs['session-id'], hs['session-id'])
        self.assertEqual(dhs['transcript-hash'], hs['transcript-hash'])
        self.assertEqual(
            sorted(dhs['features']['common']),
            sorted(['zero-page', 'device-state-versions', 'oneway-manifest']))
        dst2 = self.vm('dst2', *MEM, '--incoming', 'defer', '-S')
        dst2.execute('migrate-incoming', {'channels': channels(
            {'transport': 'file', 'filename': path}, 'main')})
        self.assertEqual(wait_migration(dst2, FINAL_STATUSES)['status'],
                         'completed')
        self.assertEqual(dst2.status(), 'paused')
        self.assertEqual(dst2.digest(), saved)
        for v in (src, dst, dst2):
            self.quit_ok(v)

    def test_v4_exec_save_and_restore(self):
        mem = make_memory_file(os.path.join(self.tmp, 'ram'), 64 * MiB,
                               seed=5)
        src = self.vm('src', *MEM, '--memory-file', mem, '--workload',
                      'dirty-rate=1000')
        path = os.path.join(self.tmp, 'saved.gz')
        # through a compressor and back, like virsh save with a filter
        self.save(src, 'exec:gzip -1 > ' + path, 'v4')
        dst = self.restore('dst', 'exec:gzip -dc ' + path)
        self.assertEqual(wait_migration(dst, FINAL_STATUSES)['status'],
                         'completed')
        self.assertEqual(dst.digest(), src.digest())
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_v4_over_a_socket_to_a_main_destination(self):
        """A destination given 'main' reads a one-way stream from a socket
        too (cat FILE | nc); given 'handshake' it refuses it unanswered."""
        src, path = self.saved_v4(workload=False)
        with open(path, 'rb') as f:
            data = f.read()
        for chan in ('main', 'handshake'):
            with self.subTest(channel=chan):
                dst, addr = self.incoming('dst-' + chan, *MEM, chan=chan,
                                          exit_on_error=False)
                s = socket.create_connection((addr['host'],
                                              int(addr['port'])))
                got = []

                def drain():
                    try:
                        while True:
                            b = s.recv(65536)
                            if not b:
                                return
                            got.append(b)
                    except OSError:
                        return
                reader = threading.Thread(target=drain)
                reader.start()
                try:
                    s.sendall(data)
                except OSError:
                    pass        # the handshake destination closed on us
                info = wait_migration(dst, FINAL_STATUSES)
                s.close()
                reader.join(scaled(5))
                self.assertEqual(b''.join(got), b'')    # nothing answered
                if chan == 'main':
                    self.assertEqual(info['status'], 'completed', info)
                    self.assertEqual(dst.digest(), src.digest())
                else:
                    self.assertEqual(info['status'], 'failed', info)
                    self.assertIn('one-way v4 stream (MANIFEST)',
                                  info['error-desc'])
                    self.assertEqual(dst.status(), 'inmigrate')
                self.quit_ok(dst)
        self.quit_ok(src)

    # ---- refused before any state ----

    # A 2.0 guest with an e1000 saved from 128M, read by a 1.0 build with
    # 64M.  A file cannot adapt to its reader: every device goes at the
    # newest version 2.0 saves, and 1.0 loads older ones of five of them.
    SRC = ('--memory', '128M', '--device', 'e1000')
    DST = ('--memory', '64M', '--release', '1.0')
    PROBLEMS = [
        ('ram-block-size', 'ram-blocks/pc.ram/size', str(64 * MiB),
         str(128 * MiB)),
        ('device-version', 'devices/cpu@0/version', '1..2', '3..3'),
        ('device-version', 'devices/serial@0/version', '1..2', '3..3'),
        ('device-version', 'devices/rtc@0/version', '1..2', '3..3'),
        ('device-version', 'devices/virtio-net@0/version', '1..1', '2..2'),
        ('device-version', 'devices/virtio-blk@0/version', '1..1', '2..2'),
        ('device-missing', 'devices/e1000@0', 'absent', 'versions 2..2'),
    ]
    # What the live handshake reports for the same pair: it negotiates
    # cpu, serial and virtio down (spec 9.4); rtc 2.0 saves only at v3.
    LIVE_PROBLEMS = [
        ('ram-block-size', 'ram-blocks/pc.ram/size', str(64 * MiB),
         str(128 * MiB)),
        ('device-version', 'devices/rtc@0/version', '1..2', '3..3'),
        ('device-missing', 'devices/e1000@0', 'absent', 'versions 1..2'),
    ]

    def test_v4_incompatible_restore(self):
        src = self.vm('src', *self.SRC, '--workload', 'dirty-rate=1000')
        path = os.path.join(self.tmp, 'big.v4')
        self.save(src, 'file:' + path, 'v4')
        size = os.path.getsize(path)
        self.assertGreater(size, 100000)       # state the reader never read

        dst = self.restore('dst', 'file:' + path, *self.DST,
                           exit_on_error=False)
        before = dst.digest()
        t0 = time.monotonic()
        info = wait_migration(dst, FINAL_STATUSES)
        self.assertLess(time.monotonic() - t0, scaled(5))
        self.assertEqual(info['status'], 'failed', info)
        desc = info['error-desc']
        self.assertIn('local error (incompatible)', desc)
        self.assertIn('destination found %d problems' % len(self.PROBLEMS),
                      desc)
        for kind, p, exp, act in self.PROBLEMS:
            self.assertIn('%s: %s: expected %s, got %s' % (kind, p, exp, act),
                          desc)
        hs = handshake_info(dst)
        self.assertEqual(hs['state'], 'failed')
        self.assertEqual(hs['error-origin'], 'local')
        got = [(p['kind'], p['path'], p['expected'], p['actual'])
               for p in hs['problems']]
        self.assertEqual(got, self.PROBLEMS)
        # no state was read: the guest is as it was, still waiting
        self.assertEqual(dst.status(), 'inmigrate')
        self.assertEqual(dst.digest(), before)
        self.quit_ok(dst)

        # by default the destination exits 1 and says the same on stderr
        dst2 = self.restore('dst2', 'file:' + path, *self.DST)
        self.assertEqual(dst2.wait_exit(), 1, dst2.stderr())
        err = dst2.stderr()
        self.assertIn('load of migration failed', err)
        for kind, p, exp, act in self.PROBLEMS:
            self.assertIn('%s: %s: expected %s, got %s' % (kind, p, exp, act),
                          err)

        # the same check on the live handshake, which can still adapt
        live = self.vm('live', *self.SRC)
        ldst, addr = self.incoming('ldst', *self.DST, exit_on_error=False)
        live.execute('migrate', migrate_args(addr))
        linfo = wait_migration(live, FINAL_STATUSES)
        self.assertFailedBeforeRam(linfo)
        lhs = handshake_info(live)
        self.assertEqual([(p['kind'], p['path'], p['expected'], p['actual'])
                          for p in lhs['problems']], self.LIVE_PROBLEMS)
        self.quit_ok(live)
        self.quit_ok(ldst)
        self.quit_ok(src)

    def test_v4_needed_subsection_unknown(self):
        """serial,fifo=on needs serial/fifo, which 1.0 does not know."""
        src = self.vm('src', *MEM, '--nodefaults', '--device',
                      'serial,fifo=on')
        path = os.path.join(self.tmp, 'fifo.v4')
        self.save(src, 'file:' + path, 'v4')
        dst = self.restore('dst', 'file:' + path, *MEM, '--nodefaults',
                           '--release', '1.0', '--device', 'serial',
                           exit_on_error=False)
        info = wait_migration(dst, FINAL_STATUSES)
        self.assertEqual(info['status'], 'failed', info)
        got = [(p['kind'], p['path'], p['expected'], p['actual'])
               for p in handshake_info(dst)['problems']]
        self.assertEqual(got, [
            ('device-version', 'devices/serial@0/version', '1..2', '3..3'),
            ('subsection-unknown', 'devices/serial@0/subsections/serial/fifo',
             'unknown to the destination', 'needed')])
        self.quit_ok(dst)
        self.quit_ok(src)

    # ---- damaged files ----

    def test_v4_corrupted_or_truncated(self):
        src, path = self.saved_v4(workload=False)
        with open(path, 'rb') as f:
            good = f.read()
        fr = frames(good)
        man_off, _, _, man_len = fr[0]
        ram = [f for f in fr if f[1] == 0x0101]
        dev = [f for f in fr if f[1] == 0x0104]
        mid_ram = ram[len(ram) // 2][0] + 8 + ram[len(ram) // 2][3] - 100
        # a byte of the first device's own fields, after its id, instance
        # and version: well formed either way, only DIGEST can tell
        p = dev[0][0] + 8
        dev_field = p + 1 + good[p] + 8 + 1

        def flipped(at):
            b = bytearray(good)
            b[at] ^= 0x01
            return bytes(b)

        cases = [
            # (name, bytes, text in error-desc, no state read)
            ('manifest', flipped(man_off + 8 + man_len - 3),
             'FINISHED does not match its MANIFEST', True),
            ('ram-page', flipped(mid_ram), 'DIGEST does not match', False),
            ('device-field', flipped(dev_field), 'DIGEST does not match',
             False),
            ('device-framing', flipped(dev[0][0] + 8 + dev[0][3] - 1),
             'error while loading state for device', False),
            ('digest', flipped(len(good) - 1), 'DIGEST does not match',
             False),
            ('no-digest', good[:fr[-1][0]], 'without its DIGEST: it is truncated',
             False),
            ('cut-in-ram', good[:mid_ram], 'the one-way stream is truncated',
             False),
            ('cut-in-manifest', good[:man_off + 20],
             'ended before its MANIFEST', True),
        ]
        for name, data, text, untouched in cases:
            with self.subTest(damage=name):
                bad = os.path.join(self.tmp, 'bad-' + name)
                with open(bad, 'wb') as f:
                    f.write(data)
                dst = self.restore('dst-' + name, 'file:' + bad,
                                   exit_on_error=False)
                before = dst.digest()
                info = wait_migration(dst, FINAL_STATUSES)
                self.assertEqual(info['status'], 'failed', info)
                if os.environ.get('SHOWDESC'):
                    print(name, repr(info['error-desc']))
                if text:
                    self.assertIn(text, info['error-desc'])
                # never started with a damaged guest
                self.assertEqual(dst.status(), 'inmigrate')
                if untouched:
                    self.assertEqual(dst.digest(), before)
                self.quit_ok(dst)
        # the undamaged file still restores
        dst = self.restore('dst-good', 'file:' + path)
        self.assertEqual(wait_migration(dst, FINAL_STATUSES)['status'],
                         'completed')
        self.assertEqual(dst.digest(), src.digest())
        self.quit_ok(dst)
        self.quit_ok(src)

    def test_v4_cancelled_save_says_so(self):
        """A save cancelled half-way ends its file with ERROR cancelled:
        a later restore reports the writer's reason, not just a short
        file, and does not start the guest."""
        mem = make_memory_file(os.path.join(self.tmp, 'ram'), 64 * MiB,
                               seed=9)
        src = self.vm('src', *MEM, '--memory-file', mem)
        src.execute('migrate-set-parameters', {'x-oneway-format': 'v4',
                                               'max-bandwidth': 8 * MiB})
        path = os.path.join(self.tmp, 'half.v4')
        src.execute('migrate', {'uri': 'file:' + path})
        wait_transferred(src, 2 * MiB)
        src.execute('migrate-cancel')
        info = wait_migration(src, FINAL_STATUSES)
        self.assertEqual(info['status'], 'cancelled', info)
        self.assertEqual(src.status(), 'running')
        with open(path, 'rb') as f:
            data = f.read()
        last = frames(data)[-1]
        self.assertEqual(last[1], 0x000f)       # ERROR
        self.assertEqual(struct.unpack('>I', data[last[0] + 8:
                                                  last[0] + 12])[0], 7)
        dst = self.restore('dst', 'file:' + path, exit_on_error=False)
        dinfo = wait_migration(dst, FINAL_STATUSES)
        self.assertEqual(dinfo['status'], 'failed', dinfo)
        self.assertIn('source reported peer error (cancelled)',
                      dinfo['error-desc'])
        self.assertEqual(dst.status(), 'inmigrate')
        self.quit_ok(dst)
        self.quit_ok(src)

    def test_v4_preamble_without_manifest_on_file(self):
        """QEVM v4 followed by anything but MANIFEST is a live stream, which
        a file cannot carry: refused before any state is read."""
        path = os.path.join(self.tmp, 'live.v4')
        with open(path, 'wb') as f:
            f.write(V4 + b'\x00\x01\x00\x01\x00\x00\x00\x00')
        dst = self.restore('dst', 'file:' + path, exit_on_error=False)
        info = wait_migration(dst, FINAL_STATUSES)
        self.assertEqual(info['status'], 'failed', info)
        self.assertIn('cannot be read from a one-way transport',
                      info['error-desc'])
        self.assertEqual(dst.status(), 'inmigrate')
        self.quit_ok(dst)


if __name__ == '__main__':
    unittest.main(verbosity=2)
