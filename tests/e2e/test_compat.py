#!/usr/bin/env python3
"""Compatibility: protocol v2 refuses an incompatible destination before
any RAM moves and names every problem; a newer source migrates to an older
destination at lower device versions; the destination takes on the
source's parameters (within its policy)."""

import subprocess
import unittest

from vmlib import (FINAL_STATUSES, MIG2_VM, MiB, VmTestCase, capability,
                   config_entry, handshake_info, migrate_args, scaled,
                   wait_migration)

MEM = ('--memory', '64M')


class CompatFailureTest(VmTestCase):
    """Each case: the source fails with status failed before any page
    went (normal and duplicate 0), stays in its run state with its digest,
    and its error-desc and x-query-handshake name every problem."""

    def refuse(self, src_args, dst_args, problems, exit_on_error=None,
               src_paused=False):
        """Migrate src -> dst, expect a refusal with exactly @problems
        [(kind, path, expected, actual)], in order.  Returns (src, dst)."""
        src = self.vm('src', *src_args)
        dst, addr = self.incoming('dst', *dst_args,
                                  exit_on_error=exit_on_error)
        if src_paused:
            src.execute('stop')
        state = src.status()
        before = src.digest()
        dst_before = dst.digest()
        src.execute('migrate', migrate_args(addr))
        info = wait_migration(src, FINAL_STATUSES)
        self.assertFailedBeforeRam(info)
        desc = info['error-desc']
        self.assertIn('incompatible', desc)
        self.assertIn('%d problem' % len(problems), desc)
        for kind, path, expected, actual in problems:
            self.assertIn('%s: %s: expected %s, got %s'
                          % (kind, path, expected, actual), desc)
        hs = handshake_info(src)
        self.assertEqual(hs['role'], 'source')
        self.assertEqual(hs['state'], 'failed')
        self.assertEqual(hs['error-origin'], 'peer')
        got = [(p['kind'], p['path'], p['expected'], p['actual'])
               for p in hs['problems']]
        self.assertEqual(got, list(problems))
        # the source's guest is untouched and keeps its run state
        self.assertEqual(src.status(), state)
        self.assertEqual(src.digest(), before)
        self.assertEqual(src.query_migrate()['ram']['transferred'], 0)

        if exit_on_error is False:
            dinfo = wait_migration(dst, FINAL_STATUSES)
            self.assertEqual(dinfo['status'], 'failed', dinfo)
            self.assertIn('incompatible', dinfo['error-desc'])
            self.assertTrue(dst.alive())
            self.assertEqual(dst.status(), 'inmigrate')
            self.assertEqual(dst.digest(), dst_before)
            dhs = handshake_info(dst)
            self.assertEqual(dhs['role'], 'destination')
            self.assertEqual(dhs['error-origin'], 'local')
            self.assertEqual([(p['kind'], p['path'], p['expected'],
                               p['actual']) for p in dhs['problems']],
                             list(problems))
            self.quit_ok(dst)
        else:
            rc = dst.wait_exit()
            self.assertEqual(rc, 1, dst.stderr())
            err = dst.stderr()
            self.assertIn('load of migration failed', err)
            for _, path, _, _ in problems:
                self.assertIn(path, err)
        # the source can still run its guest
        if src_paused:
            src.execute('cont')
        self.assertEqual(src.status(), 'running')
        self.quit_ok(src)
        return src, dst

    def test_missing_device_e1000(self):
        self.refuse(MEM + ('--device', 'e1000'), MEM,
                    [('device-missing', 'devices/e1000@0', 'absent',
                      'versions 1..2')])

    def test_missing_second_serial(self):
        self.refuse(MEM + ('--device', 'serial'), MEM,
                    [('device-missing', 'devices/serial@1', 'absent',
                      'versions 2..3')])

    def test_unexpected_device_on_destination(self):
        self.refuse(MEM, MEM + ('--device', 'e1000,id=nic1'),
                    [('device-unexpected', 'devices/nic1@0',
                      'versions 1..2', 'absent')])

    def test_different_machine(self):
        self.refuse(MEM + ('--machine', 'mig2-q35'),
                    MEM + ('--machine', 'mig2-pc'),
                    [('machine', 'machine', 'mig2-pc', 'mig2-q35')])

    def test_different_ram_size(self):
        self.refuse(('--memory', '128M'), MEM,
                    [('ram-block-size', 'ram-blocks/pc.ram/size',
                      str(64 * MiB), str(128 * MiB))])

    def test_older_destination_rtc_version(self):
        """2.0 saves rtc only at v3; 1.0 loads up to v2."""
        self.refuse(MEM, MEM + ('--release', '1.0'),
                    [('device-version', 'devices/rtc@0/version', '1..2',
                      '3..3')])

    def test_needed_subsection_unknown_serial_fifo(self):
        """serial,fifo=on needs serial/fifo, which 1.0 does not know."""
        self.refuse(MEM + ('--nodefaults', '--device', 'serial,fifo=on'),
                    MEM + ('--nodefaults', '--release', '1.0',
                           '--device', 'serial'),
                    [('subsection-unknown',
                      'devices/serial@0/subsections/serial/fifo',
                      'unknown to the destination', 'needed')])

    def test_needed_subsection_unknown_rss_inflight(self):
        """virtio-net rss=on and virtio-blk with requests in flight to 1.0,
        which knows neither subsection (versions alone would do: v1)."""
        self.refuse(MEM + ('--nodefaults', '--device', 'virtio-net,rss=on',
                           '--device', 'virtio-blk,x-inflight=3'),
                    MEM + ('--nodefaults', '--release', '1.0',
                           '--device', 'virtio-net',
                           '--device', 'virtio-blk'),
                    [('subsection-unknown',
                      'devices/virtio-net@0/subsections/virtio-net/rss',
                      'unknown to the destination', 'needed'),
                     ('subsection-unknown',
                      'devices/virtio-blk@0/subsections/virtio-blk/inflight',
                      'unknown to the destination', 'needed')])

    def test_several_problems_at_once(self):
        """Every problem in one error, in the order of spec 9.5."""
        self.refuse(('--machine', 'mig2-q35', '--memory', '128M',
                     '--nodefaults', '--device', 'serial,fifo=on',
                     '--device', 'rtc', '--device', 'e1000'),
                    ('--machine', 'mig2-pc', '--memory', '64M',
                     '--nodefaults', '--release', '1.0',
                     '--device', 'serial', '--device', 'rtc'),
                    [('machine', 'machine', 'mig2-pc', 'mig2-q35'),
                     ('ram-block-size', 'ram-blocks/pc.ram/size',
                      str(64 * MiB), str(128 * MiB)),
                     ('subsection-unknown',
                      'devices/serial@0/subsections/serial/fifo',
                      'unknown to the destination', 'needed'),
                     ('device-version', 'devices/rtc@0/version', '1..2',
                      '3..3'),
                     ('device-missing', 'devices/e1000@0', 'absent',
                      'versions 1..2')])

    def test_refused_destination_stays_with_exit_on_error_false(self):
        self.refuse(MEM + ('--device', 'e1000', '--workload',
                           'dirty-rate=1000'),
                    MEM + ('--release', '1.0'),
                    [('device-version', 'devices/rtc@0/version', '1..2',
                      '3..3'),
                     ('device-missing', 'devices/e1000@0', 'absent',
                      'versions 1..2')],
                    exit_on_error=False, src_paused=True)

    def test_refused_over_unix_socket_paused_source(self):
        src = self.vm('src', *MEM, '--machine', 'mig2-q35')
        dst, addr = self.incoming('dst', *MEM, transport='unix')
        src.execute('stop')
        before = src.digest()
        src.execute('migrate', migrate_args(addr))
        info = wait_migration(src, FINAL_STATUSES)
        self.assertFailedBeforeRam(info)
        self.assertIn('machine: machine: expected mig2-pc, got mig2-q35',
                      info['error-desc'])
        self.assertEqual(src.status(), 'paused')
        self.assertEqual(src.digest(), before)
        self.assertEqual(dst.wait_exit(), 1)
        self.quit_ok(src)


