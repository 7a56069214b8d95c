#!/usr/bin/env python3
"""End-to-end tests of migration over TLS: QEMU-style credentials
(--object tls-creds-x509 / authz-simple), the tls-creds, tls-hostname and
tls-authz parameters on each side, GnuTLS on the main channel and on every
multifd channel, the handshake bound to the TLS exporter (tls-binding), and
every refusal: wrong CA (either way), wrong hostname, a client DN the
destination's authz does not allow, a plaintext source at a TLS
destination and a TLS source at a plaintext destination.  Each refusal is
reported on both sides and leaves the source running with its guest
untouched.

Certificates are made by the test at run time with certtool (gnutls-bin)
in a temporary directory; no key is ever committed.  Without certtool the
test is skipped (exit 77)."""

import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

from vmlib import (FINAL_STATUSES, MIG2_VM, MiB, QmpError, TcpRelay, VmTestCase,
                   _die_with_parent, capability,
                   channels, config_entry, handshake_info, make_memory_file,
                   migrate_args, scaled, tcp_addr, unix_addr,
                   wait_migration)

CERTTOOL = shutil.which('certtool')

RAM = 64 * MiB
CLIENT_DN = 'C=GB,O=mig2 tests,CN=mig2-source'    # as GnuTLS prints it


# ---- certificates -------------------------------------------------------

CA_TEMPLATE = '''cn = "{cn}"
ca
cert_signing_key
expiration_days = 2
'''

SERVER_TEMPLATE = '''cn = "localhost"
organization = "mig2 tests"
dns_name = "localhost"
ip_address = "127.0.0.1"
tls_www_server
encryption_key
signing_key
expiration_days = 2
'''

CLIENT_TEMPLATE = '''cn = "mig2-source"
organization = "mig2 tests"
country = "GB"
tls_www_client
signing_key
expiration_days = 2
'''


