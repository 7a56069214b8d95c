#!/usr/bin/env python3
"""QMP error handling of mig2-vm: unknown commands and bad arguments get
QEMU's error classes and change nothing; commands that conflict with a
running or finished migration are refused without disturbing it; v2 is
refused on one-way transports before anything is written."""

import json
import os
import socket
import time
import unittest

from vmlib import (FINAL_STATUSES, MiB, Qmp, VmTestCase, capability,
                   channels, free_tcp_port, handshake_channels,
                   handshake_info, make_memory_file, migrate_args, tcp_addr,
                   wait_migration, wait_transferred)

MEM = ('--memory', '64M')


class QmpErrorTest(VmTestCase):

    def assertQmpError(self, vm, name, args=None, cls='GenericError',
                       desc=None):
        rsp = vm.cmd(name, args)
        self.assertIn('error', rsp, '%s %r: %r' % (name, args, rsp))
        self.assertNotIn('return', rsp)
        self.assertEqual(rsp['error']['class'], cls, rsp)
        if desc is not None:
            self.assertIn(desc, rsp['error']['desc'])
        return rsp['error']['desc']

    def unchanged(self, vm, state, dig):
        self.assertEqual(vm.status(), state)
        self.assertEqual(vm.digest(), dig)

    def test_unknown_command(self):
        vm = self.vm('vm', *MEM)
        dig = vm.digest()
        self.assertQmpError(vm, 'x-no-such-command', cls='CommandNotFound',
                            desc='The command x-no-such-command has not '
                                 'been found')
        self.assertQmpError(vm, 'query-migrate-foo', {'a': 1},
                            cls='CommandNotFound')
        self.assertEqual(vm.query_migrate(), {})
        self.unchanged(vm, 'running', dig)
        self.quit_ok(vm)

    def test_bad_arguments(self):
        vm = self.vm('vm', *MEM)
        dig = vm.digest()
        params = vm.execute('query-migrate-parameters')
        caps = vm.execute('query-migrate-capabilities')
        port = free_tcp_port()
        # migrate
        self.assertQmpError(vm, 'migrate', {}, desc="Parameter 'uri' is "
                            "missing")
        self.assertQmpError(vm, 'migrate', {'uri': 5},
                            desc="Invalid parameter type for 'uri'")
        self.assertQmpError(vm, 'migrate', {'uri': 'bogus:1'},
                            desc='Invalid migration URI')
        self.assertQmpError(vm, 'migrate', {'uri': 'tcp:127.0.0.1'},
                            desc='Invalid migration URI')
        self.assertQmpError(vm, 'migrate', {
            'uri': 'tcp:127.0.0.1:%d' % port,
            'channels': handshake_channels('127.0.0.1', port)})
        self.assertQmpError(vm, 'migrate', {'channels': channels(
            tcp_addr('127.0.0.1', port), 'bogus')},
            desc="'channel-type' does not accept value 'bogus'")
        self.assertQmpError(vm, 'migrate', {'channels': 2 * channels(
            tcp_addr('127.0.0.1', port))}, desc='more than one')
        self.assertQmpError(vm, 'migrate', {'channels': [{
            'channel-type': 'handshake',
            'addr': {'transport': 'socket', 'type': 'inet',
                     'host': '127.0.0.1'}}]},
            desc="'addr.port' is missing")
        self.assertQmpError(vm, 'migrate', {
            'uri': 'tcp:127.0.0.1:%d' % port, 'speed': 1},
            desc="Parameter 'speed' is unexpected")
        # migrate-set-parameters
        self.assertQmpError(vm, 'migrate-set-parameters',
                            {'downtime-limit': 'abc'},
                            desc="Invalid parameter type for "
                                 "'downtime-limit', expected: integer")
        self.assertQmpError(vm, 'migrate-set-parameters',
                            {'multifd-compression': 3},
                            desc='expected: string')
        self.assertQmpError(vm, 'migrate-set-parameters',
                            {'no-such-parameter': 1},
                            desc="'no-such-parameter' is unexpected")
        self.assertQmpError(vm, 'migrate-set-parameters',
                            {'downtime-limit': -1})
        self.assertQmpError(vm, 'migrate-set-parameters',
                            {'multifd-channels': 0},
                            desc='between 1 and 255')
        # the registered maximum (spec 8.3.4)
        self.assertQmpError(vm, 'migrate-set-parameters',
                            {'multifd-channels': 256},
                            desc='between 1 and 255')
        # all or nothing: the good one in a bad request is not applied
        self.assertQmpError(vm, 'migrate-set-parameters',
                            {'downtime-limit': 10,
                             'max-bandwidth': 'fast'})
        # migrate-set-capabilities
        self.assertQmpError(vm, 'migrate-set-capabilities', {
            'capabilities': [{'capability': 'no-such-cap', 'state': True}]},
            desc="'capability' does not accept value 'no-such-cap'")
        self.assertQmpError(vm, 'migrate-set-capabilities', {
            'capabilities': [{'capability': 'xbzrle', 'state': True},
                             {'capability': 'downtime-limit',
                              'state': True}]})
        self.assertQmpError(vm, 'migrate-set-capabilities', {
            'capabilities': [{'capability': 'xbzrle', 'state': 'yes'}]})
        self.assertQmpError(vm, 'migrate-set-capabilities', {},
                            desc="Parameter 'capabilities' is missing")
        # other commands
        self.assertQmpError(vm, 'query-status', {'verbose': True},
                            desc="Parameter 'verbose' is unexpected")
        self.assertQmpError(vm, 'migrate-incoming', {
            'uri': 'tcp:127.0.0.1:0', 'exit-on-error': 'no'})
        # nothing changed
        self.assertEqual(vm.execute('query-migrate-parameters'), params)
        self.assertEqual(vm.execute('query-migrate-capabilities'), caps)
        self.assertEqual(vm.query_migrate(), {})
        self.unchanged(vm, 'running', dig)
        self.quit_ok(vm)

    def test_protocol_errors(self):
        """Framing: capabilities negotiation first, parse errors, ids."""
        vm = self.vm('vm', *MEM)
        dig = vm.digest()
        q = Qmp(vm.qmp_path)
        self.addCleanup(q.close)
        self.assertIn('version', q.greeting['QMP'])
        rsp = q.cmd('query-status')
        self.assertEqual(rsp['error']['class'], 'CommandNotFound')
        self.assertIn('qmp_capabilities', rsp['error']['desc'])
        q.negotiate()
        q.send_raw('{"execute": "query-status", "id": \n')
        q.send_raw('}}}\n')
        rsp = q.recv_reply()
        self.assertEqual(rsp['error']['class'], 'GenericError')
        q.send_raw('[1, 2]\n')
        rsp = q.recv_reply()
        self.assertEqual(rsp['error']['class'], 'GenericError')
        q.send_raw(json.dumps({'execute': 'query-status', 'id': 42}) + '\n')
        rsp = q.recv_reply(42)
        self.assertEqual(rsp['return']['status'], 'running')
        q.send_raw(json.dumps({'exec': 'query-status'}) + '\n')
        rsp = q.recv_reply()
        self.assertEqual(rsp['error']['class'], 'GenericError')
        # the main connection is unaffected
        self.unchanged(vm, 'running', dig)
        q.close()
        self.quit_ok(vm)

    def test_migrate_incoming_without_incoming(self):
        vm = self.vm('vm', *MEM)
        dig = vm.digest()
        self.assertQmpError(vm, 'migrate-incoming',
                            {'uri': 'tcp:127.0.0.1:0'},
                            desc="'-incoming' was not specified")
        self.assertQmpError(vm, 'migrate-incoming', {
            'channels': handshake_channels('127.0.0.1', 0)},
            desc="'-incoming' was not specified")
        self.assertEqual(vm.query_migrate(), {})
        self.unchanged(vm, 'running', dig)
        self.quit_ok(vm)

    def test_destination_refuses_migrate_and_second_incoming(self):
        dst, addr = self.incoming('dst', *MEM)
        dig = dst.digest()
        self.assertQmpError(dst, 'migrate', migrate_args(
            tcp_addr('127.0.0.1', free_tcp_port())),
            desc='waiting for an incoming migration')
        self.assertQmpError(dst, 'migrate-incoming',
                            {'uri': 'tcp:127.0.0.1:0'},
                            desc="There's a migration process in progress")
        self.assertEqual(dst.query_migrate()['status'], 'setup')
        self.assertEqual(dst.incoming_port(), int(addr['port']))
        self.unchanged(dst, 'inmigrate', dig)
        # still accepts the migration it waits for
        src = self.vm('src', *MEM)
        src.execute('migrate', migrate_args(addr))
        self.assertEqual(wait_migration(src, FINAL_STATUSES)['status'],
                         'completed')
        wait_migration(dst, FINAL_STATUSES)
        self.assertEqual(dst.status(), 'running')
        self.assertEqual(dst.digest(), src.digest())
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_handshake_refused_on_one_way_transports(self):
        """channel-type handshake with file: or exec: is refused before
        anything is written: no file is created, no command runs."""
        vm = self.vm('vm', *MEM)
        dig = vm.digest()
        out = os.path.join(self.tmp, 'stream')
        marker = os.path.join(self.tmp, 'marker')
        self.assertQmpError(vm, 'migrate', {'channels': channels(
            {'transport': 'file', 'filename': out}, 'handshake')},
            desc='bidirectional')
        self.assertQmpError(vm, 'migrate', {'channels': channels(
            {'transport': 'exec',
             'args': ['sh', '-c', 'touch %s; cat > %s' % (marker, out)]},
            'handshake')}, desc='bidirectional')
        time.sleep(0.2)
        self.assertFalse(os.path.exists(out))
        self.assertFalse(os.path.exists(marker))
        self.assertEqual(vm.query_migrate(), {})
        self.unchanged(vm, 'running', dig)
        # the destination side refuses the same before reading anything
        dst = self.vm('dst', *MEM, '--incoming', 'defer')
        with open(out, 'wb') as f:
            f.write(b'QEVM\0\0\0\4')
        self.assertQmpError(dst, 'migrate-incoming', {'channels': channels(
            {'transport': 'file', 'filename': out}, 'handshake')},
            desc='bidirectional')
        self.assertEqual(dst.status(), 'inmigrate')
        self.quit_ok(dst)
        self.quit_ok(vm)

    def test_legacy_one_way_roundtrip(self):
        """file: and exec: keep the legacy one-way stream: save, then
        restore into a new VM."""
        for kind in ('file', 'exec'):
            with self.subTest(transport=kind):
                src = self.vm('src-' + kind, *MEM, '--workload',
                              'dirty-rate=1000')
                path = os.path.join(self.tmp, 'saved-' + kind)
                if kind == 'file':
                    out, inc = 'file:' + path, 'file:' + path
                else:
                    out, inc = 'exec:cat > ' + path, 'exec:cat ' + path
                src.execute('migrate', {'uri': out})
                info = wait_migration(src, FINAL_STATUSES)
                self.assertEqual(info['status'], 'completed', info)
                self.assertEqual(src.status(), 'postmigrate')
                with open(path, 'rb') as f:
                    self.assertEqual(f.read(8), b'QEVM\0\0\0\3')
                dst = self.vm('dst-' + kind, *MEM, '--incoming', inc)
                self.assertEqual(wait_migration(dst, FINAL_STATUSES)
                                 ['status'], 'completed')
                self.assertEqual(dst.status(), 'running')
                self.assertEqual(dst.digest(), src.digest())
                self.quit_ok(src)
                self.quit_ok(dst)

    def test_migrate_to_nowhere_fails_cleanly(self):
        vm = self.vm('vm', *MEM, '--workload', 'dirty-rate=1000')
        vm.execute('stop')
        dig = vm.digest()
        vm.execute('migrate', {'channels': handshake_channels(
            '127.0.0.1', free_tcp_port())})
        info = wait_migration(vm, FINAL_STATUSES)
        self.assertFailedBeforeRam(info)
        self.assertIn('Failed to connect', info['error-desc'])
        self.unchanged(vm, 'paused', dig)
        self.quit_ok(vm)

    def test_incoming_on_busy_port_can_be_retried(self):
        busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(busy.close)
        busy.bind(('127.0.0.1', 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        dst = self.vm('dst', *MEM, '--incoming', 'defer')
        dig = dst.digest()
        self.assertQmpError(dst, 'migrate-incoming', {
            'channels': handshake_channels('127.0.0.1', port)},
            desc='Failed to bind')
        info = dst.query_migrate()
        self.assertEqual(info['status'], 'failed', info)
        self.assertIn('Failed to bind', info['error-desc'])
        self.unchanged(dst, 'inmigrate', dig)
        # not stuck "in progress": a second try on a free port works
        dst.execute('migrate-incoming', {
            'channels': handshake_channels('127.0.0.1', 0)})
        self.assertEqual(dst.query_migrate()['status'], 'setup')
        src = self.vm('src', *MEM)
        src.execute('migrate', migrate_args(
            tcp_addr('127.0.0.1', dst.incoming_port())))
        self.assertEqual(wait_migration(src, FINAL_STATUSES)['status'],
                         'completed')
        wait_migration(dst, FINAL_STATUSES)
        self.assertEqual(dst.status(), 'running')
        self.assertEqual(dst.digest(), src.digest())
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_new_migration_never_shows_the_previous_status(self):
        """query-migrate right after migrate says 'setup' for the new run,
        not the previous run's 'failed' with its error-desc."""
        silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(silent.close)
        silent.bind(('127.0.0.1', 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        vm = self.vm('vm', *MEM)
        dig = vm.digest()
        for i in range(5):
            vm.execute('migrate', {'channels': handshake_channels(
                '127.0.0.1', free_tcp_port())})
            self.assertEqual(wait_migration(vm, FINAL_STATUSES)['status'],
                             'failed')
            vm.execute('migrate', {'channels': handshake_channels(
                '127.0.0.1', port)})
            info = vm.query_migrate()
            self.assertEqual(info['status'], 'setup', info)
            self.assertNotIn('error-desc', info)
            vm.execute('migrate-cancel')
            info = wait_migration(vm, FINAL_STATUSES)
            self.assertEqual(info['status'], 'cancelled', info)
            self.unchanged(vm, 'running', dig)
        self.quit_ok(vm)


class DuringMigrationTest(VmTestCase):
    """Commands during a migration: queries work, conflicting commands are
    refused, and the migration completes undisturbed."""

    def test_commands_during_migration(self):
        memfile = make_memory_file(os.path.join(self.tmp, 'ram'), 128 * MiB)
        src = self.vm('src', '--memory', '128M', '--memory-file', memfile,
                      '--workload', 'dirty-rate=1000')
        src.execute('migrate-set-parameters', {'max-bandwidth': 48 * MiB})
        dst, addr = self.incoming('dst', '--memory', '128M')
        src.execute('migrate', migrate_args(addr))
        wait_transferred(src, 4 * MiB)
        dst2, addr2 = self.incoming('dst2', '--memory', '128M')
        params = src.execute('query-migrate-parameters')

        # conflicting commands are refused
        for args in (migrate_args(addr2), migrate_args(addr2, 'uri'),
                     migrate_args(addr)):
            rsp = src.cmd('migrate', args)
            self.assertEqual(rsp.get('error', {}).get('desc'),
                             "There's a migration process in progress", rsp)
        rsp = src.cmd('migrate-set-parameters', {'max-bandwidth': 0})
        self.assertEqual(rsp['error']['class'], 'GenericError')
        self.assertIn('in progress', rsp['error']['desc'])
        rsp = src.cmd('migrate-set-capabilities', {'capabilities': [
            {'capability': 'xbzrle', 'state': True}]})
        self.assertIn('in progress', rsp['error']['desc'])
        rsp = dst.cmd('migrate-incoming', {'channels': channels(
            tcp_addr('127.0.0.1', 0))})
        self.assertIn('in progress', rsp['error']['desc'])
        rsp = src.cmd('migrate-incoming', {'uri': 'tcp:127.0.0.1:0'})
        self.assertEqual(rsp['error']['class'], 'GenericError')
        # bad commands are refused
        self.assertEqual(src.cmd('no-such-command')['error']['class'],
                         'CommandNotFound')
        self.assertEqual(src.cmd('migrate', {})['error']['class'],
                         'GenericError')
        # queries work
        info = src.query_migrate()
        self.assertIn(info['status'], ('active', 'device', 'completed'))
        self.assertEqual(info['ram']['total'], 128 * MiB)
        self.assertIn(src.status(), ('running', 'finish-migrate',
                                     'postmigrate'))
        hs = handshake_info(src)
        self.assertEqual(hs['revision'], 2)
        self.assertEqual(hs['state'], 'complete')
        self.assertEqual(src.execute('query-migrate-parameters'), params)
        self.assertFalse(capability(src, 'xbzrle'))
        self.assertEqual(len(src.digest()), 64)
        self.assertIn(dst.query_migrate()['status'], ('active', 'device',
                                                      'completed'))
        self.assertIn(dst.status(), ('inmigrate', 'running'))
        self.assertEqual(handshake_info(dst)['role'], 'destination')
        # the migration was not disturbed: nothing touched dst2
        info = wait_migration(src, FINAL_STATUSES)
        self.assertEqual(info['status'], 'completed', info)
        self.assertGreaterEqual(info['ram']['normal'], 128 * MiB // 4096)
        self.assertEqual(src.status(), 'postmigrate')
        wait_migration(dst, FINAL_STATUSES)
        self.assertEqual(dst.status(), 'running')
        self.assertEqual(dst.digest(), src.digest())
        self.assertEqual(dst2.query_migrate()['status'], 'setup')
        self.assertEqual(dst2.status(), 'inmigrate')
        self.quit_ok(dst2)
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_migrate_after_completion_refused(self):
        src = self.vm('src', *MEM)
        dst, addr = self.incoming('dst', *MEM)
        src.execute('migrate', migrate_args(addr))
        done = wait_migration(src, FINAL_STATUSES)
        self.assertEqual(done['status'], 'completed', done)
        dig = src.digest()
        dst2, addr2 = self.incoming('dst2', *MEM)
        rsp = src.cmd('migrate', migrate_args(addr2))
        self.assertEqual(rsp['error']['class'], 'GenericError')
        self.assertIn('previous migration', rsp['error']['desc'])
        self.assertEqual(src.query_migrate(), done)
        self.assertEqual(src.status(), 'postmigrate')
        self.assertEqual(src.digest(), dig)
        self.assertEqual(dst.status(), 'running')
        self.assertEqual(dst.digest(), dig)
        self.assertEqual(dst2.query_migrate()['status'], 'setup')
        # QEMU lets a source resume its guest after migrating away
        src.execute('cont')
        self.assertEqual(src.status(), 'running')
        self.quit_ok(dst2)
        self.quit_ok(src)
        self.quit_ok(dst)


if __name__ == '__main__':
    unittest.main(verbosity=2)
