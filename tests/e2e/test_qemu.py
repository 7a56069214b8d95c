#!/usr/bin/env python3
"""Interoperability with a real QEMU 7.2 (qemu-system-x86_64 -M none):
legacy v3 streams both ways over tcp and exec, v2 (channel-type handshake)
against a QEMU destination that predates it, a one-way v4 file (MANIFEST)
refused by QEMU at once, a machine type mismatch, sections the
destination does not know (refused by QEMU and mig2-vm in the same words,
and a real -M pc stream refused at its pc.ram block), and a legacy file:
save/restore round trip between two mig2-vm processes.

Skipped as a whole when qemu-system-x86_64 is not installed
(scripts/deps.sh installs qemu-system-x86)."""

import os
import shutil
import signal
import subprocess
import time
import unittest

from vmlib import (FINAL_STATUSES, MiB, VmTestCase, _die_with_parent,
                   connect_qmp, handshake_channels, make_memory_file,
                   scaled, wait_migration, wait_state)

QEMU = shutil.which('qemu-system-x86_64')


class Qemu:
    """A qemu-system-x86_64 process (-M none unless @machine says otherwise,
    @extra: more arguments) with a QMP socket.  Stopped by PID at cleanup
    (SIGTERM, then SIGKILL)."""

    def __init__(self, tmpdir, name, incoming=False, paused=False,
                 machine='none', extra=()):
        self.name = name
        self.qmp_path = os.path.join(tmpdir, name + '.qmp')
        self.stderr_path = os.path.join(tmpdir, name + '.stderr')
        cmd = [QEMU, '-M', machine, '-display', 'none', '-nodefaults',
               '-accel', 'tcg', '-qmp',
               'unix:%s,server=on,wait=off' % self.qmp_path] + list(extra)
        if incoming:
            cmd += ['-incoming', 'defer']
        if paused:
            cmd += ['-S']
        self._stderr = open(self.stderr_path, 'wb')
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=self._stderr,
                                     preexec_fn=_die_with_parent)
        self.qmp = None

    def start(self, timeout=None):
        self.qmp = connect_qmp(
            self, timeout if timeout is not None else scaled(20))
        return self

    def execute(self, name, args=None):
        return self.qmp.execute(name, args)

    def status(self):
        return self.execute('query-status')['status']

    def stderr(self):
        with open(self.stderr_path, 'rb') as f:
            return f.read().decode('utf-8', 'replace')

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError('%s did not exit within %.1f s'
                                 % (self.name, timeout))

    def stop_process(self):
        if self.qmp:
            self.qmp.close()
            self.qmp = None
        for sig, wait in ((signal.SIGTERM, scaled(5)), (signal.SIGKILL, 10)):
            if self.proc.poll() is not None:
                break
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self.proc.wait()
        self._stderr.close()


def qemu_wait_migration(q, timeout=None):
    timeout = timeout if timeout is not None else scaled(20)
    deadline = time.monotonic() + timeout
    info = None
    while time.monotonic() < deadline:
        info = q.execute('query-migrate')
        if info.get('status') in FINAL_STATUSES:
            return info
        time.sleep(0.02)
    raise AssertionError('%s: migration not finished after %.1f s: %r (%s)'
                         % (q.name, timeout, info, q.stderr()))


@unittest.skipIf(QEMU is None, 'qemu-system-x86_64 not found (install '
                 'qemu-system-x86, see scripts/deps.sh)')
