#!/usr/bin/env python3
"""Migrations that end early: migrate-cancel and kill -9 of either side in
the middle of the RAM transfer.  The source must come back in its previous
run state with its guest untouched, and stay able to migrate again.

The source's RAM comes from a file with no zero page and max-bandwidth
throttles the transfer, so the migration is still active when the test
interrupts it."""

import os
import signal
import socket
import threading
import time
import unittest

from vmlib import (FINAL_STATUSES, MiB, VmTestCase, channels,
                   make_memory_file, migrate_args, scaled, tcp_addr,
                   wait_migration, wait_transferred)

RAM = 128 * MiB
BANDWIDTH = 16 * MiB        # RAM takes ~8 s: plenty of time to interrupt


class InterruptedCase(VmTestCase):

    def setUp(self):
        super().setUp()
        self.memfile = make_memory_file(os.path.join(self.tmp, 'ram'), RAM)

    def source(self, *extra):
        src = self.vm('src', '--memory', '128M', '--memory-file',
                      self.memfile, *extra)
        src.execute('migrate-set-parameters', {'max-bandwidth': BANDWIDTH})
        return src

    def start(self, src, **kw):
        dst, addr = self.incoming('dst', '--memory', '128M', **kw)
        src.execute('migrate', migrate_args(addr))
        info = wait_transferred(src, 4 * MiB)
        self.assertEqual(wait_migration(dst, ('active',))['status'],
                         'active')
        return dst, info

    def migrate_again(self, src, name='dst2'):
        """The source is still a working VM: migrate it for real now."""
        src.execute('migrate-set-parameters', {'max-bandwidth': 0})
        dst, addr = self.incoming(name, '--memory', '128M')
        src.execute('migrate', migrate_args(addr))
        info = wait_migration(src, FINAL_STATUSES)
        self.assertEqual(info['status'], 'completed', info)
        self.assertNotIn('error-desc', info)
        self.assertEqual(info['ram']['total'], RAM)
        self.assertEqual(src.status(), 'postmigrate')
        # DONE reaches the source before the destination has switched
        # its run state: wait for its own end of the migration first.
        dinfo = wait_migration(dst, FINAL_STATUSES)
        self.assertEqual(dinfo['status'], 'completed', dinfo)
        self.assertIn(dst.status(), ('running', 'paused'))
        self.assertEqual(dst.digest(), src.digest())
        self.quit_ok(dst)

    def workload_moves(self, vm):
        d1 = vm.digest()
        deadline = time.monotonic() + scaled(5)
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if vm.digest() != d1:
                return True
        return False


class CancelTest(InterruptedCase):

    def test_cancel_idle_guest(self):
        src = self.source()
        before = src.digest()
        dst, info = self.start(src)
        self.assertLess(info['ram']['transferred'], RAM)
        self.assertEqual(src.execute('migrate-cancel'), {})
        info = wait_migration(src, FINAL_STATUSES)
        self.assertEqual(info['status'], 'cancelled', info)
        self.assertLess(info['ram']['transferred'], RAM)
        src.qmp.wait_event('MIGRATION', {'status': 'cancelled'},
                           timeout=scaled(5))
        self.assertEqual(src.status(), 'running')
        self.assertEqual(src.digest(), before)
        # the destination fails and exits (exit-on-error by default)
        self.assertEqual(dst.wait_exit(), 1, dst.stderr())
        self.assertIn('cancel', dst.stderr())
        # cancelling nothing is not an error
        self.assertEqual(src.execute('migrate-cancel'), {})
        self.assertEqual(src.query_migrate()['status'], 'cancelled')
        self.migrate_again(src)
        self.quit_ok(src)

    def test_cancel_running_workload(self):
        src = self.source('--workload', 'dirty-rate=2000')
        dst, _ = self.start(src, exit_on_error=False)
        src.execute('migrate-cancel')
        info = wait_migration(src, FINAL_STATUSES)
        self.assertEqual(info['status'], 'cancelled', info)
        self.assertEqual(src.status(), 'running')
        self.assertTrue(self.workload_moves(src), 'the guest is not running')
        # exit-on-error false: the destination stays, failed, inmigrate
        dinfo = wait_migration(dst, FINAL_STATUSES)
        self.assertEqual(dinfo['status'], 'failed', dinfo)
        self.assertIn('cancel', dinfo['error-desc'])
        self.assertEqual(dst.status(), 'inmigrate')
        d = dst.digest()
        time.sleep(0.1)
        self.assertEqual(dst.digest(), d)
        self.quit_ok(dst)
        self.quit_ok(src)

    def test_cancel_paused_source_stays_paused(self):
        src = self.source('--workload', 'dirty-rate=2000')
        src.execute('stop')
        before = src.digest()
        dst, _ = self.start(src)
        src.execute('migrate-cancel')
        info = wait_migration(src, FINAL_STATUSES)
        self.assertEqual(info['status'], 'cancelled', info)
        self.assertEqual(src.status(), 'paused')
        self.assertEqual(src.digest(), before)
        self.assertEqual(dst.wait_exit(), 1)
        src.execute('cont')
        self.assertEqual(src.status(), 'running')
        self.quit_ok(src)


