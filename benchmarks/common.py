"""Shared helpers of the benchmark scripts: child processes, statistics, machine facts.

Nothing here imports TensorFlow. Every network address used by the
benchmarks is on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
WORK = Path(os.environ.get("BENCH_WORK", REPO / "build" / "bench"))
PYTHON = sys.executable
HUBEXPORT = str(Path(sys.executable).with_name("hubexport"))
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1_000_000  # bytes; throughputs are reported in MB/s (10**6 bytes)
MIB = 1 << 20


def log(msg: str) -> None:
    """Prints a progress line to stderr (the table goes to stdout)."""
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def child_env(**extra: str) -> dict:
    """Environment of the benchmark's children: no proxies, quiet TensorFlow."""
    env = dict(os.environ)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                "all_proxy", "HUBEXPORT_MIRROR", "HUBEXPORT_CACHE"):
        env.pop(var, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH_DIR)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(extra)
    return env


# --------------------------------------------------------------------------
# Child processes with wall time, peak RSS and I/O counters
# --------------------------------------------------------------------------


@dataclasses.dataclass
class ChildResult:
    """One finished child process.

    Attributes:
      argv: the command.
      returncode: exit status (negative: killed by that signal).
      wall: wall time from spawn to exit, seconds.
      maxrss: peak RSS of the child and its reaped descendants (wait4), bytes.
      tree_peak: peak of the summed RSS of the child's process tree, sampled
        every ``sample`` seconds (bytes; 0 if sampling was off).
      io: the child's /proc/<pid>/io counters at exit (rchar, read_bytes, ...).
      stdout, stderr: captured text.
      cpu: user + system CPU time of the child and its reaped descendants
        (wait4), seconds.
    """

    argv: list
    returncode: int
    wall: float
    maxrss: int
    tree_peak: int
    io: dict
    stdout: str
    stderr: str
    cpu: float = 0.0


def _read_io(pid: int) -> dict:
    try:
        text = Path("/proc/%d/io" % pid).read_text()
    except OSError:
        return {}
    return {k: int(v) for k, v in (line.split(": ") for line in text.splitlines())}


def proc_table() -> tuple[dict, dict]:
    """(parent pid by pid, RSS in bytes by pid) of every process /proc lists now."""
    parents = {}
    rss = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            statm = Path(entry.path, "statm").read_text()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(stat[stat.rfind(")") + 2:].split()[1])
        rss[pid] = int(statm.split()[1]) * PAGE
    return parents, rss


def _tree_rss(root: int) -> int:
    """Summed RSS (bytes) of ``root`` and every descendant still alive."""
    parents, rss = proc_table()
    total = 0
    for pid in rss:
        p = pid
        while p and p != root:
            p = parents.get(p, 0)
        if p == root:
            total += rss[pid]
    return total


def run_child(argv, *, env=None, cwd=None, sample: float = 0.0, timeout: float = 3600,
              check: bool = True, stdin=subprocess.DEVNULL) -> ChildResult:
    """Runs a command, measuring wall time, peak RSS (wait4) and /proc I/O counters.

    The child is waited for with ``waitid(WNOWAIT)`` first so that its
    ``/proc/<pid>/io`` can be read before it is reaped.

    Args:
      argv: the command (list of str).
      env: environment (default :func:`child_env`).
      cwd: working directory.
      sample: if > 0, also sample the process tree's summed RSS every
        ``sample`` seconds (catches concurrent workers).
      timeout: seconds before the child is killed.
      check: raise RuntimeError on a non-zero exit.
      stdin: stdin of the child.

    Returns:
      :class:`ChildResult`.
    """
    argv = [str(a) for a in argv]
    out_f = open(WORK / (".child-out-%d" % os.getpid()), "w+")
    err_f = open(WORK / (".child-err-%d" % os.getpid()), "w+")
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env or child_env(), cwd=cwd, stdout=out_f,
                                stderr=err_f, stdin=stdin)
        peak = [0]
        stop = threading.Event()

        def sampler():
            while not stop.wait(sample):
                try:
                    peak[0] = max(peak[0], _tree_rss(proc.pid))
                except Exception:  # noqa: BLE001 - a vanished /proc entry
                    pass

        thread = None
        if sample > 0:
            thread = threading.Thread(target=sampler, daemon=True)
            thread.start()
        killer = threading.Timer(timeout, proc.kill)
        killer.daemon = True
        killer.start()
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
        wall = time.perf_counter() - start
        killer.cancel()
        io = _read_io(proc.pid)
        stop.set()
        if thread is not None:
            thread.join()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out_f.seek(0)
        err_f.seek(0)
        result = ChildResult(argv, proc.returncode, wall, usage.ru_maxrss * 1024, peak[0], io,
                             out_f.read(), err_f.read(), usage.ru_utime + usage.ru_stime)
    finally:
        out_f.close()
        err_f.close()
        for f in (out_f, err_f):
            try:
                os.unlink(f.name)
            except OSError:
                pass
    if check and result.returncode != 0:
        raise RuntimeError("%s exited %d: %s" % (" ".join(argv[:6]), result.returncode,
                                                  result.stderr.strip()[-2000:]))
    return result


