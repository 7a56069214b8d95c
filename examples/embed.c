/*
 * embed.c - the smallest complete use of libmig2
 *
 * Runs a source and a destination over a socketpair, one per process,
 * using only the public API: describe each endpoint with a profile, feed
 * the engine what the socket delivers, send what the engine queues, and
 * react to its events.  Build: cc embed.c $(pkg-config --cflags --libs mig2)
 *
 * Usage: embed [--mismatch]   (--mismatch gives the destination an older
 *                              serial device, so the handshake is refused
 *                              and both problems are reported)
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mig2/mig2.h>

/* Both sides describe the same small machine; @old_serial lowers a version. */
static Mig2Profile *make_profile(bool source, bool old_serial)
{
    Mig2Profile *p = mig2_profile_new();
    int dev;

    if (!p) {
        return NULL;
    }
    mig2_profile_set_build(p, source ? "embed-source 1.0" : "embed-dest 1.0");
    mig2_profile_set_machine(p, "pc-i440fx-7.2");
    mig2_profile_add_feature(p, MIG2_FEAT_RETURN_PATH, false);
    mig2_profile_add_feature(p, MIG2_FEAT_ZERO_PAGE, false);
    mig2_profile_add_ram_block(p, "pc.ram", 256u << 20, 4096);
    mig2_profile_add_device(p, "timer", 0, 1, 2);
    /* The source saves serial state v3..v4; an old destination loads v1..v2. */
    dev = mig2_profile_add_device(p, "serial", 0, source ? 3 : 1,
                                  old_serial ? 2 : 4);
    /* The source needs "fifo" now (an old destination lacks it); */
    /* "legacy-irq" is not needed, so it may be left out. */
    if (source || !old_serial) {
        mig2_profile_add_subsection(p, dev, "fifo", source);
    }
    if (source) {
        mig2_profile_add_subsection(p, dev, "legacy-irq", false);
        /* Only the source says anything about configuration. */
        mig2_profile_propose_u64(p, "multifd-channels", 8, 0);
        mig2_profile_propose_bool(p, "postcopy-ram", true, 0);
    } else {
        /* The destination's own policy: at most 4 channels, no postcopy. */
        mig2_profile_policy_clamp(p, "multifd-channels", 4);
        mig2_profile_policy_refuse(p, "postcopy-ram");
    }
    return p;
}

static int send_all(int fd, Mig2Engine *e)
{
    const uint8_t *out;
    size_t len;
    ssize_t n;

    while ((out = mig2_engine_output(e, &len)) != NULL) {
        n = write(fd, out, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        mig2_engine_output_consumed(e, (size_t)n);
    }
    return 0;
}

static void print_results(const char *who, const Mig2Engine *e)
{
    const uint8_t *h = mig2_result_transcript_hash(e);
    size_t i;

    printf("[%s] revision %u, peer build \"%s\", %u round trip(s)\n", who,
           mig2_result_revision(e), mig2_result_peer_build(e),
           mig2_result_round_trips(e));
    for (i = 0; i < mig2_result_config_count(e); i++) {
        const Mig2ConfigResult *c = mig2_result_config(e, i);

        printf("[%s]   config %s: %s", who, c->name,
               mig2_config_status_name(c->status));
        if (c->final.type == MIG2_CFG_U64) {
            printf(" -> %llu\n", (unsigned long long)c->final.u);
        } else {
            printf(" -> %s\n", c->final.b ? "on" : "off");
        }
    }
    for (i = 0; i < mig2_result_device_count(e); i++) {
        const Mig2DeviceResult *d = mig2_result_device(e, i);

        printf("[%s]   device %s/%u at version %u\n", who, d->id,
               d->instance, d->version);
    }
    for (i = 0; i < mig2_result_omitted_count(e); i++) {
        const Mig2OmittedSubsection *o = mig2_result_omitted(e, i);

        printf("[%s]   omitted subsection %s/%s\n", who, o->device,
               o->subsection);
    }
    if (h) {
        printf("[%s]   transcript %02x%02x%02x%02x...\n", who, h[0], h[1],
               h[2], h[3]);
    }
}

/* Drive one engine over @fd until the handshake ends; 0 on success. */
static int run(const char *who, int fd, Mig2Engine *e)
{
    uint8_t buf[65536];
    Mig2Event ev;
    int result = -1;
    bool done = false;

    while (!done) {
        ssize_t n, used;

        if (send_all(fd, e) < 0) {
            fprintf(stderr, "[%s] send failed\n", who);
            return -1;
        }
        if (mig2_engine_state(e) != MIG2_STATE_RUNNING) {
            break;
        }
        n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            fprintf(stderr, "[%s] peer closed the connection during the "
                    "handshake\n", who);
            return -1;
        }
        used = mig2_engine_recv(e, buf, (size_t)n);
        if (used >= 0 && used < n) {
            /* The rest belongs to the data phase: hand it to the caller. */
            printf("[%s] %zd bytes of data phase follow\n", who, n - used);
        }
        while (mig2_engine_next_event(e, &ev)) {
            char *text;

            switch (ev.type) {
            case MIG2_EV_NEGOTIATED:
                print_results(who, e);
                break;
            case MIG2_EV_COMPLETE:
                printf("[%s] handshake complete\n", who);
                result = 0;
                done = true;
                break;
            case MIG2_EV_FAILED:
            case MIG2_EV_REJECTED:
                text = mig2_error_format(ev.error);
                printf("[%s] %s\n", who, text ? text : "error");
                free(text);
                done = true;
                break;
            default:
                break;
            }
        }
    }
    /* Flush what is still queued: our FINISHED, READY or ERROR frame. */
    send_all(fd, e);
    return result;
}

int main(int argc, char **argv)
{
    bool mismatch = argc > 1 && strcmp(argv[1], "--mismatch") == 0;
    int sv[2], status = 0, rc = 0;
    pid_t pid;

    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
        perror("socketpair");
        return 1;
    }
    pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        Mig2Profile *p = make_profile(false, mismatch);
        Mig2Engine *e = mig2_engine_new(MIG2_ROLE_DESTINATION, p, NULL, &rc);

        close(sv[0]);
        mig2_profile_free(p);
        if (!e) {
            fprintf(stderr, "destination: %s\n", mig2_strerror(rc));
            _exit(2);
        }
        rc = run("dst", sv[1], e);
        mig2_engine_free(e);
        close(sv[1]);
        fflush(stdout);
        _exit(rc ? 1 : 0);
    } else {
        Mig2Profile *p = make_profile(true, false);
        Mig2Engine *e = mig2_engine_new(MIG2_ROLE_SOURCE, p, NULL, &rc);

        close(sv[1]);
        mig2_profile_free(p);
        if (!e) {
            fprintf(stderr, "source: %s\n", mig2_strerror(rc));
            return 2;
        }
        rc = run("src", sv[0], e);
        mig2_engine_free(e);
        close(sv[0]);
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            rc = -1;
        }
    }
    return rc ? 1 : 0;
}
