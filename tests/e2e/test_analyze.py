#!/usr/bin/env python3
"""mig2-analyze on real streams: QEMU 7.2 -M pc (RAM from a known file) and
-M none, mig2-vm's legacy v3 file: save, a capture of what a mig2-vm
source sends on a v2 main channel (through a teeing TCP relay), and
mig2-vm's one-way v4 file (x-oneway-format v4, MANIFEST to DIGEST); the
--json keys; truncated and corrupted streams (exit 1 naming an offset,
never a crash: the e2e suite also runs in the ASan/UBSan tree).

The QEMU tests are skipped when qemu-system-x86_64 is not installed
(scripts/deps.sh installs qemu-system-x86)."""

import hashlib
import hmac
import json
import os
import random
import re
import shutil
import struct
import subprocess
import unittest

from vmlib import (FINAL_STATUSES, ROOT, MiB, PAGE, TcpRelay, VmTestCase,
                   handshake_channels, handshake_info, make_memory_file,
                   scaled, wait_migration)
from test_qemu import QEMU, Qemu, qemu_wait_migration
from test_oneway import OnewaySaves, frames

ANALYZE = os.environ.get('MIG2_ANALYZE') or os.path.join(
    ROOT, 'build', 'tools', 'mig2-analyze')

ERROR_RE = re.compile(r'^mig2-analyze: offset (\d+): \S', re.M)

# Documented --json keys (docs/mig2-analyze.md).
TOP_KEYS = {'file', 'file_size', 'magic', 'version', 'stream', 'ram'}
V3_KEYS = {'configuration', 'sections', 'eof', 'vmdesc'}
SECTION_KEYS = {'offset', 'type', 'section_id', 'idstr', 'data_offset',
                'size', 'size_from'}
COMMAND_KEYS = {'offset', 'type', 'command', 'command_id', 'length'}
RAM_KEYS = {'blocks', 'normal_pages', 'zero_pages', 'other_pages'}
BLOCK_KEYS = {'name', 'size', 'page_size', 'normal_pages', 'zero_pages',
              'other_pages'}
FRAME_KEYS = {'offset', 'type', 'name', 'flags', 'critical', 'length'}


def analyze(*args, check=None):
    """Run mig2-analyze; returns (returncode, stdout, stderr)."""
    p = subprocess.run([ANALYZE] + [str(a) for a in args],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=scaled(60))
    out = p.stdout.decode('utf-8', 'replace')
    err = p.stderr.decode('utf-8', 'replace')
    if check is not None and p.returncode != check:
        raise AssertionError('mig2-analyze %s: exit %d, expected %d\n%s'
                             % (' '.join(map(str, args)), p.returncode, check,
                                err))
    return p.returncode, out, err


def analyze_json(path):
    return json.loads(analyze('--json', path, check=0)[1])


def trailing_vmdesc(path):
    """The vmdesc JSON at the end of a v3 file, found independently of the
    tool: the last 0x06 + be32 length whose JSON runs to the end."""
    with open(path, 'rb') as f:
        data = f.read()
    for p in range(len(data) - 6, 8, -1):
        if (data[p] == 6 and data[p + 5:p + 6] == b'{' and
                struct.unpack('>I', data[p + 1:p + 5])[0] == len(data) - p - 5):
            return p, json.loads(data[p + 5:])
    raise AssertionError('no vmdesc at the end of %s' % path)


def tee_main_channel(path):
    """A TcpRelay watch that writes what the first client sends (a
    source's main channel) to @path; extra channels pass untouched."""
    def watch(index, to_target):
        if index != 0 or not to_target:
            return None
        f = open(path, 'wb')

        def feed(data):
            if data:
                f.write(data)
            else:
                f.close()
        return feed
    return watch