class KillTest(InterruptedCase):

    def test_kill9_destination(self):
        src = self.source()
        before = src.digest()
        dst, _ = self.start(src)
        dst.kill(signal.SIGKILL)
        self.assertEqual(dst.wait_exit(), -signal.SIGKILL)
        info = wait_migration(src, FINAL_STATUSES)
        self.assertEqual(info['status'], 'failed', info)
        self.assertTrue(info.get('error-desc'), info)
        self.assertLess(info['ram']['transferred'], RAM)
        src.qmp.wait_event('MIGRATION', {'status': 'failed'},
                           timeout=scaled(5))
        self.assertEqual(src.status(), 'running')
        self.assertEqual(src.digest(), before)
        self.migrate_again(src)
        self.quit_ok(src)

    def test_kill9_destination_paused_source(self):
        src = self.source('-S')
        before = src.digest()
        dst, _ = self.start(src, transport='unix')
        dst.kill(signal.SIGKILL)
        info = wait_migration(src, FINAL_STATUSES)
        self.assertEqual(info['status'], 'failed', info)
        self.assertTrue(info.get('error-desc'), info)
        self.assertEqual(src.status(), 'prelaunch')
        self.assertEqual(src.digest(), before)
        self.quit_ok(src)

    def test_kill9_source(self):
        """The destination sees the stream end: it fails and exits 1, or,
        with exit-on-error false, stays in inmigrate."""
        for exit_on_error in (True, False):
            with self.subTest(exit_on_error=exit_on_error):
                src = self.vm('src-%s' % exit_on_error, '--memory', '128M',
                              '--memory-file', self.memfile)
                src.execute('migrate-set-parameters',
                            {'max-bandwidth': BANDWIDTH})
                dst, addr = self.incoming('dst-%s' % exit_on_error,
                                          '--memory', '128M',
                                          exit_on_error=exit_on_error)
                dst_before = dst.digest()
                src.execute('migrate', migrate_args(addr))
                wait_transferred(src, 4 * MiB)
                src.kill(signal.SIGKILL)
                self.assertEqual(src.wait_exit(), -signal.SIGKILL)
                if exit_on_error:
                    self.assertEqual(dst.wait_exit(), 1)
                    self.assertIn('load of migration failed', dst.stderr())
                else:
                    dinfo = wait_migration(dst, FINAL_STATUSES)
                    self.assertEqual(dinfo['status'], 'failed', dinfo)
                    self.assertTrue(dinfo.get('error-desc'))
                    self.assertEqual(dst.status(), 'inmigrate')
                    # partly loaded RAM, but the guest never started
                    self.assertNotEqual(dst.digest(), dst_before)
                    self.quit_ok(dst)


