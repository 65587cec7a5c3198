"""Running one command and measuring it.

Per run: wall time (monotonic clock around the command), user+sys CPU and peak RSS (from
`/usr/bin/time -v`, i.e. the child's rusage), and bytes written (`write_bytes` of
/proc/<pid>/io: bytes the process caused to be sent to the storage layer, counted when a
page is dirtied).

write_bytes: a process's /proc/<pid>/io includes the I/O of the children it has reaped
(the kernel folds a reaped child's counters into its parent's). This process reads its
own counters before and after the run, and the only thing it runs in between is
`/usr/bin/time` and the command, so the delta is the command's, its threads' and its
children's, read after they exited. For a command that hands its writes to a daemon
(ctr -> containerd) the caller adds the daemon's delta, read from /proc/<daemon>/io.
"""

import os
import statistics
import subprocess
import tempfile
import time


def read_io(pid="self"):
    out = {}
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            k, v = line.split(":")
            out[k.strip()] = int(v)
    return out


def read_stat_cpu(pid):
    """utime+stime of a live process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def read_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def thread_switches(pid):
    """{tid: (voluntary, involuntary)} context switches of every live thread of `pid`."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            st = read_status(f"{pid}/task/{tid}")
        except OSError:
            continue
        out[tid] = (int(st.get("voluntary_ctxt_switches", 0)),
                    int(st.get("nonvoluntary_ctxt_switches", 0)))
    return out


def watch_switches(pid, seconds, every=1.0):
    """Context switches of all threads of `pid` over `seconds`, sampled every `every` s:
    per thread, last seen minus first seen (a thread born in the window counts from 0).
    A thread that exits loses at most its last interval. Returns (voluntary, involuntary,
    max threads seen, threads that exited)."""
    first = thread_switches(pid)
    last = dict(first)
    peak = len(first)
    born = set()
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(every, left))
        now = thread_switches(pid)
        peak = max(peak, len(now))
        for tid, v in now.items():
            if tid not in first and tid not in born:
                born.add(tid)
            last[tid] = v
    vol = sum(last[t][0] - (first[t][0] if t in first else 0) for t in last)
    invol = sum(last[t][1] - (first[t][1] if t in first else 0) for t in last)
    exited = len(set(last) - set(thread_switches(pid)))
    return vol, invol, peak, exited


def kib(status_value):
    return int(status_value.split()[0])


def _parse_time_v(text):
    vals = {}
    for line in text.splitlines():
        k, _, v = line.strip().rpartition(": ")
        vals[k] = v
    return (float(vals["User time (seconds)"]), float(vals["System time (seconds)"]),
            int(vals["Maximum resident set size (kbytes)"]), vals.get("Exit status", "?"))


class Failed(RuntimeError):
    pass


def run(argv, env=None, cwd=None, stdout_path=None, timeout=1800):
    """Run argv under /usr/bin/time -v; return a dict with wall, user, sys, cpu, rss_kib,
    written (bytes)."""
    with tempfile.NamedTemporaryFile("r", prefix="bench-time-", suffix=".txt") as tf:
        out = open(stdout_path, "ab") if stdout_path else subprocess.DEVNULL
        try:
            io0 = read_io()
            t0 = time.monotonic()
            p = subprocess.run(["/usr/bin/time", "-v", "-o", tf.name, "--"] + list(argv),
                               env=env, cwd=cwd, stdout=out, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, timeout=timeout)
            wall = time.monotonic() - t0
            io1 = read_io()
        finally:
            if stdout_path:
                out.close()
        user, sys_, rss, _ = _parse_time_v(tf.read())
    if p.returncode != 0:
        raise Failed(f"{argv[0]} exited {p.returncode}: {p.stderr.decode(errors='replace')[-3000:]}")
    return {"wall": wall, "user": user, "sys": sys_, "cpu": user + sys_, "rss_kib": rss,
            "written": io1["write_bytes"] - io0["write_bytes"]}


def drop_dirty():
    """Flush what earlier runs left dirty, so that it is not written back during the next."""
    os.sync()


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def summarize(runs):
    """Medians (and min/max of wall) over a list of run dicts."""
    if not runs:
        return None
    keys = ("wall", "cpu", "user", "sys", "rss_kib", "written", "server_cpu")
    s = {k: median([r.get(k, 0.0) for r in runs]) for k in keys}
    s["wall_min"] = min(r["wall"] for r in runs)
    s["wall_max"] = max(r["wall"] for r in runs)
    s["n"] = len(runs)
    return s