# --------------------------------------------------------------------------
# Statistics and formatting
# --------------------------------------------------------------------------


def median(values):
    """Median of a non-empty sequence of numbers."""
    return statistics.median(list(values))


def spread(values):
    """``min-max`` of a sequence, as text with 3 significant digits."""
    values = list(values)
    return "%s-%s" % (fmt(min(values)), fmt(max(values)))


def fmt(x, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (no exponent for usual magnitudes)."""
    if x is None:
        return "n/a"
    if isinstance(x, int):
        return str(x)
    if x == 0:
        return "0"
    mag = abs(x)
    if mag >= 10 ** digits:
        return "%.0f" % x
    decimals = max(0, digits - 1 - int(f"{mag:e}".split("e")[1]))
    return "%.*f" % (decimals, x)


def mib(nbytes) -> str:
    """Bytes as MiB text."""
    return "n/a" if nbytes is None else "%.0f MiB" % (nbytes / MIB)


@dataclasses.dataclass
class Row:
    """One line of the results table.

    Attributes:
      figure: the issue's figure (e.g. "1 start-up").
      measure: what is measured.
      ours: hubexport's figure, as text with its unit.
      reference: the comparison's figure, as text with its unit.
      ratio: hubexport / reference, oriented so that higher is better for
        throughputs and lower is better for times (as the target says), or None.
      target: the target as text (e.g. "<= 1.5").
      met: True / False, or None when there is no target or no figure.
      note: how much it is missed by and what bounds it, or other context.
    """

    figure: str
    measure: str
    ours: str
    reference: str
    ratio: float | None
    target: str
    met: bool | None
    note: str = ""


def verdict(met) -> str:
    """Table text for a Row's ``met``."""
    return {True: "met", False: "**missed**", None: "-"}[met]


def rows_to_markdown(rows) -> str:
    """The results table in Markdown."""
    lines = ["| # | measure | hubexport | comparison | ratio | target | result | notes |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r.figure, r.measure, r.ours, r.reference,
            "n/a" if r.ratio is None else "%.2f" % r.ratio, r.target or "-", verdict(r.met),
            r.note.replace("|", "\\|").replace("\n", " ")))
    return "\n".join(lines)


def rows_to_text(rows) -> str:
    """The results table as plain text for the terminal."""
    header = ("#", "measure", "hubexport", "comparison", "ratio", "target", "result")
    body = [(r.figure, r.measure, r.ours, r.reference,
             "n/a" if r.ratio is None else "%.2f" % r.ratio, r.target or "-",
             verdict(r.met).strip("*")) for r in rows]
    widths = [min(60, max(len(str(x)) for x in col)) for col in zip(header, *body)]
    out = []
    for line in [header] + body:
        out.append("  ".join(str(x)[:w].ljust(w) for x, w in zip(line, widths)))
    return "\n".join(out)


# --------------------------------------------------------------------------
# Machine description and background load
# --------------------------------------------------------------------------