class AnalyzeTestCase(VmTestCase):

    def assert_malformed(self, path, cut):
        """mig2-analyze on @path (whose size is @cut) exits 1 and names an
        offset inside the file."""
        rc, _, err = analyze(path)
        self.assertEqual(rc, 1, 'cut/corrupt at %s: exit %d\n%s'
                         % (cut, rc, err))
        m = ERROR_RE.search(err)
        self.assertTrue(m, 'no offset in the error: %r' % err)
        self.assertLessEqual(int(m.group(1)), os.path.getsize(path), err)

    def check_truncations(self, path, cuts):
        """Every cut of @path at an offset in @cuts is reported malformed.
        One copy is shrunk step by step (largest cut first)."""
        work = os.path.join(self.tmp, 'cut.mig')
        shutil.copyfile(path, work)
        size = os.path.getsize(path)
        for cut in sorted(set(c for c in cuts if 0 <= c < size),
                          reverse=True):
            os.truncate(work, cut)
            self.assert_malformed(work, cut)
        os.unlink(work)

    def check_corruptions(self, path, offsets, seed):
        """A byte changed at each offset: exit 0 (harmless change, e.g. in
        page data) or 1 naming an offset; never a crash."""
        rnd = random.Random(seed)
        work = os.path.join(self.tmp, 'bad.mig')
        shutil.copyfile(path, work)
        size = os.path.getsize(path)
        verdicts = {0: 0, 1: 0}
        with open(work, 'r+b') as f:
            for off in sorted(set(o for o in offsets if 0 <= o < size)):
                f.seek(off)
                old = f.read(1)
                f.seek(off)
                f.write(bytes([old[0] ^ rnd.randrange(1, 256)]))
                f.flush()
                rc, _, err = analyze(work)
                self.assertIn(rc, (0, 1), 'byte %d: exit %d\n%s'
                              % (off, rc, err))
                if rc == 1:
                    m = ERROR_RE.search(err)
                    self.assertTrue(m, 'byte %d: no offset: %r' % (off, err))
                    self.assertLessEqual(int(m.group(1)), size)
                verdicts[rc] += 1
                f.seek(off)
                f.write(old)
                f.flush()
        os.unlink(work)
        return verdicts

    def check_json_keys(self, doc):
        self.assertLessEqual(TOP_KEYS, set(doc), sorted(doc))
        self.assertNotIn('error', doc)
        self.assertEqual(doc['magic'], 0x5145564d)
        self.assertLessEqual(RAM_KEYS, set(doc['ram']))
        for b in doc['ram']['blocks']:
            self.assertLessEqual(BLOCK_KEYS, set(b))
        if doc['stream'] == 'v3':
            self.assertEqual(doc['version'], 3)
            self.assertLessEqual(V3_KEYS, set(doc))
            self.assertLessEqual({'offset', 'machine', 'size', 'subsections'},
                                 set(doc['configuration']))
            for s in doc['sections']:
                if s['type'] == 'COMMAND':
                    self.assertLessEqual(COMMAND_KEYS, set(s))
                else:
                    self.assertLessEqual(SECTION_KEYS, set(s))
            self.assertLessEqual({'offset', 'length', 'page_size', 'devices',
                                  'json'}, set(doc['vmdesc']))
            self.assertIn('offset', doc['eof'])
        else:
            self.assertEqual(doc['version'], 4)
            for f in doc['frames']:
                self.assertLessEqual(FRAME_KEYS, set(f))

    @staticmethod
    def boundaries(doc):
        """Offsets where the structure of a stream changes, from its JSON."""
        cuts = [0, 4, 8]
        if doc['stream'] == 'v3':
            cfg = doc['configuration']
            cuts += [cfg['offset'], cfg['offset'] + cfg['size']]
            cuts += [s['offset'] for s in cfg['subsections']]
            for s in doc['sections']:
                cuts += [s['offset'], s['offset'] + 1]
                if 'data_offset' in s:
                    cuts += [s['data_offset'], s['data_offset'] + s['size']]
                for sub in s.get('subsections', []):
                    cuts += [sub['offset'], sub['offset'] + sub['size']]
                if 'footer_offset' in s:
                    cuts += [s['footer_offset'] + 1, s['footer_offset'] + 5]
            cuts += [doc['eof']['offset'], doc['vmdesc']['offset'],
                     doc['vmdesc']['offset'] + 5, doc['file_size'] - 1]
        else:
            for f in doc['frames']:
                cuts += [f['offset'], f['offset'] + 8, f['offset'] + 9]
            cuts.append(doc['file_size'] - 1)
        return cuts

    def sample(self, size, n, seed):
        rnd = random.Random(seed)
        return [rnd.randrange(size) for _ in range(n)]

    def check_v3_sections_match_vmdesc(self, doc, path):
        """FULL sections (every one but RAM's) are the vmdesc devices, in
        order, at the same versions; the tool's vmdesc is the file's."""
        voff, vmdesc = trailing_vmdesc(path)
        self.assertEqual(doc['vmdesc']['offset'], voff)
        self.assertEqual(doc['vmdesc']['json'], vmdesc)
        full = [(s['idstr'], s['instance_id'], s['version_id'])
                for s in doc['sections'] if s['type'] == 'FULL']
        devs = [(d['name'], d['instance_id'], d['version'])
                for d in vmdesc['devices']]
        self.assertEqual(full, devs)
        for s in doc['sections']:
            if s['type'] == 'FULL':
                self.assertEqual(s['size_from'], 'vmdesc', s)
                self.assertIn('footer_offset', s)
        # --vmdesc prints that same JSON
        self.assertEqual(json.loads(analyze('--vmdesc', path, check=0)[1]),
                         vmdesc)