class ShutdownTest(InterruptedCase):
    """Ending a process in the middle of a migration: it exits 0 (so a
    sanitizer build reports no leak on that path) and the peer copes."""

    def test_quit_source_mid_migration(self):
        src = self.source()
        dst, _ = self.start(src)
        self.quit_ok(src)
        self.assertEqual(dst.wait_exit(), 1)
        self.assertIn('cancelled', dst.stderr())

    def test_sigterm_source_mid_migration(self):
        src = self.source('--workload', 'dirty-rate=1000')
        dst, _ = self.start(src)
        src.kill(signal.SIGTERM)
        self.assertEqual(src.wait_exit(), 0, src.stderr())
        self.assertEqual(dst.wait_exit(), 1)

    def test_quit_destination_mid_migration(self):
        src = self.source()
        before = src.digest()
        dst, _ = self.start(src)
        self.quit_ok(dst)
        info = wait_migration(src, FINAL_STATUSES)
        self.assertEqual(info['status'], 'failed', info)
        # The destination says why it stopped, not just a closed socket.
        self.assertIn('shutting down', info.get('error-desc', ''), info)
        self.assertEqual(src.status(), 'running')
        self.assertEqual(src.digest(), before)
        self.migrate_again(src)
        self.quit_ok(src)

    def test_destination_retries_after_failure(self):
        """exit-on-error false: after a source died mid-way, the same
        destination takes a new migration and ends with its guest."""
        src = self.source()
        dst, addr = self.incoming('dst', '--memory', '128M',
                                  exit_on_error=False)
        src.execute('migrate', migrate_args(addr))
        wait_transferred(src, 4 * MiB)
        src.kill(signal.SIGKILL)
        self.assertEqual(wait_migration(dst, FINAL_STATUSES)['status'],
                         'failed')
        self.assertEqual(dst.status(), 'inmigrate')
        src2 = self.vm('src2', '--memory', '128M', '--workload',
                       'dirty-rate=1000')
        dst.execute('migrate-incoming', {'channels': channels(
            tcp_addr('127.0.0.1', 0))})
        self.assertEqual(dst.query_migrate()['status'], 'setup')
        src2.execute('migrate', migrate_args(
            tcp_addr('127.0.0.1', dst.incoming_port())))
        info = wait_migration(src2, FINAL_STATUSES)
        self.assertEqual(info['status'], 'completed', info)
        self.assertEqual(wait_migration(dst, FINAL_STATUSES)['status'],
                         'completed')
        self.assertEqual(src2.status(), 'postmigrate')
        self.assertEqual(dst.status(), 'running')
        # every page of the half-loaded first attempt was overwritten
        self.assertEqual(dst.digest(), src2.digest())
        self.quit_ok(src2)
        self.quit_ok(dst)


class RunStateDuringMigrationTest(InterruptedCase):

    def test_stop_during_migration(self):
        """'stop' while RAM moves: the destination ends paused, and the
        throttle held (the transfer took about RAM / max-bandwidth)."""
        src = self.source('--workload', 'dirty-rate=1000')
        bandwidth = 64 * MiB
        src.execute('migrate-set-parameters', {'max-bandwidth': bandwidth})
        dst, _ = self.start(src)
        src.execute('stop')
        self.assertEqual(src.status(), 'paused')
        info = wait_migration(src, FINAL_STATUSES)
        self.assertEqual(info['status'], 'completed', info)
        self.assertGreaterEqual(info['total-time'],
                                0.8 * 1000 * RAM / bandwidth, info)
        self.assertEqual(src.status(), 'postmigrate')
        self.assertEqual(dst.status(), 'paused')
        self.assertEqual(dst.digest(), src.digest())
        self.quit_ok(src)
        self.quit_ok(dst)