def _version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _first_line(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unavailable"


def machine_description() -> dict:
    """CPU model, cores, memory, kernel, Python and library versions (no TensorFlow import)."""
    cpu = "unknown"
    flags = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name") and cpu == "unknown":
            cpu = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            flags = line
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) * 1024
    isa = [f for f in ("avx2", "avx512f", "sha_ni") if re.search(r"\b%s\b" % f, flags)]
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {
        "cpu": cpu,
        "cpu_flags": ", ".join(isa) or "none of avx2/avx512f/sha_ni",
        "cores": "%d logical CPUs (%d usable by this process)" % (os.cpu_count(), affinity),
        "memory": "%.1f GiB" % (mem / (1 << 30)),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tensorflow": _version("tensorflow"),
        "tensorflow_hub": _version("tensorflow-hub"),
        "tf_keras": _version("tf-keras"),
        "hubexport": "%s (bytecode %s)" % (_version("hubexport"), _bytecode_state()),
        "requests": _version("requests"),
        "curl": _first_line(["curl", "--version"]) if shutil.which("curl") else "unavailable",
        "coreutils": _first_line(["sha384sum", "--version"]),
    }


def _bytecode_state() -> str:
    """Whether every module of the hubexport package has an up-to-date .pyc."""
    import importlib.util

    sources = sorted((REPO / "hubexport").rglob("*.py"))
    stale = [p for p in sources
             if not Path(importlib.util.cache_from_source(str(p))).exists()
             or Path(importlib.util.cache_from_source(str(p))).stat().st_mtime
             < p.stat().st_mtime]
    if not stale:
        return "compiled, as after `pip install`"
    return "NOT compiled for %d of %d modules: start-up includes compiling them" % (
        len(stale), len(sources))


def _cpu_busy_ticks() -> tuple[int, int]:
    """(busy, total) jiffies summed over all CPUs from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


class LoadMonitor:
    """Measures how much CPU other processes used while the benchmark ran.

    ``other = (system busy CPU time) - (CPU time of this process and its
    reaped children)``, averaged over the wall time, in cores.
    """

    def __init__(self):
        self.start_ticks = _cpu_busy_ticks()
        self.start_wall = time.monotonic()
        self.start_self = self._own()
        self.load_start = os.getloadavg()

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def report(self) -> dict:
        """Average cores used by others, by us, wall seconds, load averages."""
        busy1, total1 = _cpu_busy_ticks()
        hz = os.sysconf("SC_CLK_TCK")
        wall = time.monotonic() - self.start_wall
        busy = (busy1 - self.start_ticks[0]) / hz
        own = self._own() - self.start_self
        return {"wall": wall, "busy_cores": busy / wall, "own_cores": own / wall,
                "other_cores": max(0.0, busy - own) / wall,
                "loadavg_start": self.load_start, "loadavg_end": os.getloadavg()}


def other_processes(limit: int = 8) -> list[str]:
    """The busiest processes not started by the benchmark (by CPU since start), for the record."""
    mine = {os.getpid()}
    rows = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            cmd = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        if fields[0] == "R":
            rows.append((cpu, cmd.strip()[:100]))
    rows.sort(reverse=True)
    return ["%s (running, %.0f s CPU so far)" % (cmd, cpu) for cpu, cmd in rows[:limit]]


def write_json(path, data) -> None:
    """Writes JSON atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp-%d" % os.getpid())
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


class LoopbackServer:
    """Runs benchmarks/server.py over a directory in its own process (127.0.0.1 only).

    Use as a context manager; ``base_url`` is ``http://127.0.0.1:<port>``.
    """

    def __init__(self, directory):
        self.directory = Path(directory)
        self.proc = None
        self.base_url = None

    def __enter__(self):
        self.proc = subprocess.Popen([PYTHON, str(BENCH_DIR / "server.py"), str(self.directory)],
                                     stdout=subprocess.PIPE, text=True, env=child_env())
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError("benchmark HTTP server did not start: %r" % line)
        self.base_url = "http://127.0.0.1:%d" % int(line.split()[1])
        return self

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far, seconds."""
        stat = Path("/proc/%d/stat" % self.proc.pid).read_text()
        fields = stat[stat.rfind(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return False