class QemuInteropTest(VmTestCase):

    def qemu(self, name, incoming=False, paused=False):
        q = Qemu(self.tmp, name, incoming=incoming, paused=paused)
        self.addCleanup(q.stop_process)
        return q.start()

    # ---- QEMU source -> mig2-vm destination ----

    def test_qemu_to_mig2(self):
        for kind in ('tcp', 'exec'):
            for paused in (False, True):
                with self.subTest(transport=kind, paused=paused):
                    tag = '%s-%s' % (kind, 'S' if paused else 'run')
                    src = self.qemu('qsrc-' + tag, paused=paused)
                    self.assertEqual(src.status(),
                                     'prelaunch' if paused else 'running')
                    dst = self.vm('dst-' + tag, '--machine', 'none',
                                  '--incoming', 'defer')
                    if kind == 'tcp':
                        dst.execute('migrate-incoming',
                                    {'uri': 'tcp:127.0.0.1:0'})
                        src.execute('migrate', {
                            'uri': 'tcp:127.0.0.1:%d' % dst.incoming_port()})
                        self.assertEqual(qemu_wait_migration(src)['status'],
                                         'completed')
                    else:
                        path = os.path.join(self.tmp, tag + '.mig')
                        src.execute('migrate', {'uri': 'exec:cat > ' + path})
                        self.assertEqual(qemu_wait_migration(src)['status'],
                                         'completed')
                        dst.execute('migrate-incoming',
                                    {'uri': 'exec:cat ' + path})
                    info = wait_migration(dst, FINAL_STATUSES,
                                          timeout=scaled(10))
                    self.assertEqual(info['status'], 'completed', info)
                    self.assertEqual(dst.status(),
                                     'prelaunch' if paused else 'running')
                    self.quit_ok(dst)

    # ---- mig2-vm source -> QEMU destination ----

    def test_mig2_to_qemu(self):
        for kind in ('tcp', 'exec'):
            for paused in (False, True):
                with self.subTest(transport=kind, paused=paused):
                    tag = '%s-%s' % (kind, 'S' if paused else 'run')
                    args = ['--machine', 'none'] + (['-S'] if paused else [])
                    src = self.vm('src-' + tag, *args)
                    dst = self.qemu('qdst-' + tag, incoming=True)
                    if kind == 'tcp':
                        # port 0: QEMU reports the port it listens on in
                        # query-migrate's socket-address
                        dst.execute('migrate-incoming',
                                    {'uri': 'tcp:127.0.0.1:0'})
                        port = self._qemu_port(dst)
                        src.execute('migrate', {
                            'uri': 'tcp:127.0.0.1:%d' % port})
                        info = wait_migration(src, FINAL_STATUSES,
                                              timeout=scaled(10))
                        self.assertEqual(info['status'], 'completed', info)
                    else:
                        path = os.path.join(self.tmp, tag + '.mig')
                        src.execute('migrate', {'uri': 'exec:cat > ' + path})
                        info = wait_migration(src, FINAL_STATUSES,
                                              timeout=scaled(10))
                        self.assertEqual(info['status'], 'completed', info)
                        dst.execute('migrate-incoming',
                                    {'uri': 'exec:cat ' + path})
                    info = qemu_wait_migration(dst)
                    self.assertEqual(info['status'], 'completed',
                                     (info, dst.stderr()))
                    self.assertEqual(dst.status(),
                                     'prelaunch' if paused else 'running')
                    self.assertEqual(src.status(), 'postmigrate')
                    self.quit_ok(src)

    def _qemu_port(self, q):
        info = q.execute('query-migrate')
        addrs = info.get('socket-address')
        self.assertTrue(addrs, 'QEMU gave no socket-address: %r' % info)
        return int(addrs[0]['port'])

    # ---- v2 against QEMU 7.2 ----

    def test_handshake_to_qemu_fails_fast(self):
        src = self.vm('src', '--machine', 'none')
        dig = src.digest()
        dst = self.qemu('qdst', incoming=True)
        dst.execute('migrate-incoming', {'uri': 'tcp:127.0.0.1:0'})
        port = self._qemu_port(dst)
        t0 = time.monotonic()
        src.execute('migrate',
                    {'channels': handshake_channels('127.0.0.1', port)})
        self.assertEqual(dst.wait_exit(scaled(5)), 1, dst.stderr())
        self.assertIn('Unsupported migration stream version', dst.stderr())
        info = wait_migration(src, FINAL_STATUSES, timeout=scaled(5))
        self.assertLess(time.monotonic() - t0, scaled(5))
        self.assertFailedBeforeRam(info)
        self.assertIn('likely predates migration protocol v2',
                      info['error-desc'])
        self.assertEqual(src.status(), 'running')
        self.assertEqual(src.digest(), dig)
        self.quit_ok(src)

    def test_v4_file_refused_by_qemu_at_once(self):
        """A one-way v4 file (x-oneway-format v4) fed to QEMU 7.2: it
        rejects the stream version at once and exits, before any section;
        the same guest saved as legacy v3 loads."""
        src = self.vm('src', '--machine', 'none', '-S')
        src.execute('migrate-set-parameters', {'x-oneway-format': 'v4'})
        path = os.path.join(self.tmp, 'none.v4')
        src.execute('migrate', {'uri': 'file:' + path})
        info = wait_migration(src, FINAL_STATUSES, timeout=scaled(10))
        self.assertEqual(info['status'], 'completed', info)
        with open(path, 'rb') as f:
            head = f.read(10)
        self.assertEqual(head, b'QEVM\0\0\0\4\0\5')   # v4, MANIFEST
        dst = self.qemu('qdst', incoming=True)
        t0 = time.monotonic()
        dst.execute('migrate-incoming', {'uri': 'exec:cat ' + path})
        self.assertEqual(dst.wait_exit(scaled(5)), 1, dst.stderr())
        self.assertLess(time.monotonic() - t0, scaled(3))
        err = dst.stderr()
        self.assertIn('qemu-system-x86_64: Unsupported migration stream '
                      'version', err)
        self.assertIn('load of migration failed: Operation not supported',
                      err)
        self.assertNotIn('section', err)
        self.quit_ok(src)

        # control: the default (legacy) format of the same guest loads
        src2 = self.vm('src2', '--machine', 'none', '-S')
        path3 = os.path.join(self.tmp, 'none.v3')
        src2.execute('migrate', {'uri': 'file:' + path3})
        self.assertEqual(wait_migration(src2, FINAL_STATUSES,
                                        timeout=scaled(10))['status'],
                         'completed')
        dst2 = self.qemu('qdst2', incoming=True)
        dst2.execute('migrate-incoming', {'uri': 'exec:cat ' + path3})
        info = qemu_wait_migration(dst2)
        self.assertEqual(info['status'], 'completed', (info, dst2.stderr()))
        self.quit_ok(src2)

    # ---- machine type mismatch ----

    def test_machine_mismatch(self):
        src = self.qemu('qsrc')
        path = os.path.join(self.tmp, 'none.mig')
        src.execute('migrate', {'uri': 'exec:cat > ' + path})
        self.assertEqual(qemu_wait_migration(src)['status'], 'completed')
        msg = "Machine type received is 'none' and local is 'mig2-pc'"
        # exit-on-error false: the error is in query-migrate's error-desc
        dst = self.vm('dst', '--memory', '16M', '--incoming', 'defer')
        dst.execute('migrate-incoming', {'uri': 'exec:cat ' + path,
                                         'exit-on-error': False})
        info = wait_migration(dst, FINAL_STATUSES, timeout=scaled(10))
        self.assertEqual(info['status'], 'failed', info)
        self.assertIn(msg, info.get('error-desc', ''))
        self.assertEqual(dst.status(), 'inmigrate')
        self.quit_ok(dst)
        # by default the destination exits non-zero, like QEMU
        dst2 = self.vm('dst2', '--memory', '16M', '--incoming', 'defer')
        dst2.execute('migrate-incoming', {'uri': 'exec:cat ' + path})
        self.assertEqual(dst2.wait_exit(scaled(10)), 1, dst2.stderr())
        self.assertIn(msg, dst2.stderr())

    # ---- sections the destination does not know ----

    def test_unknown_section_refused_alike(self):
        # A mig2-vm -M none stream with a serial device: QEMU 7.2 -M none
        # and a mig2-vm -M none destination both refuse it, naming the
        # section in the same words.
        src = self.vm('src', '--machine', 'none', '--device', 'serial')
        path = os.path.join(self.tmp, 'serial.mig')
        src.execute('migrate', {'uri': 'file:' + path})
        info = wait_migration(src, FINAL_STATUSES, timeout=scaled(20))
        self.assertEqual(info['status'], 'completed', info)
        msg = "Unknown savevm section or instance 'serial' 0"
        q = Qemu(self.tmp, 'qdst', incoming=True)
        self.addCleanup(q.stop_process)
        q.start()
        q.execute('migrate-incoming', {'uri': 'exec:cat ' + path})
        self.assertNotEqual(q.wait_exit(scaled(20)), 0)
        self.assertIn(msg, q.stderr())
        dst = self.vm('dst', '--machine', 'none', '--incoming', 'defer')
        dst.execute('migrate-incoming', {'uri': 'exec:cat ' + path})
        self.assertEqual(dst.wait_exit(scaled(10)), 1, dst.stderr())
        self.assertIn(msg, dst.stderr())
        self.quit_ok(src)

    def test_qemu_pc_stream_refused_by_section(self):
        # A real QEMU -M pc stream whose machine name is rewritten to
        # 'none': mig2-vm gets past the configuration and refuses the
        # first thing it does not have, the pc.ram block, as QEMU words it.
        src = self.qemu_pc('qpc')
        path = os.path.join(self.tmp, 'pc.mig')
        src.execute('migrate', {'uri': 'exec:cat > ' + path})
        self.assertEqual(qemu_wait_migration(src)['status'], 'completed')
        with open(path, 'rb') as f:
            data = f.read()
        name = data.index(b'pc-i440fx-')
        n = int.from_bytes(data[name - 4:name], 'big')
        patched = os.path.join(self.tmp, 'pc-as-none.mig')
        with open(patched, 'wb') as f:
            f.write(data[:name - 4] + (4).to_bytes(4, 'big') + b'none' +
                    data[name + n:])
        dst = self.vm('dst', '--machine', 'none', '--incoming', 'defer')
        dst.execute('migrate-incoming', {'uri': 'exec:cat ' + patched})
        self.assertEqual(dst.wait_exit(scaled(10)), 1, dst.stderr())
        self.assertIn('Unknown ramblock "pc.ram", cannot accept migration',
                      dst.stderr())

    def qemu_pc(self, name):
        q = Qemu(self.tmp, name, paused=True, machine='pc',
                 extra=('-m', '16'))
        self.addCleanup(q.stop_process)
        return q.start()

    # ---- legacy v3 save/restore between mig2-vm processes ----

    def test_file_roundtrip_memory_file(self):
        mem = make_memory_file(os.path.join(self.tmp, 'ram'), 16 * MiB,
                               seed=7)
        src = self.vm('src', '--memory', '16M', '--memory-file', mem)
        path = os.path.join(self.tmp, 'saved.mig')
        src.execute('migrate', {'uri': 'file:' + path})
        info = wait_migration(src, FINAL_STATUSES, timeout=scaled(20))
        self.assertEqual(info['status'], 'completed', info)
        saved = src.digest()
        with open(path, 'rb') as f:
            self.assertEqual(f.read(8), b'QEVM\0\0\0\3')
        dst = self.vm('dst', '--memory', '16M', '--incoming', 'file:' + path)
        info = wait_migration(dst, FINAL_STATUSES, timeout=scaled(20))
        self.assertEqual(info['status'], 'completed', info)
        self.assertEqual(dst.digest(), saved)
        wait_state(dst, 'running')
        self.quit_ok(src)
        self.quit_ok(dst)


if __name__ == '__main__':
    unittest.main(verbosity=2)