class PeerTest(VmTestCase):
    """Peers that are not a well-behaved mig2-vm, played by the test."""

    def listener(self):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(ls.close)
        ls.bind(('127.0.0.1', 0))
        ls.listen(1)
        return ls, ls.getsockname()[1]

    def test_source_to_destination_that_closes(self):
        """An old destination that drops a v4 preamble: the source says
        so, before any RAM, and keeps its guest."""
        ls, port = self.listener()

        def serve():
            c, _ = ls.accept()
            c.recv(64)
            c.close()
        src = self.vm('src', '--memory', '64M', '--workload',
                      'dirty-rate=1000')
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        src.execute('stop')
        before = src.digest()
        src.execute('migrate', migrate_args(tcp_addr('127.0.0.1', port)))
        info = wait_migration(src, FINAL_STATUSES)
        self.assertFailedBeforeRam(info)
        self.assertIn('predates migration protocol v2', info['error-desc'])
        self.assertEqual(src.status(), 'paused')
        self.assertEqual(src.digest(), before)
        t.join(scaled(5))
        self.quit_ok(src)

    def test_source_to_silent_destination(self):
        """A destination that accepts and never answers: the stall
        deadline (x-stall-timeout) ends the handshake."""
        ls, port = self.listener()
        src = self.vm('src', '--memory', '64M')
        before = src.digest()
        src.execute('migrate-set-parameters', {'x-stall-timeout': 500})
        t0 = time.monotonic()
        src.execute('migrate', migrate_args(tcp_addr('127.0.0.1', port)))
        info = wait_migration(src, FINAL_STATUSES)
        self.assertGreaterEqual(time.monotonic() - t0, 0.4)
        self.assertFailedBeforeRam(info)
        self.assertIn('stall', info['error-desc'])
        self.assertEqual(src.status(), 'running')
        self.assertEqual(src.digest(), before)
        self.quit_ok(src)

    def test_destination_refuses_bad_streams(self):
        """Bad magic or a short preamble: not a source, closed without a
        word while the destination keeps waiting (spec 3.1).  An unknown
        version: closed without a word, the migration fails.  A malformed
        v4 handshake or an unknown critical frame: answered with an ERROR
        frame.  The destination never loads anything and stays
        (exit-on-error false) or exits 1."""
        cases = [
            (b'HELLO WORLD!', None, False),
            (b'QEVM\0\0\0\5junk', 'version 5', False),
            (b'QEV', None, False),
            (b'QEVM\0\0\0\4\x00\x01\x00\x01\x00\x00\x00\x04abcd',
             'malformed src-hello', True),
            (b'QEVM\0\0\0\4\x7f\x01\x00\x01\x00\x00\x00\x00',
             'critical frame type 0x7f01', True),
        ]
        for i, (payload, reason, answers) in enumerate(cases):
            with self.subTest(reason=reason):
                stay = i % 2 == 0
                dst, addr = self.incoming('dst%d' % i, '--memory', '64M',
                                          chan='main', exit_on_error=not stay)
                before = dst.digest()
                s = socket.create_connection(('127.0.0.1',
                                              int(addr['port'])))
                try:
                    s.sendall(payload)
                    s.shutdown(socket.SHUT_WR)
                except OSError:
                    pass        # it may have closed on us already
                s.settimeout(scaled(10))
                data = b''
                try:
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                except OSError:
                    pass
                s.close()
                if answers:
                    # an ERROR frame: type 0x000f, CRITICAL
                    self.assertEqual(data[:4], b'\x00\x0f\x00\x01', data)
                else:
                    self.assertEqual(data, b'')
                if reason is None:
                    # Not a source: the destination still waits for one.
                    time.sleep(0.3)
                    self.assertEqual(dst.query_migrate()['status'], 'setup')
                    self.assertEqual(dst.status(), 'inmigrate')
                    self.assertEqual(dst.digest(), before)
                    self.quit_ok(dst)
                elif stay:
                    dinfo = wait_migration(dst, FINAL_STATUSES)
                    self.assertEqual(dinfo['status'], 'failed', dinfo)
                    self.assertIn(reason, dinfo['error-desc'])
                    self.assertEqual(dst.status(), 'inmigrate')
                    self.assertEqual(dst.digest(), before)
                    self.quit_ok(dst)
                else:
                    self.assertEqual(dst.wait_exit(), 1)
                    self.assertIn(reason, dst.stderr())


if __name__ == '__main__':
    unittest.main(verbosity=2)
