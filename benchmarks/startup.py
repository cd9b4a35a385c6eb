"""Figure 1: CLI start-up, `hubexport --help` / `hubexport list` vs `python -c "import click, yaml"`.

Each command is run as a fresh process (the console script installed in the
venv; the baseline with the same interpreter), interleaved round by round,
after two untimed warm-up rounds; the figure is the median wall time.
Target: ratio <= 1.5. When missed, ``python -X importtime`` shows which
imports the time goes to.
"""

from __future__ import annotations

from common import (HUBEXPORT, PYTHON, QUICK, Row, child_env, fmt, log, median, run_child,
                    spread)

TARGET = 1.5


def _importtime(argv) -> tuple[list[str], bool]:
    """Top imports by cumulative and self time, and whether TensorFlow was imported."""
    res = run_child([PYTHON, "-X", "importtime"] + argv, env=child_env())
    entries = []
    for line in res.stderr.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3 or "self [us]" in line:
            continue
        name = parts[2][1:].rstrip()  # "  " per nesting level, then the module
        entries.append((int(parts[0].split(":")[1]), int(parts[1]), name))
    tf = any(name.strip().split(".")[0] == "tensorflow" for _, _, name in entries)
    top_level = sorted((e for e in entries if not e[2].startswith(" ")), key=lambda e: -e[1])[:8]
    by_self = sorted(entries, key=lambda e: -e[0])[:8]
    lines = ["top-level imports by cumulative time:"]
    lines += ["  %7.1f ms  %s" % (cum / 1000, name) for _, cum, name in top_level]
    lines += ["imports by self time:"]
    lines += ["  %7.1f ms  %s" % (s / 1000, name.strip()) for s, _, name in by_self]
    return lines, tf


def run(rows, details):
    """Measures figure 1; appends Rows and detail text."""
    rounds = 7 if QUICK else 21
    commands = {
        "baseline": [PYTHON, "-c", "import click, yaml"],
        "hubexport --help": [HUBEXPORT, "--help"],
        "hubexport list": [HUBEXPORT, "list"],
    }
    times = {k: [] for k in commands}
    env = child_env()
    log("start-up: %d rounds of %s" % (rounds, ", ".join(commands)))
    for i in range(rounds + 2):
        for name, argv in commands.items():
            res = run_child(argv, env=env)
            if i >= 2:
                times[name].append(res.wall)
    base = median(times["baseline"])
    lines = ["Start-up wall time, %d runs each (median, min-max):" % rounds, ""]
    for name in commands:
        lines.append("- `%s`: %s ms (%s ms)" % (
            "python -c \"import click, yaml\"" if name == "baseline" else name,
            fmt(median(times[name]) * 1000), spread(t * 1000 for t in times[name])))
    for name in ("hubexport --help", "hubexport list"):
        ours = median(times[name])
        ratio = ours / base
        met = ratio <= TARGET
        profile, tf = _importtime(commands[name])
        note = "TensorFlow imported: %s." % ("YES" if tf else "no")
        if not met:
            extra_ms = (ours - TARGET * base) * 1000
            note += (" Missed by %s ms (%.0f%%); bounded by Python imports, see the "
                     "importtime profile below." % (fmt(extra_ms), (ratio / TARGET - 1) * 100))
        rows.append(Row("1", "start-up `%s` (median wall)" % name, "%s ms" % fmt(ours * 1000),
                        "%s ms (`python -c \"import click, yaml\"`)" % fmt(base * 1000),
                        ratio, "<= %.1f" % TARGET, met, note))
        if not met or name == "hubexport list":
            lines += ["", "`python -X importtime %s` (one run):" % " ".join(
                ["hubexport"] + commands[name][1:]), "", "```"] + profile + ["```"]
    details.append(("1. CLI start-up", "\n".join(lines)))