class OlderDestinationTest(VmTestCase):
    """A newer source to an older destination: lower device versions."""

    DEVICES = ('--nodefaults', '--device', 'serial', '--device', 'cpu',
               '--device', 'virtio-net')

    def migrate_ok(self, src, dst, addr):
        src.execute('migrate', migrate_args(addr))
        info = wait_migration(src, FINAL_STATUSES)
        self.assertEqual(info['status'], 'completed',
                         '%r\n%s' % (info, dst.stderr()))
        self.assertEqual(wait_migration(dst, FINAL_STATUSES)['status'],
                         'completed')
        self.assertEqual(src.status(), 'postmigrate')
        after = src.digest()
        self.assertEqual(dst.status(), 'running')
        self.assertEqual(dst.digest(), after)
        return info

    def versions(self, vm):
        return {(d['id'], d['instance']): d['version']
                for d in handshake_info(vm)['device-versions']}

    def test_2_0_to_1_1(self):
        src = self.vm('src', *MEM, *self.DEVICES, '--workload',
                      'dirty-rate=2000')
        dst, addr = self.incoming('dst', *MEM, *self.DEVICES,
                                  '--release', '1.1')
        self.migrate_ok(src, dst, addr)
        hs = handshake_info(src)
        self.assertEqual(hs['revision'], 2)
        self.assertEqual(hs['round-trips'], 1)
        self.assertIn('release 1.1', hs['peer-build'])
        want = {('timer', 0): 2, ('globalstate', 0): 1, ('serial', 0): 3,
                ('cpu', 0): 2, ('virtio-net', 0): 2}
        self.assertEqual(self.versions(src), want)
        self.assertEqual(self.versions(dst), want)
        self.assertEqual(handshake_info(dst)['transcript-hash'],
                         hs['transcript-hash'])
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_2_0_to_1_0(self):
        """1.0: revision 1 (two round trips), serial v2, cpu v2,
        virtio-net v1; serial/fifo is not needed, so it is omitted."""
        src = self.vm('src', *MEM, *self.DEVICES, '--workload',
                      'dirty-rate=2000')
        dst, addr = self.incoming('dst', *MEM, *self.DEVICES,
                                  '--release', '1.0', transport='unix')
        self.migrate_ok(src, dst, addr)
        hs = handshake_info(src)
        self.assertEqual(hs['revision'], 1)
        self.assertEqual(hs['round-trips'], 2)
        self.assertEqual(hs['peer-revisions'], '1..1')
        want = {('timer', 0): 2, ('globalstate', 0): 1, ('serial', 0): 2,
                ('cpu', 0): 2, ('virtio-net', 0): 1}
        self.assertEqual(self.versions(src), want)
        self.assertEqual(self.versions(dst), want)
        omitted = {(o['device'], o['subsection'])
                   for o in hs['omitted-subsections']}
        self.assertIn(('serial', 'serial/fifo'), omitted)
        self.assertIn(('virtio-net', 'virtio-net/rss'), omitted)
        self.assertEqual(handshake_info(dst)['revision'], 1)
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_1_0_to_2_0(self):
        """An older source into the current release (default devices)."""
        src = self.vm('src', *MEM, '--release', '1.0', '--workload',
                      'dirty-rate=2000')
        dst, addr = self.incoming('dst', *MEM)
        self.migrate_ok(src, dst, addr)
        hs = handshake_info(dst)
        self.assertEqual(hs['revision'], 1)
        self.assertEqual(self.versions(dst)[('rtc', 0)], 2)
        self.assertIn('release 1.0', hs['peer-build'])
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_needed_subsections_travel(self):
        """Devices whose subsections are needed (FIFO, in-flight requests,
        pending interrupts, xsave) to 2.0 and to 1.1: the state arrives
        (digests equal); 1.1 takes cpu at v2 with its xsave subsection and
        the unneeded, unknown virtio-net/rss is omitted."""
        devs = ('--nodefaults', '--device', 'serial,fifo=on',
                '--device', 'virtio-blk,x-inflight=3',
                '--device', 'rtc,x-reinject=2', '--device', 'cpu,xsave=on',
                '--device', 'virtio-net')
        for rel in ('2.0', '1.1'):
            with self.subTest(release=rel):
                src = self.vm('src' + rel, *MEM, *devs, '--workload',
                              'dirty-rate=1000')
                dst, addr = self.incoming('dst' + rel, *MEM, *devs,
                                          '--release', rel)
                self.migrate_ok(src, dst, addr)
                hs = handshake_info(src)
                v = self.versions(src)
                self.assertEqual(v[('cpu', 0)], 3 if rel == '2.0' else 2)
                self.assertEqual(v[('rtc', 0)], 3)
                self.assertEqual(v[('serial', 0)], 3)
                omitted = [(o['device'], o['subsection'])
                           for o in hs['omitted-subsections']]
                self.assertEqual(omitted, [] if rel == '2.0' else
                                 [('virtio-net', 'virtio-net/rss')])
                self.quit_ok(src)
                self.quit_ok(dst)


