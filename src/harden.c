/*
 * harden.c — the process-wide protections both binaries apply at the start of
 * main(): no core dumps (RLIMIT_CORE 0, soft and hard) and not dumpable
 * (PR_SET_DUMPABLE 0). `oauth-refreshd --once` from cron, `oauth-refreshctl
 * decrypt` and `rotate-keys` hold keys and plaintext tokens; a crash must not
 * put them into a core file, whatever the distribution's core_pattern or
 * systemd-coredump does. Keys also live in sodium_malloc()ed memory that is
 * excluded from dumps (MADV_DONTDUMP), but tokens, conninfo and OpenSSL's and
 * libcurl's buffers do not: only the whole process can be excluded.
 *
 * It owns nothing else and never exits: a failure is reported to the caller.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "harden.h"

int harden_process(char *err, size_t errlen)
{
    int rc = 0;
    const struct rlimit none = {0, 0};
    if (setrlimit(RLIMIT_CORE, &none) != 0) {
        snprintf(err, errlen, "cannot disable core dumps (RLIMIT_CORE): %s", strerror(errno));
        rc = -1;
    }
    /* Also makes /proc/PID/{mem,environ,...} root's and refuses ptrace from
     * the same user; systemd, journald and sd_notify are unaffected. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
        snprintf(err, errlen, "cannot make the process non-dumpable: %s", strerror(errno));
        rc = -1;
    }
    return rc;
}
