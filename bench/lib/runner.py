"""Running oauth-refreshd under measurement.

Owns: starting the daemon as our child (optionally under a wrapper such as
`perf record`), collecting its exact resource usage with wait4() (user and
system CPU, peak RSS), the CPU spent meanwhile by PostgreSQL and nginx, and
reading the summary lines the daemon logs.
Must never: leave the daemon running (it is killed on any error).
"""

import os
import re
import signal
import subprocess
import sys
import time

import procstat

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "integration"))
from lib.daemon import clean_env  # noqa: E402


class Result:
    pass


def run_daemon(daemon_path, config, log_path, args=(), wrapper=(), watch_pids=None,
               nginx=None, stop_after=None, rss_interval=None, timeout=3600, command=None):
    """Runs the daemon to completion (or SIGTERMs it after stop_after seconds).
    Returns a Result with wall, user, sys, maxrss_kb, rc, log, pg_cpu, nginx_cpu,
    rss_samples. command: run this argv instead of the daemon (the Python peer), measured
    the same way."""
    pg_pids = watch_pids() if watch_pids else []
    ng_pids = nginx.worker_pids() if nginx else []
    pg0, ng0 = procstat.tree_cpu(pg_pids), procstat.tree_cpu(ng_pids)
    argv = list(wrapper) + (list(command) if command else [daemon_path, "-c", config] + list(args))
    log = open(log_path, "wb")
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            env=clean_env(), start_new_session=True)
    sampler = procstat.RssSampler(proc.pid, rss_interval).start() if rss_interval else None
    r = Result()
    r.started_wall = time.time()
    r.hwm_kb = 0
    r.peak_split = (None, None)
    status = None
    pg1 = dict(pg0)
    try:
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            hwm = procstat.hwm_kb(proc.pid)
            if hwm and hwm > r.hwm_kb:
                r.hwm_kb = hwm
                # What the peak is made of: heap and other anonymous memory, or pages
                # of the shared libraries (file-backed, shared with other processes).
                r.peak_split = (procstat.rss_kb(proc.pid, "RssAnon"),
                                procstat.rss_kb(proc.pid, "RssFile"))
            el = time.monotonic() - t0
            # PostgreSQL forks no new backends during a run; sample CPU now, not after
            # the daemon's backend has exited and taken its counters with it. Keep each
            # backend's highest reading: the last samples may come after the daemon has
            # closed its connection (a gone backend reads 0).
            now_cpu = procstat.tree_cpu(pg_pids + [p for p in (watch_pids() if watch_pids else [])
                                                   if p not in pg_pids])
            for p, c in now_cpu.items():
                pg1[p] = max(pg1.get(p, 0.0), c)
            if stop_after is not None and el >= stop_after and not getattr(r, "_termed", False):
                os.kill(proc.pid, signal.SIGTERM)
                r._termed = True
            if el > timeout:
                raise TimeoutError(f"daemon still running after {timeout}s")
            time.sleep(0.02)
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)
        raise
    finally:
        log.close()
        if sampler:
            r.rss_samples = sampler.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    r.wall = time.monotonic() - t0
    r.rc = proc.returncode
    r.user, r.sys = ru.ru_utime, ru.ru_stime
    # Peak RSS of the daemon itself: VmHWM sampled every 20 ms (see procstat.hwm_kb);
    # ru_maxrss would report the Python driver's size. Under a wrapper (perf,
    # valgrind) the sampled process is the wrapper.
    r.maxrss_kb = r.hwm_kb or ru.ru_maxrss
    ng1 = procstat.tree_cpu(ng_pids)
    r.pg_cpu = procstat.delta(pg0, pg1)
    r.nginx_cpu = procstat.delta(ng0, ng1)
    with open(log_path, errors="replace") as f:
        r.log = f.read()
    r.refreshed = parse_exit_counts(r.log)
    r.latency = parse_latency(r.log)
    return r


def parse_exit_counts(log):
    m = re.search(r"exiting: (\d+) refreshed, (\d+) failed, (\d+) revoked", log)
    if not m:
        return None
    return {"refreshed": int(m.group(1)), "failed": int(m.group(2)), "revoked": int(m.group(3))}


def parse_latency(log):
    """The daemon's claim-to-written summary, when this build logs one:
    'claim to written: p50 12.3 ms, p90 .. ms, p99 .. ms, max .. ms (N results)'."""
    m = re.search(r"claim to written: p50 ([\d.]+) ms, p90 ([\d.]+) ms, p99 ([\d.]+) ms, "
                  r"max ([\d.]+) ms", log)
    if not m:
        return None
    return {"p50": float(m.group(1)), "p90": float(m.group(2)), "p99": float(m.group(3)),
            "max": float(m.group(4))}