class LegacyLateFailureTest(VmTestCase):
    """The contrast that motivates v2: the legacy stream finds a missing
    device only when device state loads, after all of RAM, and the source,
    which never hears back, counts the migration complete."""

    def test_legacy_fails_late_v2_fails_early(self):
        src = self.vm('src', *MEM, '--device', 'e1000')
        before = src.digest()
        dst, addr = self.incoming('dst', *MEM, chan='main',
                                  exit_on_error=False)
        src.execute('migrate', migrate_args(addr, 'uri'))
        info = wait_migration(src, FINAL_STATUSES)
        dinfo = wait_migration(dst, FINAL_STATUSES)
        self.assertEqual(dinfo['status'], 'failed', dinfo)
        self.assertIn("'e1000'", dinfo['error-desc'])
        self.assertEqual(dst.status(), 'inmigrate')
        # all of RAM went before the failure
        self.assertEqual(info['ram']['normal'] + info['ram']['duplicate'],
                         64 * MiB // 4096, info)
        self.assertEqual(info['status'], 'completed', info)
        self.assertEqual(src.status(), 'postmigrate')
        self.assertEqual(src.digest(), before)
        # management has to notice and resume the source by hand
        src.execute('cont')
        self.assertEqual(src.status(), 'running')
        self.quit_ok(dst)

        dst2, addr = self.incoming('dst2', *MEM, exit_on_error=False)
        src.execute('migrate', migrate_args(addr))
        info = wait_migration(src, FINAL_STATUSES)
        self.assertFailedBeforeRam(info)
        self.assertIn('devices/e1000@0', info['error-desc'])
        self.assertEqual(src.status(), 'running')
        self.assertEqual(src.digest(), before)
        self.assertEqual(wait_migration(dst2, FINAL_STATUSES)['status'],
                         'failed')
        self.assertEqual(dst2.status(), 'inmigrate')
        self.quit_ok(dst2)
        self.quit_ok(src)


class ParametersTest(VmTestCase):
    """The destination applies the configuration it received."""

    SET = {'downtime-limit': 777, 'multifd-channels': 8,
           'max-bandwidth': 0, 'announce-initial': 33,
           'multifd-compression': 'zstd'}

    def prepare(self, src):
        src.execute('migrate-set-parameters', self.SET)
        src.execute('migrate-set-capabilities', {'capabilities': [
            {'capability': 'auto-converge', 'state': True},
            {'capability': 'xbzrle', 'state': True}]})
        params = src.execute('query-migrate-parameters')
        for k, v in self.SET.items():
            self.assertEqual(params[k], v)

    def run_migration(self, dst_args):
        src = self.vm('src', *MEM, '--workload', 'dirty-rate=1000')
        dst, addr = self.incoming('dst', *MEM, *dst_args)
        defaults = dst.execute('query-migrate-parameters')
        self.assertEqual(defaults['downtime-limit'], 300)
        self.assertFalse(capability(dst, 'auto-converge'))
        self.prepare(src)
        src.execute('migrate', migrate_args(addr))
        info = wait_migration(src, FINAL_STATUSES)
        self.assertEqual(info['status'], 'completed', info)
        self.assertEqual(wait_migration(dst, FINAL_STATUSES)['status'],
                         'completed')
        self.assertEqual(src.status(), 'postmigrate')
        self.assertEqual(dst.status(), 'running')
        self.assertEqual(dst.digest(), src.digest())
        return src, dst

    def test_destination_takes_source_parameters(self):
        src, dst = self.run_migration(())
        params = dst.execute('query-migrate-parameters')
        for k, v in self.SET.items():
            self.assertEqual(params[k], v, k)
        self.assertTrue(capability(dst, 'auto-converge'))
        self.assertTrue(capability(dst, 'xbzrle'))
        self.assertFalse(capability(dst, 'postcopy-ram'))
        self.assertEqual(params, src.execute('query-migrate-parameters'))
        hs = handshake_info(dst)
        self.assertEqual(config_entry(hs, 'multifd-channels'),
                         {'name': 'multifd-channels', 'proposed': 8,
                          'final': 8, 'status': 'accepted'})
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_destination_policy_clamps_and_refuses(self):
        src, dst = self.run_migration((
            '--migration-policy', 'clamp:multifd-channels=4',
            '--migration-policy', 'refuse:auto-converge'))
        params = dst.execute('query-migrate-parameters')
        self.assertEqual(params['multifd-channels'], 4)
        self.assertEqual(params['downtime-limit'], 777)
        self.assertEqual(params['max-bandwidth'], 0)
        self.assertFalse(capability(dst, 'auto-converge'))
        self.assertTrue(capability(dst, 'xbzrle'))
        for hs in (handshake_info(dst), handshake_info(src)):
            self.assertEqual(config_entry(hs, 'multifd-channels'),
                             {'name': 'multifd-channels', 'proposed': 8,
                              'final': 4, 'status': 'clamped'})
            self.assertEqual(config_entry(hs, 'auto-converge'),
                             {'name': 'auto-converge', 'proposed': True,
                              'final': False, 'status': 'refused'})
        # the source keeps its own settings
        self.assertEqual(src.execute('query-migrate-parameters')
                         ['multifd-channels'], 8)
        self.assertTrue(capability(src, 'auto-converge'))
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_bad_policy_is_refused_at_start(self):
        p = subprocess.run([MIG2_VM, '--migration-policy', 'clamp:nope',
                            '--incoming', 'defer'],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=scaled(20))
        self.assertNotEqual(p.returncode, 0)
        self.assertIn('invalid migration policy', p.stderr.decode())


if __name__ == '__main__':
    unittest.main(verbosity=2)
