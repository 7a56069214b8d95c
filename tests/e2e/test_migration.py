#!/usr/bin/env python3
"""End-to-end migrations between two mig2-vm processes that succeed:
protocol v2 (channel-type handshake) and the legacy v3 stream, over TCP and
unix sockets, idle and with a guest workload, and the run-state carry-over.
Every test checks the run state and the guest digest of both sides."""

import os
import subprocess
import time
import unittest

from vmlib import (FINAL_STATUSES, MIG2CTL, MiB, VmTestCase, capability,
                   handshake_info, make_memory_file, migrate_args, scaled,
                   wait_migration)

MEM = 64 * MiB
WORKLOAD = ('--workload', 'dirty-rate=2000')


class MigrationCase(VmTestCase):

    def check_stats(self, info, ram_size=MEM):
        self.assertEqual(info['status'], 'completed')
        ram = info['ram']
        self.assertEqual(ram['total'], ram_size, info)
        self.assertEqual(ram['remaining'], 0, info)
        self.assertGreaterEqual(ram['dirty-sync-count'], 1, info)
        # every page went at least once, as data or as a zero page
        self.assertGreaterEqual(ram['normal'] + ram['duplicate'],
                                ram_size // 4096, info)
        self.assertEqual(ram['normal-bytes'], ram['normal'] * 4096, info)
        self.assertGreater(ram['transferred'], 0, info)
        self.assertIn('downtime', info)
        self.assertGreaterEqual(info['downtime'], 0)
        self.assertGreaterEqual(info['total-time'], info['downtime'])
        self.assertGreaterEqual(info['total-time'], info['setup-time'])
        self.assertGreaterEqual(ram['mbps'], 0)

    def check_source_done(self, src, was_running=True):
        """A completed source: postmigrate, guest stopped (stable digest),
        MIGRATION events up to completed (and STOP if it was running)."""
        self.assertEqual(src.status(), 'postmigrate')
        d = src.digest()
        time.sleep(0.05)
        self.assertEqual(src.digest(), d, 'source digest moves after '
                         'completion')
        src.qmp.wait_event('MIGRATION', {'status': 'completed'},
                           timeout=scaled(5))
        if was_running:
            src.qmp.wait_event('STOP', timeout=scaled(5))
        return d

    def workload_moves(self, vm):
        d1 = vm.digest()
        deadline = time.monotonic() + scaled(5)
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if vm.digest() != d1:
                return True
        return False


class V2Test(MigrationCase):
    """Protocol v2: QEVM v4 and the handshake before any state moves."""

    def v2(self, transport, workload):
        extra = WORKLOAD if workload else ()
        src = self.vm('src', '--memory', '64M', *extra)
        dst, addr = self.incoming('dst', '--memory', '64M',
                                  transport=transport)
        self.assertEqual(src.status(), 'running')
        self.assertEqual(dst.status(), 'inmigrate')
        before = src.digest()
        if workload:
            self.assertTrue(self.workload_moves(src),
                            'the workload does not change the guest')
        info, _ = self.migrate(src, dst, addr)
        self.check_stats(info)
        if workload:
            self.assertGreater(info['ram']['normal'], 0, info)
        after = self.check_source_done(src)
        if not workload:
            self.assertEqual(after, before)
        self.assertEqual(dst.status(), 'running')
        dst.qmp.wait_event('RESUME', timeout=scaled(5))
        self.assertEqual(dst.digest(), after)
        hs = handshake_info(src)
        self.assertEqual(hs['revision'], 2)
        self.assertEqual(hs['round-trips'], 1)
        self.assertEqual(hs['state'], 'complete')
        dhs = handshake_info(dst)
        self.assertEqual(dhs['role'], 'destination')
        self.assertEqual(dhs['transcript-hash'], hs['transcript-hash'])
        self.assertIn('mig2-vm', hs['peer-build'])
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_v2_tcp_idle(self):
        self.v2('tcp', workload=False)

    def test_v2_tcp_workload(self):
        self.v2('tcp', workload=True)

    def test_v2_unix_idle(self):
        self.v2('unix', workload=False)

    def test_v2_unix_workload(self):
        self.v2('unix', workload=True)

    def test_v2_many_devices(self):
        """3,000 devices of two kinds, each with state of its own, move
        with the guest running and ticking them: every one arrives (the
        digests cover device state) and both sides list them all.  The
        device lookups, the DEVICE frames and the handshake snapshot
        once cost time quadratic in the device count."""
        devs = []
        for i in range(1500):
            devs += ['--device', 'serial,baud=%d' % (50 + i),
                     '--device', 'rtc,base=%d' % (1700000000 + i)]
        src = self.vm('src', '--memory', '16M', *devs, *WORKLOAD)
        dst, addr = self.incoming('dst', '--memory', '16M', *devs)
        self.assertTrue(self.workload_moves(src))
        info, _ = self.migrate(src, dst, addr)
        after = self.check_source_done(src)
        self.assertEqual(dst.digest(), after)
        for vm in (src, dst):
            hs = handshake_info(vm)
            self.assertEqual(hs['state'], 'complete')
            ids = {(d['id'], d['instance'])
                   for d in hs['device-versions']}
            self.assertEqual(len(ids), len(hs['device-versions']))
            self.assertIn(('serial', 1500), ids)
            self.assertIn(('rtc', 1500), ids)
            self.assertNotIn(('serial', 1501), ids)
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_v2_file_backed_ram_with_mig2ctl_progress(self):
        """Guest RAM from --memory-file (every page data), watched with
        mig2ctl migrate-status, which exits 0 on completion."""
        mem = make_memory_file(os.path.join(self.tmp, 'ram'), MEM)
        src = self.vm('src', '--memory', '64M', '--memory-file', mem,
                      *WORKLOAD)
        dst, addr = self.incoming('dst', '--memory', '64M')
        src.execute('migrate', migrate_args(addr))
        ctl = subprocess.run([MIG2CTL, '--timeout', str(int(scaled(60))),
                              '--interval', '0.1', src.qmp_path,
                              'migrate-status'],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             timeout=scaled(90))
        out = ctl.stdout.decode()
        self.assertEqual(ctl.returncode, 0, out + ctl.stderr.decode())
        self.assertIn('status: completed', out)
        info = wait_migration(src, FINAL_STATUSES)
        self.check_stats(info)
        self.assertGreaterEqual(info['ram']['normal'], MEM // 4096, info)
        after = self.check_source_done(src)
        wait_migration(dst, FINAL_STATUSES)
        self.assertEqual(dst.status(), 'running')
        self.assertEqual(dst.digest(), after)
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_v2_workload_destination_started_paused(self):
        """-S on the destination: it ends paused even though the source
        ran; cont starts its guest (its own workload moves the digest)."""
        src = self.vm('src', '--memory', '64M', *WORKLOAD)
        dst, addr = self.incoming('dst', '--memory', '64M', '-S', *WORKLOAD)
        info, _ = self.migrate(src, dst, addr)
        self.check_stats(info)
        after = self.check_source_done(src)
        self.assertEqual(dst.status(), 'paused')
        self.assertEqual(dst.digest(), after)
        dst.execute('cont')
        self.assertEqual(dst.status(), 'running')
        self.assertTrue(self.workload_moves(dst))
        self.assertEqual(src.status(), 'postmigrate')
        self.assertEqual(src.digest(), after)
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_v2_paused_source_carries_paused(self):
        """A source stopped with 'stop' migrates; the destination ends
        paused (globalstate), with the digest the source had when stopped."""
        src = self.vm('src', '--memory', '64M', *WORKLOAD)
        dst, addr = self.incoming('dst', '--memory', '64M')
        src.execute('stop')
        self.assertEqual(src.status(), 'paused')
        before = src.execute('x-query-guest-digest')
        info, _ = self.migrate(src, dst, addr)
        self.check_stats(info)
        after = self.check_source_done(src, was_running=False)
        # the guest did not run; only globalstate took the run state
        self.assertEqual(src.execute('x-query-guest-digest')['ram'],
                         before['ram'])
        self.assertEqual(dst.status(), 'paused')
        self.assertEqual(dst.digest(), after)
        dst.execute('cont')
        self.assertEqual(dst.status(), 'running')
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_v2_prelaunch_source_carries_prelaunch(self):
        """-S on the source (prelaunch): the destination ends prelaunch."""
        src = self.vm('src', '--memory', '64M', '-S', *WORKLOAD)
        dst, addr = self.incoming('dst', '--memory', '64M')
        self.assertEqual(src.status(), 'prelaunch')
        before = src.digest()
        info, _ = self.migrate(src, dst, addr)
        self.check_stats(info)
        self.assertEqual(self.check_source_done(src, was_running=False),
                         before)
        self.assertEqual(dst.status(), 'prelaunch')
        self.assertEqual(dst.digest(), before)
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_v2_destination_events(self):
        """The destination emits MIGRATION events through to completed and
        does not need any capability set."""
        src = self.vm('src', '--memory', '64M')
        dst, addr = self.incoming('dst', '--memory', '64M')
        self.assertFalse(capability(dst, 'events'))
        self.migrate(src, dst, addr)
        for st in ('active', 'completed'):
            dst.qmp.wait_event('MIGRATION', {'status': st}, timeout=scaled(5))
        after = self.check_source_done(src)
        self.assertEqual(dst.digest(), after)
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_v2_chain_a_b_c(self):
        """A destination that took over is a full VM: it migrates on."""
        a = self.vm('a', '--memory', '64M', *WORKLOAD)
        b, addr = self.incoming('b', '--memory', '64M', *WORKLOAD)
        self.migrate(a, b, addr)
        a_after = self.check_source_done(a)
        self.assertEqual(b.status(), 'running')
        self.assertTrue(self.workload_moves(b))
        c, addr = self.incoming('c', '--memory', '64M', transport='unix')
        info, _ = self.migrate(b, c, addr)
        self.check_stats(info)
        self.assertGreater(info['ram']['normal'], 0, info)
        b_after = self.check_source_done(b)
        self.assertNotEqual(b_after, a_after)
        self.assertEqual(c.status(), 'running')
        self.assertEqual(c.digest(), b_after)
        self.assertEqual(handshake_info(b)['role'], 'source')
        self.quit_ok(a)
        self.quit_ok(b)
        self.quit_ok(c)

    def test_v2_non_converging_guest_forced_switchover(self):
        """A guest that dirties RAM faster than the bandwidth limit never
        fits the downtime limit: after x-max-dirty-rounds rounds the
        source switches over anyway, and nothing is lost."""
        mem = make_memory_file(os.path.join(self.tmp, 'ram'), 32 * MiB)
        src = self.vm('src', '--memory', '32M', '--memory-file', mem,
                      '--workload', 'dirty-rate=100000')
        src.execute('migrate-set-parameters', {
            'max-bandwidth': 64 * MiB, 'x-max-dirty-rounds': 3,
            'downtime-limit': 10})
        dst, addr = self.incoming('dst', '--memory', '32M')
        info, _ = self.migrate(src, dst, addr)
        self.check_stats(info, 32 * MiB)
        self.assertEqual(info['ram']['dirty-sync-count'], 3, info)
        # the first pass, then rounds that resent most of RAM
        self.assertGreater(info['ram']['normal'], 2 * 32 * MiB // 4096,
                           info)
        after = self.check_source_done(src)
        self.assertEqual(dst.status(), 'running')
        self.assertEqual(dst.digest(), after)
        self.assertEqual(dst.execute('query-migrate-parameters')
                         ['x-max-dirty-rounds'], 3)
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_machine_none_no_ram(self):
        """-M none: no RAM block, only timer and globalstate (QEMU 7.2's
        layout), over v2 and over the legacy stream."""
        for mode in ('handshake', 'uri'):
            with self.subTest(mode=mode):
                src = self.vm('src-' + mode, '--machine', 'none',
                              '--workload', 'dirty-rate=100')
                dst, addr = self.incoming('dst-' + mode, '--machine', 'none',
                                          chan='main')
                src.execute('migrate', migrate_args(addr, mode))
                info = wait_migration(src, FINAL_STATUSES)
                self.assertEqual(info['status'], 'completed', info)
                self.assertEqual(info['ram']['total'], 0)
                self.assertEqual(info['ram']['normal'], 0)
                self.assertIn('downtime', info)
                after = self.check_source_done(src)
                wait_migration(dst, FINAL_STATUSES)
                self.assertEqual(dst.status(), 'running')
                self.assertEqual(dst.digest(), after)
                if mode == 'handshake':
                    self.assertEqual(
                        [d['id'] for d in
                         handshake_info(dst)['device-versions']],
                        ['timer', 'globalstate'])
                self.quit_ok(src)
                self.quit_ok(dst)


class LegacyTest(MigrationCase):
    """The legacy v3 stream: a plain uri, or channel-type main."""

    def legacy(self, transport, workload):
        extra = WORKLOAD if workload else ()
        src = self.vm('src', '--memory', '64M', *extra)
        if transport == 'tcp':
            dst = self.vm('dst', '--memory', '64M', '--incoming',
                          'tcp:127.0.0.1:0')
            addr = {'transport': 'socket', 'type': 'inet',
                    'host': '127.0.0.1', 'port': str(dst.incoming_port())}
        else:
            path = os.path.join(self.tmp, 'legacy.sock')
            dst = self.vm('dst', '--memory', '64M', '--incoming',
                          'unix:' + path)
            addr = {'transport': 'socket', 'type': 'unix', 'path': path}
        before = src.digest()
        info, _ = self.migrate(src, dst, addr, mode='uri')
        self.check_stats(info)
        after = self.check_source_done(src)
        if not workload:
            self.assertEqual(after, before)
        self.assertEqual(dst.status(), 'running')
        self.assertEqual(dst.digest(), after)
        # no handshake ran
        self.assertNotIn('revision', handshake_info(src))
        self.assertNotIn('revision', handshake_info(dst))
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_legacy_tcp_idle(self):
        self.legacy('tcp', workload=False)

    def test_legacy_tcp_workload(self):
        self.legacy('tcp', workload=True)

    def test_legacy_unix_idle(self):
        self.legacy('unix', workload=False)

    def test_legacy_unix_workload(self):
        self.legacy('unix', workload=True)

    def test_main_destination_accepts_v3(self):
        src = self.vm('src', '--memory', '64M', *WORKLOAD)
        dst, addr = self.incoming('dst', '--memory', '64M', chan='main')
        info, _ = self.migrate(src, dst, addr, mode='main')
        self.check_stats(info)
        after = self.check_source_done(src)
        self.assertEqual(dst.status(), 'running')
        self.assertEqual(dst.digest(), after)
        self.assertNotIn('revision', handshake_info(dst))
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_main_destination_accepts_v4(self):
        src = self.vm('src', '--memory', '64M', *WORKLOAD)
        dst, addr = self.incoming('dst', '--memory', '64M', chan='main',
                                  transport='unix')
        info, _ = self.migrate(src, dst, addr, mode='handshake')
        self.check_stats(info)
        after = self.check_source_done(src)
        self.assertEqual(dst.status(), 'running')
        self.assertEqual(dst.digest(), after)
        self.assertEqual(handshake_info(dst)['revision'], 2)
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_uri_destination_accepts_v4(self):
        """--incoming tcp:... on the command line detects a v4 source."""
        src = self.vm('src', '--memory', '64M')
        dst = self.vm('dst', '--memory', '64M', '--incoming',
                      'tcp:127.0.0.1:0')
        addr = {'transport': 'socket', 'type': 'inet', 'host': '127.0.0.1',
                'port': str(dst.incoming_port())}
        before = src.digest()
        info, _ = self.migrate(src, dst, addr, mode='handshake')
        self.check_stats(info)
        self.assertEqual(self.check_source_done(src), before)
        self.assertEqual(dst.status(), 'running')
        self.assertEqual(dst.digest(), before)
        self.assertEqual(handshake_info(dst)['revision'], 2)
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_handshake_destination_refuses_v3(self):
        """A destination told channel-type handshake refuses a v3 stream
        clearly and exits non-zero; the source (whose stream is larger than
        the socket buffers) fails and keeps running, digest unchanged."""
        mem = make_memory_file(os.path.join(self.tmp, 'ram'), MEM)
        src = self.vm('src', '--memory', '64M', '--memory-file', mem)
        dst, addr = self.incoming('dst', '--memory', '64M',
                                  chan='handshake')
        before = src.digest()
        src.execute('migrate', migrate_args(addr, 'uri'))
        rc = dst.wait_exit()
        self.assertEqual(rc, 1, dst.stderr())
        err = dst.stderr()
        self.assertIn('legacy v3', err)
        self.assertIn("channel-type 'handshake'", err)
        info = wait_migration(src, FINAL_STATUSES)
        self.assertEqual(info['status'], 'failed', info)
        self.assertTrue(info.get('error-desc'), info)
        self.assertEqual(src.status(), 'running')
        self.assertEqual(src.digest(), before)
        self.quit_ok(src)

    def test_handshake_destination_refuses_v3_and_stays(self):
        """The same with exit-on-error false: the destination stays, in
        inmigrate, with status failed and the reason in error-desc, and
        nothing of the stream loaded."""
        mem = make_memory_file(os.path.join(self.tmp, 'ram'), MEM)
        src = self.vm('src', '--memory', '64M', '--memory-file', mem)
        dst, addr = self.incoming('dst', '--memory', '64M',
                                  chan='handshake', exit_on_error=False)
        before = src.digest()
        dst_before = dst.digest()
        src.execute('migrate', migrate_args(addr, 'uri'))
        dinfo = wait_migration(dst, FINAL_STATUSES)
        self.assertEqual(dinfo['status'], 'failed', dinfo)
        self.assertIn('legacy v3', dinfo['error-desc'])
        info = wait_migration(src, FINAL_STATUSES)
        self.assertEqual(info['status'], 'failed', info)
        self.assertEqual(src.status(), 'running')
        self.assertEqual(src.digest(), before)
        self.assertTrue(dst.alive())
        self.assertEqual(dst.status(), 'inmigrate')
        self.assertEqual(dst.digest(), dst_before)
        self.quit_ok(src)
        self.quit_ok(dst)


if __name__ == '__main__':
    unittest.main(verbosity=2)