def certtool(*args):
    subprocess.run([CERTTOOL] + list(args), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class Pki:
    """Two CAs and, for each, a server and a client certificate; then the
    credential directories QEMU's tls-creds-x509 reads (file names as
    QEMU's)."""

    def __init__(self, base):
        self.base = base
        self.work = os.path.join(base, 'work')
        os.mkdir(self.work)
        for ca in ('ca1', 'ca2'):
            self.ca(ca)
            self.leaf(ca, 'server', SERVER_TEMPLATE)
            self.leaf(ca, 'client', CLIENT_TEMPLATE)

    def path(self, name):
        return os.path.join(self.work, name)

    def template(self, name, text):
        p = self.path(name + '.tmpl')
        with open(p, 'w') as f:
            f.write(text)
        return p

    def key(self, name):
        certtool('--generate-privkey', '--key-type=ecdsa',
                 '--outfile', self.path(name + '-key.pem'))
        return self.path(name + '-key.pem')

    def ca(self, ca):
        certtool('--generate-self-signed', '--load-privkey', self.key(ca),
                 '--template', self.template(ca, CA_TEMPLATE.format(
                     cn='mig2 test ' + ca)),
                 '--outfile', self.path(ca + '-cert.pem'))

    def leaf(self, ca, kind, text):
        name = '%s-%s' % (ca, kind)
        certtool('--generate-certificate', '--load-privkey', self.key(name),
                 '--load-ca-certificate', self.path(ca + '-cert.pem'),
                 '--load-ca-privkey', self.path(ca + '-key.pem'),
                 '--template', self.template(name, text),
                 '--outfile', self.path(name + '-cert.pem'))

    def creds_dir(self, name, trust, leaf_ca, endpoint):
        """A tls-creds-x509 dir: trusting @trust, holding the @endpoint
        certificate issued by @leaf_ca."""
        d = os.path.join(self.base, name)
        os.mkdir(d)
        shutil.copy(self.path(trust + '-cert.pem'),
                    os.path.join(d, 'ca-cert.pem'))
        for ext in ('cert', 'key'):
            shutil.copy(self.path('%s-%s-%s.pem' % (leaf_ca, endpoint, ext)),
                        os.path.join(d, '%s-%s.pem' % (endpoint, ext)))
        return d


# ---- a TCP proxy that watches TLS record framing -------------------------

class Stream:
    """One direction of one connection: its first bytes and its TLS
    records (type, length), parsed as they pass."""

    def __init__(self):
        self.head = b''
        self.records = []
        self.pending = b''
        self.total = 0

    def feed(self, data):
        if len(self.head) < 64:
            self.head += data[:64 - len(self.head)]
        self.total += len(data)
        self.pending += data
        while len(self.pending) >= 5:
            length = int.from_bytes(self.pending[3:5], 'big')
            if len(self.pending) < 5 + length:
                break
            self.records.append((self.pending[0], length))
            self.pending = self.pending[5 + length:]
            if len(self.records) > 8:
                self.records = self.records[:2] + self.records[-6:]


class TlsWatcher(TcpRelay):
    """TCP proxy in front of a destination; every connection's two
    directions are recorded as Streams."""

    def __init__(self, target_port):
        self.conns = []             # [(to_dst Stream, to_src Stream)]
        super().__init__(target_port, self._watch)

    def _watch(self, index, to_target):
        if to_target:
            self.conns.append((Stream(), Stream()))
        return self.conns[index][0 if to_target else 1].feed


# ---- test cases ---------------------------------------------------------

TLS_HANDSHAKE = 22
TLS_ALERT_1_3 = 19      # TLS 1.3 alert: 2 bytes + type + 16-byte AEAD tag
TLS_APPDATA = 23


@unittest.skipIf(CERTTOOL is None, 'certtool (gnutls-bin) is not installed')
class TlsCase(VmTestCase):

    @classmethod
    def setUpClass(cls):
        base = tempfile.gettempdir()
        cls.pki_dir = tempfile.mkdtemp(prefix='mig2tls-',
                                       dir=base if len(base) < 60 else '/tmp')
        pki = Pki(cls.pki_dir)
        cls.dirs = {
            'src': pki.creds_dir('src', 'ca1', 'ca1', 'client'),
            'dst': pki.creds_dir('dst', 'ca1', 'ca1', 'server'),
            # a server certificate from a CA the source does not trust
            'dst-other-ca': pki.creds_dir('dst-other-ca', 'ca1', 'ca2',
                                          'server'),
            # a client certificate from a CA the destination does not trust
            'src-other-ca': pki.creds_dir('src-other-ca', 'ca1', 'ca2',
                                          'client'),
        }

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pki_dir, True)

    def creds(self, which, endpoint, *extra):
        return ('--object', ','.join(['tls-creds-x509', 'id=tls0',
                                      'dir=' + self.dirs[which],
                                      'endpoint=' + endpoint] + list(extra)))

    def source(self, name='src', creds='src', tls=True, **params):
        mem = make_memory_file(os.path.join(self.tmp, name + '.ram'), RAM)
        args = ['--memory', '%dM' % (RAM // MiB), '--memory-file', mem]
        if creds:
            args += self.creds(creds, 'client')
        src = self.vm(name, *args)
        src.execute('migrate-set-capabilities', {'capabilities': [
            {'capability': 'multifd', 'state': True}]})
        p = {'multifd-channels': 2, 'max-bandwidth': 0}
        if tls:
            p['tls-creds'] = 'tls0'
        p.update(params)
        src.execute('migrate-set-parameters', p)
        return src

    def destination(self, name='dst', creds='dst', tls=True, authz=None,
                    unix=False, chan='handshake', params=None):
        args = ['--memory', '%dM' % (RAM // MiB)]
        if creds:
            args += self.creds(creds, 'server')
        if authz is not None:
            args += ['--object', 'authz-simple,id=auth0,identity=' +
                     authz.replace(',', ',,')]
        dst = self.vm(name, '--incoming', 'defer', *args)
        p = {}
        if tls:
            p['tls-creds'] = 'tls0'
        if authz is not None:
            p['tls-authz'] = 'auth0'
        p.update(params or {})
        if p:
            dst.execute('migrate-set-parameters', p)
        if unix:
            addr = unix_addr(os.path.join(self.tmp, name + '.mig'))
            dst.execute('migrate-incoming', {'channels': channels(addr, chan)})
            return dst, addr
        dst.execute('migrate-incoming',
                    {'channels': channels(tcp_addr('127.0.0.1', 0), chan)})
        return dst, tcp_addr('127.0.0.1', dst.incoming_port())

    def migrate_ok(self, src, dst, addr, mode='handshake'):
        before = src.digest()
        info, dinfo = self.migrate(src, dst, addr, mode)
        self.assertEqual(src.status(), 'postmigrate')
        self.assertEqual(dst.status(), 'running')
        self.assertEqual(dst.digest(), before)
        self.assertGreaterEqual(info['ram']['normal'], RAM // 4096, info)
        return info, dinfo

    def rejected(self, dst, timeout=None):
        """The destination's refused connections, once there is one."""
        deadline = time.monotonic() + (timeout or scaled(10))
        while time.monotonic() < deadline:
            r = dst.query_migrate().get('x-rejected-connections', [])
            if r:
                return r
            time.sleep(0.05)
        self.fail('the destination noted no refused connection: %r\n%s'
                  % (dst.query_migrate(), dst.stderr()))

    def refused(self, src, dst, src_words, dst_words):
        """The migration failed before any RAM moved, with @src_words in
        the source's error-desc and @dst_words in the destination's note
        of the refused connection (and on its stderr); the source runs on
        with its guest unchanged and the destination still waits."""
        before = src.digest()
        src.execute('migrate', migrate_args(self.addr))
        info = wait_migration(src, FINAL_STATUSES)
        self.assertFailedBeforeRam(info)
        for w in src_words:
            self.assertIn(w, info['error-desc'], info)
        self.assertEqual(src.status(), 'running')
        self.assertEqual(src.digest(), before)
        notes = self.rejected(dst)
        text = ' | '.join(n['detail'] for n in notes)
        self.assertTrue(all(n['reason'] == 'tls' for n in notes), notes)
        for w in dst_words:
            self.assertIn(w, text, notes)
            self.assertIn(w, dst.stderr())
        # Refusing a client does not end the incoming migration.
        self.assertEqual(dst.query_migrate()['status'], 'setup')
        self.assertEqual(dst.status(), 'inmigrate')
        return info['error-desc'], text


class TlsMigrationTest(TlsCase):

    def check_handshake(self, src, dst):
        for vm, peer_dn in ((src, None), (dst, CLIENT_DN)):
            hs = handshake_info(vm)
            self.assertIn('tls-binding', hs['features']['common'], hs)
            self.assertEqual(hs['tls']['version'], 'TLS1.3', hs)
            self.assertEqual(hs['tls']['binding-label'],
                             'EXPORTER-mig2-v2-binding', hs)
            self.assertEqual(hs['tls'].get('peer-certificate-dn'), peer_dn,
                             hs)
            # TLS settings are local: never in the negotiated config.
            names = [c['name'] for c in hs['configuration']]
            self.assertFalse([n for n in names if n.startswith('tls')],
                             names)
        self.assertEqual(config_entry(handshake_info(src),
                                      'multifd-channels')['final'], 2)

    def test_tls_multifd(self):
        """Two multifd channels over TLS, the hostname taken from the
        address (an IP: the certificate's IP SAN), authz on."""
        src = self.source()
        dst, self.addr = self.destination(authz=CLIENT_DN)
        params = dst.execute('query-migrate-parameters')
        self.assertEqual((params['tls-creds'], params['tls-hostname'],
                          params['tls-authz']), ('tls0', '', 'auth0'))
        self.migrate_ok(src, dst, self.addr)
        self.check_handshake(src, dst)
        self.assertTrue(capability(dst, 'multifd'))
        self.assertNotIn('x-rejected-connections', dst.query_migrate())
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_every_channel_is_tls(self):
        """Through a proxy: the main channel and both multifd channels
        start with a TLS handshake, nothing of mig2 shows in clear, and
        each multifd channel ends with close_notify.  The proxy's address
        is not the certificate's name: tls-hostname says which."""
        src = self.source(**{'tls-hostname': 'localhost'})
        dst, addr = self.destination()
        proxy = TlsWatcher(int(addr['port']))
        self.addCleanup(proxy.close)
        self.migrate_ok(src, dst, tcp_addr('127.0.0.1', proxy.port))
        self.check_handshake(src, dst)
        self.quit_ok(src)
        self.quit_ok(dst)
        time.sleep(0.2)
        self.assertEqual(len(proxy.conns), 3, proxy.conns)
        big = 0
        for up, down in proxy.conns:
            for st in (up, down):
                self.assertEqual(st.head[:2], bytes([TLS_HANDSHAKE, 3]),
                                 st.head)
                self.assertNotIn(b'QEVM', st.head)
                self.assertNotIn(b'MIG2', st.head)
            self.assertEqual(up.pending, b'', 'a torn TLS record')
            big = max(big, up.total)
            if up.total > RAM // 4:
                # a multifd channel: RAM went there, in full records
                self.assertEqual(up.records[-1], (TLS_APPDATA,
                                                  TLS_ALERT_1_3), up.records)
        # the RAM (no zero page) crossed encrypted, split over channels
        self.assertGreater(sum(u.total for u, _ in proxy.conns), RAM)
        self.assertLess(big, RAM)

    def tls_client(self, port, creds, data):
        """Connect with Python's TLS as a client with @creds's certificate,
        send @data, read to the end.  Returns (answer, error text)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(os.path.join(self.dirs['src'],
                                               'ca-cert.pem'))
        d = self.dirs[creds]
        ctx.load_cert_chain(os.path.join(d, 'client-cert.pem'),
                            os.path.join(d, 'client-key.pem'))
        raw = socket.create_connection(('127.0.0.1', port),
                                       timeout=scaled(10))
        got = b''
        try:
            with ctx.wrap_socket(raw, server_hostname='localhost') as s:
                s.sendall(data)
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        return got, None
                    got += chunk
        except (ssl.SSLError, OSError) as e:
            return got, str(e)
        finally:
            raw.close()

    def test_rogue_connections_during_tls_migration(self):
        """While a TLS migration runs, the listener refuses: a plaintext
        channel (ERROR tls-required, in clear), a TLS client whose
        certificate is from another CA (an alert), garbage inside a good
        TLS session (ERROR protocol) and a second source over TLS (ERROR
        busy).  The migration completes regardless."""
        from test_channels import (CODE_BUSY, CODE_PROTOCOL, FRAME_ERROR,
                                   QEVM_V4, parse_error, parse_frames, talk)

        src = self.source(**{'max-bandwidth': 24 * MiB})
        dst, addr = self.destination()
        port = int(addr['port'])
        before = src.digest()
        src.execute('migrate', migrate_args(addr))
        wait_migration(src, ('active',))
        # 1. a plaintext channel header
        ans = talk('127.0.0.1', port, b'MIG2\0\1\0\x3c' + b'x' * 60)
        (ftype, _, payload), = parse_frames(ans)
        self.assertEqual(ftype, FRAME_ERROR)
        err = parse_error(payload)
        self.assertEqual(err['code'], 11, err)
        self.assertIn('requires TLS', err['message'])
        # 2. a certificate this destination does not trust
        ans, why = self.tls_client(port, 'src-other-ca', b'MIG2')
        self.assertEqual(ans, b'')
        self.assertTrue(why, 'the destination accepted a foreign client')
        # 3. garbage in a good session: refused inside TLS
        ans, why = self.tls_client(port, 'src', b'GARBAGE!' * 8)
        (ftype, _, payload), = parse_frames(ans)
        self.assertEqual(parse_error(payload)['code'], CODE_PROTOCOL)
        # 4. another source
        ans, why = self.tls_client(port, 'src', QEVM_V4 + b'\0' * 8)
        (ftype, _, payload), = parse_frames(ans)
        err = parse_error(payload)
        self.assertEqual((err['code'], err['flags']), (CODE_BUSY, 1), err)
        info = wait_migration(src, FINAL_STATUSES)
        self.assertEqual(info['status'], 'completed', info)
        wait_migration(dst, FINAL_STATUSES)
        self.assertEqual(dst.digest(), before)
        notes = [(n['reason'], n['detail'])
                 for n in dst.query_migrate()['x-rejected-connections']]
        text = repr(notes)
        self.assertIn("('tls', 'a plaintext connection, but this destination "
                      "requires TLS')", text)
        self.assertIn("certificate did not verify", text)
        self.assertIn("'channel/header'", text)
        self.assertIn("'busy'", text)
        self.assertEqual(len(notes), 4, notes)
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_silent_clients_before_the_tls_source(self):
        """Clients that reach a TLS destination's listener before the
        source and then stall or send no TLS: each is dropped on its own
        deadline or at once, noted, and the source still gets through
        without waiting for them."""
        dst, addr = self.destination(params={'x-stall-timeout': 1000})
        port = int(addr['port'])
        socks = []
        for data in (b'', bytes([TLS_HANDSHAKE, 3, 1]),
                     b'GET / HTTP/1.0\r\n\r\n'):
            s = socket.create_connection(('127.0.0.1', port))
            self.addCleanup(s.close)
            s.sendall(data)
            socks.append(s)
        # Not a migration stream: closed at once, without a word (reset,
        # since the rest of its request stays unread).
        socks[2].settimeout(scaled(2))
        try:
            self.assertEqual(socks[2].recv(100), b'')
        except ConnectionResetError:
            pass
        # The half TLS record outlives its 1 s deadline, and says so.
        notes = self.rejected(dst)
        self.assertEqual([(n['reason'], n['detail']) for n in notes],
                         [('tls', 'no TLS handshake and preamble within '
                                  '1000 ms')])
        # The silent one is still waited on when the source comes.
        src = self.source()
        t0 = time.monotonic()
        self.migrate_ok(src, dst, addr)
        self.assertLess(time.monotonic() - t0, scaled(4))
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_legacy_stream_over_unix_socket(self):
        """TLS is below the stream: the legacy v3 stream over a unix
        socket, where only tls-hostname names the destination."""
        src = self.source(**{'multifd-channels': 1})
        src.execute('migrate-set-capabilities', {'capabilities': [
            {'capability': 'multifd', 'state': False}]})
        dst, addr = self.destination(unix=True, chan='main')
        with self.assertRaises(QmpError) as cm:
            src.execute('migrate', migrate_args(addr, 'main'))
        self.assertIn('No hostname available for TLS', cm.exception.desc)
        src.execute('migrate-set-parameters', {'tls-hostname': 'localhost'})
        self.migrate_ok(src, dst, addr, 'main')
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_qmp_and_objects(self):
        """QEMU's errors for unusable settings, at migrate time."""
        src = self.vm('src', '--memory', '16M',
                      *self.creds('src', 'client'),
                      '--object', 'authz-simple,id=auth0,identity=CN=x')
        dst = self.vm('dst', '--memory', '16M', '--incoming', 'defer',
                      *self.creds('dst', 'server'))
        addr = {'channels': channels(tcp_addr('127.0.0.1', 1))}
        for params, words in (
                ({'tls-creds': 'nope'}, "No TLS credentials with id 'nope'"),
                ({'tls-creds': 'auth0'}, 'is not TLS credentials'),
                ({'tls-creds': 'tls0', 'tls-hostname': ''}, None)):
            src.execute('migrate-set-parameters', params)
            if words:
                with self.assertRaises(QmpError) as cm:
                    src.execute('migrate', addr)
                self.assertIn(words, cm.exception.desc)
        with self.assertRaises(QmpError) as cm:
            src.execute('migrate', {'uri': 'file:' +
                                    os.path.join(self.tmp, 'f')})
        self.assertIn('needs a socket transport', cm.exception.desc)
        # a client endpoint on the destination
        dst.execute('migrate-set-parameters', {'tls-creds': 'tls0'})
        self.assertEqual(dst.status(), 'inmigrate')
        bad = self.vm('bad', '--memory', '16M', '--incoming', 'defer',
                      *self.creds('src', 'client'))
        bad.execute('migrate-set-parameters', {'tls-creds': 'tls0'})
        with self.assertRaises(QmpError) as cm:
            bad.execute('migrate-incoming', addr)
        self.assertIn('Expected TLS credentials for a server endpoint',
                      cm.exception.desc)
        # null and "" turn TLS off, as in QEMU
        src.execute('migrate-set-parameters', {'tls-creds': None})
        self.assertEqual(src.execute('query-migrate-parameters')
                         ['tls-creds'], '')
        with self.assertRaises(QmpError):
            src.execute('migrate-set-parameters', {'tls-creds': 5})
        self.assertEqual(src.status(), 'running')
        for vm in (src, dst, bad):
            self.quit_ok(vm)

    def test_bad_object(self):
        """Credentials are loaded at start-up: a missing file stops it."""
        empty = os.path.join(self.tmp, 'empty')
        os.mkdir(empty)
        for spec, words in (
                ('tls-creds-x509,id=t,dir=%s,endpoint=server' % empty,
                 'Unable to access credentials %s/ca-cert.pem' % empty),
                ('tls-creds-x509,id=t,dir=%s,endpoint=server,verify-peer=x'
                 % self.dirs['dst'], "'verify-peer'"),
                ('tls-creds-x509,id=t,dir=%s,endpoint=client,priority=BOGUS'
                 % self.dirs['src'], 'priority'),
                ('authz-simple,id=a', "'identity' is missing"),
                ('secret,id=s,data=x', "invalid object type 'secret'")):
            with self.subTest(spec=spec):
                p = subprocess.run(
                    [MIG2_VM,
                     '--memory', '16M', '--object', spec,
                     '--qmp', 'unix:' + os.path.join(self.tmp, 'x.qmp')],
                    capture_output=True, text=True, timeout=scaled(10))
                self.assertNotEqual(p.returncode, 0)
                self.assertIn(words, p.stderr)


class TlsRefusalTest(TlsCase):
    """Each refusal: a clear error on both sides, the source runs on."""

    def test_wrong_ca_server_certificate(self):
        src = self.source()
        dst, self.addr = self.destination(creds='dst-other-ca')
        self.refused(
            src, dst,
            ['TLS handshake with', 'certificate did not verify',
             'issuer is unknown'],
            ['TLS handshake failed', 'the source refused the TLS session'])
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_wrong_ca_client_certificate(self):
        src = self.source(creds='src-other-ca')
        dst, self.addr = self.destination()
        # GnuTLS offers no certificate from a CA the server did not name.
        self.refused(src, dst,
                     ['the destination refused the TLS session'],
                     ['the source sent no certificate, or none issued by a '
                      'CA this end trusts'])
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_wrong_hostname(self):
        src = self.source(**{'tls-hostname': 'not-the-destination.example'})
        dst, self.addr = self.destination()
        self.refused(src, dst,
                     ["TLS handshake with 'not-the-destination.example'",
                      'The name in the certificate does not match'],
                     ['the source refused the TLS session'])
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_unauthorised_client_dn(self):
        src = self.source()
        dst, self.addr = self.destination(
            authz='C=GB,O=mig2 tests,CN=someone-else')
        self.refused(src, dst,
                     ['the destination refused the TLS session',
                      'Access was denied'],
                     ["authz check for '%s' is denied" % CLIENT_DN,
                      "tls-authz 'auth0'"])
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_plaintext_source_to_tls_destination(self):
        """The destination answers ERROR tls-required, then still takes
        a TLS source."""
        plain = self.source('plain', creds=None, tls=False)
        dst, self.addr = self.destination()
        self.refused(plain, dst,
                     ['tls-required', 'this destination requires TLS'],
                     ['plaintext migration (QEVM v4)',
                      'requires TLS'])
        src = self.source()
        self.migrate_ok(src, dst, self.addr)
        self.quit_ok(src)
        self.quit_ok(dst)
        self.quit_ok(plain)

    def test_tls_source_to_plaintext_destination(self):
        src = self.source()
        dst, self.addr = self.destination(creds=None, tls=False)
        self.refused(src, dst,
                     ['TLS handshake with', 'closed the connection',
                      'does the destination have tls-creds set'],
                     ['a TLS client connected', 'no tls-creds'])
        self.quit_ok(src)
        self.quit_ok(dst)


QEMU = shutil.which('qemu-system-x86_64')


@unittest.skipIf(CERTTOOL is None or QEMU is None,
                 'needs certtool and qemu-system-x86_64')
class QemuTlsTest(TlsCase):
    """The TLS layer against QEMU 7.2's own (the legacy v3 stream inside,
    mutual authentication, the hostname from the address): both ways."""

    def qemu(self, name, creds, endpoint, incoming=False):
        from test_qemu import Qemu

        q = Qemu.__new__(Qemu)
        q.name = name
        q.qmp_path = os.path.join(self.tmp, name + '.qmp')
        q.stderr_path = os.path.join(self.tmp, name + '.stderr')
        cmd = [QEMU, '-M', 'none', '-display', 'none', '-nodefaults',
               '-accel', 'tcg', '-qmp',
               'unix:%s,server=on,wait=off' % q.qmp_path,
               '-object', 'tls-creds-x509,id=tls0,dir=%s,endpoint=%s'
               % (self.dirs[creds], endpoint)]
        if incoming:
            cmd += ['-incoming', 'defer']
        q._stderr = open(q.stderr_path, 'wb')
        q.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL,
                                  stderr=q._stderr,
                                  preexec_fn=_die_with_parent)
        q.qmp = None
        self.addCleanup(q.stop_process)
        q.start()
        q.execute('migrate-set-parameters', {'tls-creds': 'tls0'})
        return q

    def test_qemu_to_mig2(self):
        from test_qemu import qemu_wait_migration

        src = self.qemu('qsrc', 'src', 'client')
        dst = self.vm('dst', '--machine', 'none', '--incoming', 'defer',
                      *self.creds('dst', 'server'), '--object',
                      'authz-simple,id=auth0,identity=' +
                      CLIENT_DN.replace(',', ',,'))
        dst.execute('migrate-set-parameters', {'tls-creds': 'tls0',
                                               'tls-authz': 'auth0'})
        dst.execute('migrate-incoming', {'uri': 'tcp:127.0.0.1:0'})
        src.execute('migrate', {'uri': 'tcp:127.0.0.1:%d'
                                % dst.incoming_port()})
        self.assertEqual(qemu_wait_migration(src)['status'], 'completed')
        info = wait_migration(dst, FINAL_STATUSES, timeout=scaled(10))
        self.assertEqual(info['status'], 'completed', (info, dst.stderr()))
        self.assertNotIn('x-rejected-connections', info)
        self.quit_ok(dst)

    def test_mig2_to_qemu(self):
        from test_qemu import qemu_wait_migration

        src = self.vm('src', '--machine', 'none',
                      *self.creds('src', 'client'))
        src.execute('migrate-set-parameters', {'tls-creds': 'tls0'})
        dst = self.qemu('qdst', 'dst', 'server', incoming=True)
        dst.execute('migrate-incoming', {'uri': 'tcp:127.0.0.1:0'})
        port = int(dst.execute('query-migrate')['socket-address'][0]['port'])
        src.execute('migrate', {'uri': 'tcp:127.0.0.1:%d' % port})
        info = wait_migration(src, FINAL_STATUSES, timeout=scaled(10))
        self.assertEqual(info['status'], 'completed', info)
        self.assertEqual(qemu_wait_migration(dst)['status'], 'completed',
                         dst.stderr())
        self.assertEqual(src.status(), 'postmigrate')
        self.quit_ok(src)

    def test_qemu_plaintext_to_mig2_tls(self):
        """A QEMU without TLS at a mig2 TLS destination: refused, noted,
        nothing loaded.  QEMU itself may call it completed: its one-way v3
        stream (a few hundred bytes with -M none) fits in the socket
        buffers before the destination closes, and v3 has no answer to
        wait for.  That is the legacy stream's blind spot, not TLS's."""
        from test_qemu import Qemu, qemu_wait_migration

        src = Qemu(self.tmp, 'qplain')
        self.addCleanup(src.stop_process)
        src.start()
        dst, addr = self.destination(chan='main')
        src.execute('migrate', {'uri': 'tcp:127.0.0.1:%s' % addr['port']})
        self.assertIn(qemu_wait_migration(src)['status'],
                      ('completed', 'failed'))
        notes = self.rejected(dst)
        self.assertIn('plaintext legacy migration stream',
                      notes[0]['detail'])
        self.assertEqual(dst.query_migrate()['status'], 'setup')
        self.quit_ok(dst)


if __name__ == '__main__':
    if CERTTOOL is None:
        print('SKIP: certtool (gnutls-bin) is not installed')
        sys.exit(77)
    unittest.main()
