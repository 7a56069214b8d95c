#!/usr/bin/env python3
"""Data-phase frames a conforming peer never sends (docs/protocol.md
sections 4.3, 4.5, 13), sent on purpose by a mig2-vm whose
--x-channel-test knobs make it misbehave after a real handshake:

- unknown frames without CRITICAL on multifd channels are skipped, and the
  migration completes; with CRITICAL they are refused (unknown-critical);
- a multifd frame announcing nearly 4 GiB is refused at once, before its
  payload is read or room is made for it, with the 16 MiB limit named;
- a RAM page at the end of the block is refused (offset + page size must
  not exceed the block size);
- SWITCHOVER, DONE and SYNC_ACK of the wrong length fail the migration.

Each refusal is checked on both sides: the side that refused names the
violation, the other side reports the ERROR it got, and the source's guest
keeps running."""

import time
import unittest

from vmlib import FINAL_STATUSES, migrate_args, scaled, wait_migration
from test_channels import ChannelCase

LIMIT = 16 * 1024 * 1024


class DataPhaseCase(ChannelCase):

    def run_migration(self, src_knob=None, dst_knob=None, multifd=0):
        """Migrate with the knobs; returns (src, dst, info, dinfo,
        seconds)."""
        src = self.source('src', *(('--x-channel-test', src_knob)
                                   if src_knob else ()))
        dst, addr = self.incoming('dst', '--memory', '64M',
                                  *(('--x-channel-test', dst_knob)
                                    if dst_knob else ()),
                                  exit_on_error=False)
        if multifd:
            # A destination that went silent instead of refusing would
            # show as a stall here, far later than a refusal.
            self.set_multifd(src, multifd, **{'x-stall-timeout': 10000})
        before = src.digest()
        t0 = time.monotonic()
        src.execute('migrate', migrate_args(addr))
        info = wait_migration(src, FINAL_STATUSES)
        dinfo = wait_migration(dst, FINAL_STATUSES)
        self.src_before = before
        return src, dst, info, dinfo, time.monotonic() - t0

    def assert_refused(self, src, dst, info, dinfo, code, text,
                       dst_ran=False):
        """The source failed with the destination's ERROR @code carrying
        @text; the destination failed with @text itself."""
        self.assertEqual(info['status'], 'failed', info)
        self.assertIn('destination reported peer error (%s)' % code,
                      info['error-desc'])
        self.assertIn(text, info['error-desc'])
        self.assertEqual(dinfo['status'], 'failed', dinfo)
        self.assertIn(text, dinfo['error-desc'])
        self.assertEqual(src.status(), 'running')
        self.assertEqual(dst.status(), 'inmigrate')
        self.quit_ok(src)
        self.quit_ok(dst)

    def assert_source_refused(self, src, info, text):
        """The source failed because the destination broke the protocol
        with @text, and resumed its guest."""
        self.assertEqual(info['status'], 'failed', info)
        self.assertEqual(info['error-desc'],
                         'destination broke the protocol: ' + text)
        self.assertEqual(src.status(), 'running')


class MultifdFramesTest(DataPhaseCase):

    def test_unknown_frames_skipped(self):
        """Before every CHANNEL_SYNC each channel sends a grease frame
        (0x1a2a, 7 bytes) and an unassigned channel frame (0x02f7, 70000
        bytes, more than any read buffer), neither CRITICAL."""
        src, dst, info, dinfo, _ = self.run_migration('unknown-frame',
                                                      multifd=2)
        self.assertEqual(info['status'], 'completed',
                         '%r\n%s' % (info, dst.stderr()))
        self.assertEqual(dinfo['status'], 'completed', dinfo)
        self.check_done(src, dst, info=info)
        self.assertEqual(dst.digest(), self.src_before)
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_unknown_critical_frame_refused(self):
        src, dst, info, dinfo, _ = self.run_migration('unknown-critical',
                                                      multifd=2)
        self.assert_refused(src, dst, info, dinfo, 'unknown-critical',
                            'unknown critical frame 0x02f7')

    def test_oversized_frame_refused_before_reading(self):
        """RAM frame header of 0xfffffff0 bytes whose head claims
        0x1ffffffd entries, and nothing after it: a destination that
        trusted the length would allocate 4 GiB and wait for the rest
        until the stall timeout."""
        src, dst, info, dinfo, secs = self.run_migration('oversized',
                                                         multifd=2)
        self.assert_refused(src, dst, info, dinfo, 'protocol',
                            'frame 0x0101 (RAM) announces 4294967280 '
                            'bytes, more than the %d-byte limit' % LIMIT)
        self.assertLess(secs, scaled(5))

    def test_ram_page_past_the_block_refused(self):
        src, dst, info, dinfo, _ = self.run_migration('ram-past-end',
                                                      multifd=2)
        self.assert_refused(src, dst, info, dinfo, 'protocol',
                            'RAM entry 0 (offset 0x4000000) is not a page '
                            'of block pc.ram (67108864 bytes)')


class MainChannelLengthsTest(DataPhaseCase):

    def test_switchover_with_payload(self):
        src, dst, info, dinfo, _ = self.run_migration('switchover-payload')
        self.assert_refused(src, dst, info, dinfo, 'protocol',
                            'SWITCHOVER frame of 4 bytes, expected none')

    def test_sync_ack_too_long(self):
        """The destination answers SYNC with 8 bytes of SYNC_ACK."""
        src, dst, info, dinfo, _ = self.run_migration(
            dst_knob='sync-ack-payload')
        self.assert_source_refused(src, info,
                                   'SYNC_ACK frame of 8 bytes, expected 4')
        # told with ERROR protocol, not left to guess
        self.assertEqual(dinfo['status'], 'failed', dinfo)
        self.assertIn('source reported peer error (protocol): SYNC_ACK '
                      'frame of 8 bytes', dinfo['error-desc'])
        self.assertEqual(dst.status(), 'inmigrate')
        self.quit_ok(src)
        self.quit_ok(dst)

    def test_done_with_payload(self):
        """A DONE that is not empty does not count: the source fails and
        resumes its guest (the destination, which took over, runs too:
        that is the misbehaving peer's doing)."""
        src, dst, info, dinfo, _ = self.run_migration(
            dst_knob='done-payload')
        self.assert_source_refused(src, info,
                                   'DONE frame of 4 bytes, expected 0')
        self.assertEqual(dinfo['status'], 'completed', dinfo)
        self.quit_ok(src)
        self.quit_ok(dst)


if __name__ == '__main__':
    unittest.main(verbosity=2)
