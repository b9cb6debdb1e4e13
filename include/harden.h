/*
 * harden.h — what a process that holds keys and tokens does to itself before
 * it reads any: no core dumps, no ptrace attach by its own user.
 */
#ifndef OAUTH_HARDEN_H
#define OAUTH_HARDEN_H

#include "common.h"

/*
 * Makes the calling process non-dumpable (prctl PR_SET_DUMPABLE 0: no core
 * file, /proc/PID/mem and ptrace closed to the same user) and lowers both
 * RLIMIT_CORE limits to 0, so that neither a crash nor a later exec'd child
 * writes memory that held keys or tokens to disk. Call first thing in main().
 * Returns 0, or -1 with a reason in err (the caller warns and carries on:
 * refusing to run would protect nothing more than the OS allows).
 */
int harden_process(char *err, size_t errlen) WUR;

#endif