@unittest.skipIf(QEMU is None, 'qemu-system-x86_64 not found (install '
                 'qemu-system-x86, see scripts/deps.sh)')
class QemuStreamTest(AnalyzeTestCase):

    def qemu(self, name, **kw):
        q = Qemu(self.tmp, name, **kw)
        self.addCleanup(q.stop_process)
        return q.start()

    def save(self, q, name, caps=()):
        path = os.path.join(self.tmp, name)
        if caps:
            q.execute('migrate-set-capabilities', {'capabilities': [
                {'capability': c, 'state': True} for c in caps]})
        q.execute('migrate', {'uri': 'exec:cat > ' + path})
        info = qemu_wait_migration(q, scaled(60))
        self.assertEqual(info['status'], 'completed', (info, q.stderr()))
        return path

    def test_pc_ram_from_file(self):
        size = 64 * MiB
        mem = os.path.join(self.tmp, 'pc.ram.bin')
        with open(mem, 'wb') as f:
            f.write(os.urandom(size))
        q = self.qemu('qpc', paused=True, machine='pc', extra=[
            '-m', '64', '-object',
            'memory-backend-file,id=pc.ram,size=64M,mem-path=%s,share=off'
            % mem, '-machine', 'memory-backend=pc.ram'])
        out = self.save(q, 'pc.mig')
        q.stop_process()

        dump = os.path.join(self.tmp, 'dump')
        analyze('--dump-ram', dump, out, check=0)
        with open(mem, 'rb') as a, open(os.path.join(dump, 'pc.ram'),
                                         'rb') as b:
            self.assertTrue(a.read() == b.read(),
                            'dumped pc.ram differs from the backing file')

        doc = analyze_json(out)
        self.check_json_keys(doc)
        self.assertEqual(doc['configuration']['machine'], 'pc-i440fx-7.2')
        self.check_v3_sections_match_vmdesc(doc, out)
        blocks = {b['name']: b for b in doc['ram']['blocks']}
        self.assertEqual(blocks['pc.ram']['size'], size)
        # Every dumped block has its block's size.
        for name, b in blocks.items():
            self.assertEqual(os.path.getsize(
                os.path.join(dump, name.lstrip('/'))), b['size'], name)
        # Page counts of pc.ram: what the file says (random: no zero page).
        with open(mem, 'rb') as f:
            zero_pages = sum(1 for i in range(size // PAGE)
                             if f.read(PAGE) == bytes(PAGE))
        self.assertEqual(blocks['pc.ram']['zero_pages'], zero_pages)
        self.assertEqual(blocks['pc.ram']['normal_pages'],
                         size // PAGE - zero_pages)
        self.assertIn('PAGE', doc['ram']['flags_seen'])
        starts = [s for s in doc['sections'] if s['type'] == 'START']
        self.assertEqual([s['idstr'] for s in starts], ['ram'])
        self.assertEqual(starts[0]['ram']['mem_size'],
                         sum(b['size'] for b in blocks.values()))

        # Truncated at every section boundary and at random places, then
        # corrupted at random places.
        self.check_truncations(out, self.boundaries(doc) +
                               self.sample(doc['file_size'], 40, 1))
        # Corrupted: mostly in the structure (headers, footers, the
        # configuration), some anywhere.
        structure = list(range(0, doc['configuration']['size'] + 48))
        for s in doc['sections']:
            structure += range(s['offset'],
                               s.get('data_offset', s['offset'] + 5) + 16)
        picks = [structure[i] for i in self.sample(len(structure), 60, 2)]
        self.check_corruptions(out, picks +
                               self.sample(doc['file_size'], 40, 3), seed=4)

    def test_none(self):
        q = self.qemu('qnone', paused=True)
        out = self.save(q, 'none.mig')
        doc = analyze_json(out)
        self.check_json_keys(doc)
        self.assertEqual(doc['configuration']['machine'], 'none')
        self.assertEqual(doc['configuration']['subsections'], [])
        self.check_v3_sections_match_vmdesc(doc, out)
        self.assertEqual([(s['type'], s['idstr']) for s in doc['sections']],
                         [('START', 'ram'), ('END', 'ram'),
                          ('FULL', 'timer'), ('FULL', 'globalstate')])
        self.assertEqual(doc['sections'][0]['ram']['mem_size'], 0)
        self.assertEqual(doc['ram']['blocks'], [])
        self.assertEqual(doc['eof']['offset'] + 1, doc['vmdesc']['offset'])

        # Small enough to cut at every single offset.
        self.check_truncations(out, range(doc['file_size']))
        verdicts = self.check_corruptions(out, range(doc['file_size']),
                                          seed=5)
        self.assertGreater(verdicts[1], 0)

        # Text output names the parts.
        text = analyze(out, check=0)[1]
        for word in ('CONFIGURATION machine "none"', 'START', '"timer"',
                     'EOF', 'VMDESC'):
            self.assertIn(word, text)

    def test_configuration_subsections_and_commands(self):
        uuid = '12345678-9abc-def0-1234-56789abcdef0'
        q = self.qemu('qcaps', paused=True, extra=['-uuid', uuid])
        out = self.save(q, 'caps.mig', caps=('x-ignore-shared',
                                             'validate-uuid'))
        doc = analyze_json(out)
        subs = doc['configuration']['subsections']
        self.assertEqual([s['name'] for s in subs],
                         ['configuration/capabilities', 'configuration/uuid'])
        self.assertEqual(subs[0]['capabilities'], ['x-ignore-shared'])
        self.assertEqual(subs[1]['uuid'], uuid.replace('-', ''))
        self.check_v3_sections_match_vmdesc(doc, out)

        # The commands QEMU 7.2 sends after the configuration when return
        # path and postcopy are on (OPEN_RETURN_PATH, PING 1,
        # POSTCOPY_ADVISE), spliced into this stream.
        cmds = (b'\x08\x00\x01\x00\x00' +
                b'\x08\x00\x02\x00\x04\x00\x00\x00\x01' +
                b'\x08\x00\x03\x00\x10' + struct.pack('>QQ', 4096, 4096))
        with open(out, 'rb') as f:
            data = f.read()
        at = 8 + doc['configuration']['size']
        spliced = os.path.join(self.tmp, 'cmds.mig')
        with open(spliced, 'wb') as f:
            f.write(data[:at] + cmds + data[at:])
        doc2 = analyze_json(spliced)
        got = [(s['command'], s.get('value')) for s in doc2['sections']
               if s['type'] == 'COMMAND']
        self.assertEqual(got, [('OPEN_RETURN_PATH', None), ('PING', 1),
                               ('POSTCOPY_ADVISE', None)])
        self.assertEqual(doc2['sections'][2]['target_page_size'], 4096)
        self.assertEqual(doc2['sections'][0]['offset'], at)
        self.check_truncations(spliced, range(at, at + len(cmds) + 1))
        # A PING of the wrong length.
        with open(spliced, 'wb') as f:
            f.write(data[:at] + b'\x08\x00\x02\x00\x03\x00\x00\x01' +
                    data[at:])
        rc, _, err = analyze(spliced)
        self.assertEqual(rc, 1)
        self.assertIn('offset %d: command PING with 3 bytes' % at, err)


# Devices whose subsections are sent (their .needed holds), and one whose
# subsection is not.
DEVICES = ['--device', 'serial,fifo=on', '--device', 'cpu,xsave=on',
           '--device', 'virtio-net,rss=on', '--device', 'rtc']


class Mig2StreamTest(AnalyzeTestCase):

    def test_v3_file(self):
        mem = make_memory_file(os.path.join(self.tmp, 'ram'), 16 * MiB,
                               seed=3)
        src = self.vm('src', '--memory', '16M', '--memory-file', mem, '-S',
                      '--nodefaults', *DEVICES)
        out = os.path.join(self.tmp, 'saved.mig')
        src.execute('migrate', {'uri': 'file:' + out})
        info = wait_migration(src, FINAL_STATUSES, timeout=scaled(30))
        self.assertEqual(info['status'], 'completed', info)
        self.quit_ok(src)

        doc = analyze_json(out)
        self.check_json_keys(doc)
        self.check_v3_sections_match_vmdesc(doc, out)
        # The subsections found in the stream are those the vmdesc lists.
        vmdesc = doc['vmdesc']['json']['devices']
        full = [s for s in doc['sections'] if s['type'] == 'FULL']
        for sec, dev in zip(full, vmdesc):
            self.assertEqual([x['name'] for x in sec['subsections']],
                             [x['vmsd_name']
                              for x in dev.get('subsections', [])])
        self.assertEqual(sum(len(s['subsections']) for s in full), 3)
        self.assertEqual(len(doc['ram']['blocks']), 1)
        block = doc['ram']['blocks'][0]
        self.assertEqual(block['size'], 16 * MiB)
        self.assertEqual(block['normal_pages'], 16 * MiB // PAGE)
        dump = os.path.join(self.tmp, 'dump')
        analyze('--dump-ram', dump, out, check=0)
        with open(mem, 'rb') as a, open(os.path.join(dump, block['name']),
                                         'rb') as b:
            self.assertTrue(a.read() == b.read(), 'dumped RAM differs')

        self.check_truncations(out, self.boundaries(doc) +
                               self.sample(doc['file_size'], 30, 6))
        self.check_corruptions(out, self.boundaries(doc) +
                               self.sample(doc['file_size'], 30, 7), seed=8)

    def capture_v4(self, *vm_args):
        """Migrate a mig2-vm source with the handshake through a relay
        (both sides with @vm_args); return the path of what the source
        sent on the main channel, and of its RAM's contents."""
        mem = make_memory_file(os.path.join(self.tmp, 'ram'), 8 * MiB,
                               seed=9)
        dst, addr = self.incoming('dst', '--memory', '8M', *vm_args)
        cap = os.path.join(self.tmp, 'v4.mig')
        relay = TcpRelay(addr['port'], tee_main_channel(cap))
        self.addCleanup(relay.close)
        src = self.vm('src', '--memory', '8M', '--memory-file', mem, '-S',
                      *vm_args)
        src.execute('migrate', {'channels':
                                handshake_channels('127.0.0.1', relay.port)})
        info = wait_migration(src, FINAL_STATUSES, timeout=scaled(30))
        self.assertEqual(info['status'], 'completed', info)
        info = wait_migration(dst, FINAL_STATUSES, timeout=scaled(30))
        self.assertEqual(info['status'], 'completed', info)
        self.quit_ok(src)
        self.quit_ok(dst)
        relay.close()
        return cap, mem

    def test_v4_capture(self):
        cap, mem = self.capture_v4('--nodefaults', *DEVICES)
        doc = analyze_json(cap)
        self.check_json_keys(doc)
        names = [f['name'] for f in doc['frames']]
        # Preamble, [grease], SRC_HELLO, FINISHED(s), then the data phase.
        hello = names.index('SRC_HELLO')
        self.assertIn(hello, (0, 1))
        if hello:
            self.assertIsNone(names[0])
            self.assertTrue(doc['frames'][0]['grease'])
        self.assertEqual(names[hello + 1], 'FINISHED')
        self.assertEqual(names[-1], 'END')
        self.assertIn('SWITCHOVER', names)
        self.assertIn('SYNC', names)
        tlvs = doc['frames'][hello]['tlvs']
        manifest = [(t['id'], t['instance']) for t in tlvs
                    if t['name'] == 'DEVICE']
        devices = [(f['id'], f['instance']) for f in doc['frames']
                   if f['name'] == 'DEVICE']
        self.assertEqual(sorted(devices), sorted(manifest))
        end = doc['frames'][-1]
        self.assertEqual(end['devices'], len(devices))
        ram = [f for f in doc['frames'] if f['name'] == 'RAM']
        self.assertEqual(end['pages'], sum(f['pages'] for f in ram))
        self.assertEqual(end['pages'], 8 * MiB // PAGE)
        machine = [t for t in tlvs if t['name'] == 'MACHINE'][0]['machine']
        self.assertEqual(machine, 'mig2-pc')
        # Every DEVICE frame's subsections were found in its body: those
        # the SRC_HELLO marks NEEDED.
        needed = {(t['id'], t['instance']): [s['name'] for s in
                                             t['subsections'] if s['needed']]
                  for t in tlvs if t['name'] == 'DEVICE'}
        for f in doc['frames']:
            if f['name'] == 'DEVICE':
                self.assertIn('fields_size', f, f)
                self.assertEqual([s['name'] for s in f['subsections']],
                                 needed[(f['id'], f['instance'])])
                self.assertEqual(f['fields_size'] + 1 + sum(
                    1 + len(s['name']) + 4 + s['size']
                    for s in f['subsections']), f['body_size'])
        self.assertEqual(sum(len(v) for v in needed.values()), 3)

        dump = os.path.join(self.tmp, 'dump')
        analyze('--dump-ram', dump, cap, check=0)
        block = doc['ram']['blocks'][0]['name']
        with open(mem, 'rb') as a, open(os.path.join(dump, block),
                                         'rb') as b:
            self.assertTrue(a.read() == b.read(), 'dumped RAM differs')

        text = analyze(cap, check=0)[1]
        self.assertIn('SRC_HELLO (0x0001)', text)
        self.assertIn('REVISIONS (0x8001)', text)
        self.assertIn('END (0x0105)', text)

        self.check_truncations(cap, self.boundaries(doc) +
                               self.sample(doc['file_size'], 60, 10))
        verdicts = self.check_corruptions(
            cap, range(0, min(doc['file_size'], 1600), 3), seed=11)
        self.assertGreater(verdicts[1], 0)

    def test_v4_unknown_frames_skipped(self):
        """Frames of an unknown type are printed and skipped."""
        cap, _ = self.capture_v4()
        with open(cap, 'rb') as f:
            data = f.read()
        doc = analyze_json(cap)
        fin = [f for f in doc['frames'] if f['name'] == 'FINISHED'][0]
        at = fin['offset'] + 8 + fin['length']
        odd = struct.pack('>HHI', 0x0177, 0, 5) + b'hello'
        path = os.path.join(self.tmp, 'odd.mig')
        with open(path, 'wb') as f:
            f.write(data[:at] + odd + data[at:])
        doc2 = analyze_json(path)
        new = [f for f in doc2['frames'] if f['offset'] == at][0]
        self.assertIsNone(new['name'])
        self.assertEqual((new['type'], new['length']), (0x0177, 5))
        self.assertEqual(len(doc2['frames']), len(doc['frames']) + 1)
        text = analyze(path, check=0)[1]
        self.assertIn('unknown 0x0177, 5 bytes', text)

    def test_usage(self):
        self.assertEqual(analyze()[0], 2)
        self.assertEqual(analyze('--bogus', 'x')[0], 2)
        self.assertEqual(analyze('a', 'b')[0], 2)
        self.assertEqual(analyze(os.path.join(self.tmp, 'missing'))[0], 3)
        rc, out, _ = analyze('--help')
        self.assertEqual(rc, 0)
        self.assertIn('--dump-ram', out)
        empty = os.path.join(self.tmp, 'empty')
        open(empty, 'wb').close()
        self.assert_malformed(empty, 0)
        notqevm = os.path.join(self.tmp, 'notqevm')
        with open(notqevm, 'wb') as f:
            f.write(b'QEMX\0\0\0\3')
        rc, _, err = analyze(notqevm)
        self.assertEqual(rc, 1)
        self.assertIn('offset 0: not a migration stream', err)
        with open(notqevm, 'wb') as f:
            f.write(b'QEVM\0\0\0\5')
        rc, _, err = analyze(notqevm)
        self.assertEqual(rc, 1)
        self.assertIn('offset 4: unsupported stream version 5', err)
        # --json on a malformed file still prints JSON, with the error.
        rc, out, _ = analyze('--json', notqevm)
        self.assertEqual(rc, 1)
        self.assertEqual(json.loads(out)['error']['offset'], 4)


class OnewayFileTest(OnewaySaves, AnalyzeTestCase):
    """The one-way v4 file of docs/protocol.md section 2.5."""

    def saved(self):
        """A v4 file of a 16 MiB guest with subsections, RAM from a known
        file and no workload; (source vm, path, bytes)."""
        src, path = self.saved_v4('--memory', '16M', '--nodefaults',
                                  *DEVICES, workload=False, mib=16)
        with open(path, 'rb') as f:
            data = f.read()
        return src, path, data

    def test_v4_file_structure(self):
        src, path, data = self.saved()
        hs = handshake_info(src)
        self.quit_ok(src)
        doc = analyze_json(path)
        self.check_json_keys(doc)
        self.assertTrue(doc['oneway'])
        # Frame by frame, as an independent split of the file sees them.
        self.assertEqual([(f['offset'], f['type'], f['length'])
                          for f in doc['frames'] if f['name'] != 'RAM'],
                         [(o, t, n) for o, t, _, n in frames(data)
                          if t != 0x0101])
        names = [f['name'] for f in doc['frames']]
        self.assertEqual(names[:3], ['MANIFEST', 'FINISHED', 'RAM'])
        self.assertEqual(names[-2:], ['END', 'DIGEST'])

        man = doc['frames'][0]
        self.assertEqual(man['revision'], 1)
        self.assertEqual(man['revisions'], {'min': 1, 'max': 2})
        self.assertIn('mig2-vm', man['build'])
        self.assertEqual(man['machine'], 'mig2-pc')
        self.assertEqual(man['page_size'], PAGE)
        self.assertEqual(man['ram_blocks'], [
            {'name': 'pc.ram', 'size': 16 * MiB, 'page_size': PAGE}])
        self.assertEqual(sorted(f['name'] for f in man['features']),
                         sorted(hs['features']['common']))
        self.assertTrue(all(f['required'] for f in man['features']))
        self.assertIn('multifd-channels',
                      [c['item'] for c in man['config']])
        # the DEVICE frames are the manifest's devices at its versions,
        # with the subsections it marks needed
        devices = {(d['id'], d['instance']): d for d in man['devices']}
        sent = [f for f in doc['frames'] if f['name'] == 'DEVICE']
        self.assertEqual(sorted((f['id'], f['instance']) for f in sent),
                         sorted(devices))
        for f in sent:
            d = devices[(f['id'], f['instance'])]
            self.assertEqual(f['version'], d['version'])
            self.assertEqual([x['name'] for x in f['subsections']],
                             [x['name'] for x in d['subsections']
                              if x['needed']])
        self.assertEqual(devices[('serial', 0)]['subsections'], [
            {'name': 'serial/fifo', 'needed': True},
            {'name': 'serial/timeout', 'needed': False}])

        # FINISHED and DIGEST, recomputed here from the spec (2.5.3, 2.5.4)
        fin, dig = doc['frames'][1], doc['frames'][-1]
        transcript = hashlib.sha256(data[:fin['offset']]).digest()
        self.assertEqual(fin['verify_data'], hmac.new(
            b'', b'mig2 src finished' + transcript,
            hashlib.sha256).hexdigest())
        self.assertTrue(fin['verified'])
        self.assertEqual(dig['covered'], dig['offset'])
        self.assertEqual(dig['digest'],
                         hashlib.sha256(data[:dig['offset']]).hexdigest())
        self.assertEqual(dig['digest'], data[-32:].hex())
        self.assertTrue(dig['digest_ok'])
        end = doc['frames'][-2]
        self.assertEqual((end['pages'], end['devices']),
                         (16 * MiB // PAGE, len(sent)))

        text = analyze(path, check=0)[1]
        for line in ('version 4 (protocol v2, one-way stream)',
                     'MANIFEST (0x0005), flags 0x0001 CRITICAL',
                     'revision 1 (the writer implements 1..2)',
                     'machine "mig2-pc", page size 4096',
                     'oneway-manifest (7) required',
                     'RAM block "pc.ram": size 16777216, page size 4096',
                     'device "serial" instance 0 version 3, subsections '
                     '"serial/fifo" (needed), "serial/timeout"',
                     'verified true',
                     'digest ok, SHA-256 of bytes 0 to %d is %s'
                     % (dig['offset'], dig['digest'])):
            self.assertIn(line, text)

        dump = os.path.join(self.tmp, 'dump')
        analyze('--dump-ram', dump, path, check=0)
        with open(self.saved_ram, 'rb') as a, open(
                os.path.join(dump, 'pc.ram'), 'rb') as b:
            self.assertTrue(a.read() == b.read(), 'dumped RAM differs')

    def test_v4_file_damaged(self):
        """DIGEST covers every byte before it and FINISHED the head: any
        change anywhere, and any cut, is an error naming an offset."""
        src, path, data = self.saved()
        self.quit_ok(src)
        doc = analyze_json(path)
        dig = doc['frames'][-1]['offset']
        ram = [f for f in frames(data) if f[1] == 0x0101]
        work = os.path.join(self.tmp, 'damaged.v4')

        def verdict(content):
            with open(work, 'wb') as f:
                f.write(content)
            rc, _, err = analyze(work)
            self.assertEqual(rc, 1, err)
            m = ERROR_RE.search(err)
            self.assertTrue(m, err)
            return int(m.group(1)), err

        def flipped(at):
            b = bytearray(data)
            b[at] ^= 0x20
            return bytes(b)

        # a page of guest RAM: well formed, only DIGEST can tell
        at = ram[len(ram) // 2][0] + 8 + ram[len(ram) // 2][3] - 100
        off, err = verdict(flipped(at))
        self.assertEqual(off, dig)
        self.assertIn('DIGEST does not match the stream', err)
        # DIGEST itself
        off, err = verdict(flipped(len(data) - 1))
        self.assertEqual(off, dig)
        self.assertIn('DIGEST does not match', err)
        # the MANIFEST's last byte (its last TLV's value): FINISHED says so
        off, err = verdict(flipped(8 + 8 + doc['frames'][0]['length'] - 1))
        self.assertIn(off, (8, doc['frames'][1]['offset']))
        # cut right after END, and a frame after DIGEST
        off, err = verdict(data[:dig])
        self.assertEqual(off, dig)
        self.assertIn('expected DIGEST', err)
        off, err = verdict(data + data[dig:])
        self.assertEqual(off, len(data))
        self.assertIn('after DIGEST', err)

        # Every cut at a frame boundary or at random is an error, and so is
        # every changed byte: none goes unnoticed in a one-way file, but
        # for DIGEST's own flags, which DIGEST cannot cover and a reader
        # ignores on a known frame (spec 4.1, 4.2).
        self.check_truncations(path, self.boundaries(doc) +
                               self.sample(len(data), 30, 12))
        picks = (list(range(0, 1300, 7)) + self.sample(len(data), 30, 13) +
                 list(range(dig - 40, len(data))))
        verdicts = self.check_corruptions(
            path, [o for o in picks if o not in (dig + 2, dig + 3)], seed=14)
        self.assertEqual(verdicts[0], 0, verdicts)
        self.assertEqual(self.check_corruptions(path, [dig + 2, dig + 3],
                                                seed=15), {0: 2, 1: 0})


if __name__ == '__main__':
    unittest.main(verbosity=2)
