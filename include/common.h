/*
 * common.h — the few definitions every module shares: exit codes of SPEC §2,
 * the warn_unused_result marker and the size of caller-supplied error buffers.
 * Nothing here allocates or holds state.
 */
#ifndef OAUTH_COMMON_H
#define OAUTH_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WUR                    __attribute__((warn_unused_result))
#define PRINTF_LIKE(fmt, args) __attribute__((format(printf, fmt, args)))

/* Error buffers passed down by callers that want the detail. */
#define ERRBUF_LEN 512

/* Exit codes (SPEC §2), shared by both binaries. */
enum exit_code {
    EXIT_OK_ = 0,
    EXIT_WORK_FAILED = 1,  /* e.g. --once with failed refreshes */
    EXIT_USAGE = 64,       /* EX_USAGE: bad command line */
    EXIT_UNAVAILABLE = 69, /* EX_UNAVAILABLE: database or a required service */
    EXIT_CONFIG = 78,      /* EX_CONFIG: RestartPreventExitStatus=78 */
};

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
