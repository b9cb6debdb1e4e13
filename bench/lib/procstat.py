"""CPU and memory accounting of processes, read from /proc.

Owns: reading utime+stime of a set of processes (PostgreSQL's backends, nginx's
workers) before and after a phase, so the report can say where the machine's
cores went; sampling a process's resident set while it runs.
Must never: signal or otherwise touch the processes it reads.
"""

import os
import threading

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of one process (and of its threads), in seconds; 0 if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # fields[0] is state (field 3); utime and stime are fields 14 and 15.
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def tree_cpu(pids):
    """{pid: cpu seconds} of the given processes."""
    return {p: cpu_seconds(p) for p in pids}


def delta(before, after):
    """CPU seconds spent between two tree_cpu() snapshots (processes that appeared count
    from zero; those that disappeared are lost, which is why we sample around phases in
    which the set is stable)."""
    return sum(after.get(p, 0.0) - before.get(p, 0.0) for p in after)


def rss_kb(pid, field="VmRSS"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def hwm_kb(pid):
    """Peak resident set of the process's current image (VmHWM). Unlike ru_maxrss it
    starts afresh at exec: ru_maxrss keeps the high-water mark of the memory the
    child shared with its parent before exec (here: the Python driver's ~50 MB)."""
    return rss_kb(pid, "VmHWM")


class RssSampler:
    """Samples a process's VmRSS every interval seconds in a thread."""

    def __init__(self, pid, interval=1.0):
        self.pid = pid
        self.interval = interval
        self.samples = []  # (seconds since start, kB)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import time
        t0 = time.monotonic()
        while not self._stop.is_set():
            kb = rss_kb(self.pid)
            if kb is None:
                break
            self.samples.append((time.monotonic() - t0, kb))
            self._stop.wait(self.interval)

    def start(self):
        self._t.start()
        return self

    def stop(self):
        self._stop.set()
        self._t.join(5)
        return self.samples
