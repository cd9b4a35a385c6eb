"""Figures 4 and 6: building the module family from cached tarballs, and rebuilding nothing.

Inputs: stand-in tarballs of the two seed architectures (ARCHITECTURES:
inception_v2, inception_resnet_v2; ``hubexport.standin.make_standin``, from
the checked-in manifests; the real tarballs are unreachable here) with a spec
directory pinned to them that holds only those two specs, however many
specs/ holds (so these figures stay comparable as the zoo grows; the whole
zoo is zoo_bench.py's), served by benchmarks/server.py on 127.0.0.1. The
cache is filled first (``hubexport fetch`` per architecture), so every build
starts from a cached tarball.

Figure 4:
  * ``hubexport build --all`` (with ``--jobs 1`` when the option exists), run
    through instrumented_build.py: wall time, stage split per module
    (graph construction, variables from the checkpoint, writing, card), peak
    RSS per module and overall, and how often each checkpoint is opened and
    how many bytes are read;
  * ``hubexport build --all --jobs 2`` vs ``--jobs 1`` when ``--jobs`` exists
    (both plain CLI runs, back to back, into a fresh output).
Figure 6: ``hubexport build --all`` over the finished output: wall time
(median of several runs), number of modules rebuilt, whether anything was
fetched and whether TensorFlow was imported.

QUICK mode builds only versions 3 and 5 of the classification modules (spec
copies with the other entries removed).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from pathlib import Path

import yaml

from common import (HUBEXPORT, PYTHON, QUICK, REPO, WORK, LoopbackServer, Row, child_env, fmt,
                    log, median, mib, run_child)

ARCHITECTURES = ("inception_v2", "inception_resnet_v2")
RSS_TARGET = 3 << 30  # bytes (3 GiB)
NOOP_TARGET = 2.0  # seconds


STANDINS = WORK / "standins"
TEST_STANDINS = REPO / "build" / "test-standins"


def shipped_models() -> tuple:
    """Spec names of ``specs/*.yaml``, sorted (as tests/family_support.py lists MODELS)."""
    return tuple(sorted(p.stem for p in (REPO / "specs").glob("*.yaml")))


def _standin_key(models) -> str:
    """Key of a stand-in set of ``models`` exactly as tests/conftest.py computes it.

    sha256 of the comma-joined (sorted) model list, then every manifest,
    hubexport/standin.py and every shipped spec; first 16 hex digits.
    """
    h = hashlib.sha256(",".join(models).encode())
    for path in sorted((REPO / "hubexport" / "data").glob("*_manifest.json")) + [
            REPO / "hubexport" / "standin.py"] + sorted((REPO / "specs").glob("*.yaml")):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def shipped_specs() -> dict:
    """dict model name -> ModelSpec of ``specs/*.yaml`` (variant tables expanded)."""
    from hubexport.specs import load_specs

    return load_specs(REPO / "specs")


def _model_key(model) -> str:
    """Hash of what one model's stand-in is made from (16 hex digits).

    sha256 of the model name, its architecture's manifest, hubexport/standin.py
    and its spec file (for a MobileNet variant: the variant table).
    """
    spec = shipped_specs()[model]
    h = hashlib.sha256(model.encode() + b"\0")
    for path in (REPO / "hubexport" / "data" / ("%s_manifest.json" % spec.architecture),
                 REPO / "hubexport" / "standin.py", spec.source):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _complete(directory: Path, models) -> bool:
    """Whether ``directory`` is a finished stand-in set of exactly ``models`` (.complete)."""
    try:
        listed = (directory / ".complete").read_text().split()
    except OSError:
        return False
    return listed == list(models) and all(
        (directory / "specs" / ("%s.yaml" % m)).is_file() for m in models)


def _link(src: Path, dest: Path) -> None:
    """Hard-links ``src`` to ``dest`` (copies across file systems)."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def _per_model_standins(models) -> dict:
    """dict model -> directory with its stand-in tarball and ``specs/<its spec file>``.

    Each model's stand-in is cached in ``WORK/standins/models/<model>-<key>/``
    (key: :func:`_model_key`); missing ones are made by
    ``hubexport.standin.make_standin(model, dir, seed=0)`` (as the test
    suite makes them), all in one child process (one TensorFlow import).
    """
    root = STANDINS / "models"
    root.mkdir(parents=True, exist_ok=True)
    specs = shipped_specs()
    dirs = {m: root / ("%s-%s" % (m, _model_key(m))) for m in models}
    missing = [m for m, d in dirs.items() if not (d / "specs" / specs[m].source.name).is_file()]
    if missing:
        for old in root.iterdir():  # other keys of the models about to be made
            if old.name.rsplit("-", 1)[0] in missing and old.name not in {
                    d.name for d in dirs.values()}:
                shutil.rmtree(old, ignore_errors=True)
        works = {m: root / (".work-%s-%d" % (m, os.getpid())) for m in missing}
        for w in works.values():
            shutil.rmtree(w, ignore_errors=True)
        log("stand-ins: making %s (hubexport.standin.make_standin, seed 0)" % ", ".join(missing))
        code = ("import sys\n"
                "from hubexport.tfimport import import_tensorflow\n"
                "import_tensorflow()\n"
                "from hubexport.standin import make_standin\n"
                "for model, out in zip(sys.argv[1::2], sys.argv[2::2]):\n"
                "    make_standin(model, out, seed=0)\n")
        res = run_child([PYTHON, "-c", code] + [x for m in missing for x in (m, works[m])],
                        timeout=7200)
        log("stand-ins: made %d in %.0f s" % (len(missing), res.wall))
        for m in missing:
            shutil.rmtree(dirs[m], ignore_errors=True)
            os.replace(works[m], dirs[m])
    return dirs


def ensure_standins(models=ARCHITECTURES, label="seed") -> Path:
    """A directory with the stand-in tarballs of ``models`` and ``specs/`` holding only theirs.

    Made once per input hash, as ``WORK/standins/<label>-<key>/`` with the
    test suite's key (:func:`_standin_key` of the sorted model list). If the
    test suite already made that identical set (build/test-standins/<same
    key>/, with its ``.complete``), it is hard-linked; otherwise the set is
    hard-linked from per-model stand-ins (:func:`_per_model_standins`), so
    the seed set and the zoo set share the tarballs they have in common and
    a change to one spec remakes only that model's stand-in.
    """
    models = tuple(sorted(models))
    key = _standin_key(models)
    done = STANDINS / ("%s-%s" % (label, key))
    if _complete(done, models):
        return done
    STANDINS.mkdir(parents=True, exist_ok=True)
    for old in STANDINS.iterdir():
        if old == done or old.name == "models":
            continue
        stale = (old.name.rsplit("-", 1)[0] == label  # an older set of this label
                 or (len(old.name) == 16 and not old.name.strip("0123456789abcdef"))  # old layout
                 or old.name.startswith(".work-%s-" % label))
        if stale:
            shutil.rmtree(old, ignore_errors=True)
    work = STANDINS / (".work-%s-%d" % (label, os.getpid()))
    shutil.rmtree(work, ignore_errors=True)
    tests_copy = TEST_STANDINS / key
    if _complete(tests_copy, models):
        log("stand-ins: linking the test suite's identical set %s" % tests_copy)
        shutil.copytree(tests_copy, work, copy_function=_link)
    else:
        (work / "specs").mkdir(parents=True)
        for model, directory in _per_model_standins(models).items():
            for f in directory.iterdir():
                if f.is_file():
                    _link(f, work / f.name)
            _link(directory / "specs" / ("%s.yaml" % model),
                  work / "specs" / ("%s.yaml" % model))
    marker = work / ".complete"
    if marker.exists():
        marker.unlink()  # a hard link to the test suite's: never write through it
    marker.write_text("\n".join(models) + "\n")
    shutil.rmtree(done, ignore_errors=True)
    os.replace(work, done)
    return done


def _quick_specs(spec_dir: Path, dest: Path) -> Path:
    """Spec copies keeping only classification versions 3 and 5 (QUICK mode)."""
    from hubexport.specs import load_specs

    shutil.rmtree(dest, ignore_errors=True)  # no specs of other models left from a former run
    dest.mkdir(parents=True)
    for path in spec_dir.glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        data["modules"] = {"classification": data["modules"]["classification"]}
        versions = data["modules"]["classification"]["versions"]
        data["modules"]["classification"]["versions"] = {v: versions[v] for v in (3, 5)}
        (dest / path.name).write_text(yaml.safe_dump(data, sort_keys=False))
    load_specs(dest)
    return dest


def _build_cmd(spec_dir, mirror, cache, output, jobs=None):
    cmd = ["build", "--all", "--json", "--specs", spec_dir, "--mirror", mirror,
           "--cache-dir", cache, "--output", output]
    if jobs is not None:
        cmd += ["--jobs", str(jobs)]
    return cmd


def _statuses(stdout: str) -> dict:
    counts = {}
    for r in json.loads(stdout):
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return counts


def _instrumented(report_dir: Path, args, sample=0.25, timeout=3600):
    """Runs instrumented_build.py; returns (ChildResult, merged report)."""
    shutil.rmtree(report_dir, ignore_errors=True)
    report_dir.mkdir(parents=True)
    res = run_child([PYTHON, Path(__file__).with_name("instrumented_build.py")] + args,
                    env=child_env(BENCH_REPORT_DIR=str(report_dir)), sample=sample,
                    timeout=timeout)
    reports = [json.loads(p.read_text()) for p in sorted(report_dir.glob("report-*.json"))]
    parents = [r for r in reports if r["role"] == "parent"]
    if len(parents) != 1:
        raise RuntimeError("instrumented build wrote %d parent reports" % len(parents))
    merged = dict(parents[0])
    merged["workers"] = len({r["pid"] for r in reports if r["role"] == "worker"})
    merged["checkpoints"] = {}
    merged["tasks"], merged["targets"], merged["errors"] = [], [], []
    merged["process_peak"] = 0
    merged["tf_anywhere"] = False
    for r in reports:
        for path, c in r["checkpoints"].items():
            keys = ("opens", "values_calls", "seconds", "rchar", "values_rchar", "maps",
                    "map_seconds", "map_rchar")
            m = merged["checkpoints"].setdefault(path, dict.fromkeys(keys, 0))
            m["size"] = c["size"]
            for k in keys:
                m[k] += c.get(k, 0)
        merged["tasks"] += r["tasks"]
        merged["targets"] += r["targets"]
        merged["errors"] += r["errors"]
        merged["process_peak"] = max(merged["process_peak"], r["peak_rss"])
        merged["tf_anywhere"] = merged["tf_anywhere"] or r.get("tensorflow_imported", False)
    merged["process_peak"] = max(merged["process_peak"], res.maxrss)
    return res, merged


def run(rows, details, context):
    """Measures figures 4 and 6; appends Rows and detail text; fills ``context``."""
    standins = ensure_standins()
    spec_dir = standins / "specs"
    if QUICK:
        spec_dir = _quick_specs(spec_dir, WORK / "quick-specs")
    cache = WORK / "build-cache"
    shutil.rmtree(cache, ignore_errors=True)
    has_jobs = "--jobs" in run_child([HUBEXPORT, "build", "--help"]).stdout
    with LoopbackServer(standins) as server:
        fill = {}
        for arch in ARCHITECTURES:
            res = run_child([HUBEXPORT, "fetch", arch, "--specs", spec_dir, "--mirror",
                             server.base_url, "--cache-dir", cache])
            fill[arch] = res.wall
        log("build: cache filled (%s); --jobs %s" % (
            ", ".join("%s %.1f s" % kv for kv in fill.items()),
            "available" if has_jobs else "not available"))

        # ---- figure 4: build --all, instrumented, jobs 1
        out1 = WORK / "modules-j1"
        shutil.rmtree(out1, ignore_errors=True)
        log("build --all%s (instrumented)" % (" --jobs 1" if has_jobs else ""))
        res1, report = _instrumented(WORK / "reports-j1", _build_cmd(
            spec_dir, server.base_url, cache, out1, 1 if has_jobs else None))
        built1 = _statuses(res1.stdout)

        res2 = plain1 = None
        if has_jobs:
            # --jobs 2 against a plain (not instrumented) --jobs 1, back to back.
            out2 = WORK / "modules-j2"
            for jobs in (1, 2):
                shutil.rmtree(out2, ignore_errors=True)
                log("build --all --jobs %d" % jobs)
                res = run_child([HUBEXPORT] + _build_cmd(spec_dir, server.base_url, cache, out2,
                                                         jobs), sample=0.25)
                if jobs == 1:
                    plain1 = res
                else:
                    res2 = res
            shutil.rmtree(out2, ignore_errors=True)

        # ---- figure 6: nothing changed
        log("no-op rebuilds")
        noop = []
        for i in range(6 if not QUICK else 3):
            r = run_child([HUBEXPORT] + _build_cmd(spec_dir, server.base_url, cache, out1))
            if i:
                noop.append(r)
        _, noop_report = _instrumented(WORK / "reports-noop", _build_cmd(
            spec_dir, server.base_url, cache, out1), sample=0)

    context.update(modules=out1, specs=spec_dir, cache=cache)
    # For zoo_bench.py: the seed models' modules as timed here (instrumented, --jobs 1)
    # and the plain --jobs 2 run.
    context["build_targets"] = report["targets"]
    if res2 is not None:
        context["build_jobs2"] = {"wall": res2.wall, "modules": sum(built1.values()),
                                  "tree_peak": res2.tree_peak}
    n_targets = sum(built1.values())
    jobs1 = " --jobs 1" if has_jobs else ""

    # ---- rows: figure 4
    peak = max(report["process_peak"], res1.tree_peak)
    rows.append(Row("4", "`build --all%s`: %d modules from cached tarballs (wall; peak RSS)"
                    % (jobs1, n_targets),
                    "%s s; peak RSS %s" % (fmt(res1.wall), mib(peak)), "-", None,
                    "peak RSS < 3 GiB", peak < RSS_TARGET,
                    "peak = max of the summed RSS of the process tree (sampled every 0.25 s: "
                    "%s) and the largest single process's high-water mark (%s); %d worker "
                    "processes." % (mib(res1.tree_peak), mib(report["process_peak"]),
                                    report["workers"])))
    once, ok, extra_reads = [], True, []
    for path, c in sorted(report["checkpoints"].items()):
        name = Path(path).parent.name.rsplit("-", 1)[0]
        ok = ok and c["opens"] == 1 and c["values_calls"] == 1
        once.append("%s: opened %d x, values read %d x (%.2f x its %s bytes); values file "
                    "mapped by %d more worker(s)"
                    % (name, c["opens"], c["values_calls"], c["values_rchar"] / c["size"],
                       fmt(c["size"]), c["maps"] - c["values_calls"]))
        if c["opens"] > 1:
            extra_reads.append((name, c))
    for name, f in sorted(report["fetch"].items()):
        once.append("%s tarball verified %d x (%.2f x its size read)"
                    % (name, f["calls"], f["rchar"] / f["tarball_size"]))
    note = ("bytes: /proc/self/io rchar around each stage call, summed over processes. The "
            "first worker to need a checkpoint reads and checks it and writes its values to a "
            "values file; the other workers memory-map that file (build.py, "
            "checkpoint.read_once): mapping took %s s in all."
            % fmt(sum(c["map_seconds"] for c in report["checkpoints"].values())))
    if extra_reads:
        tasks = report["tasks"]
        startup = sum(t["startup_s"] + t["tf_import_s"] for t in tasks)
        restore = sum(t["restore_s"] for t in tasks)
        per_ck = {name: c["seconds"] * (c["opens"] - 1) / c["opens"] for name, c in extra_reads}
        extra = " + ".join("%s s (%s)" % (fmt(v), k) for k, v in per_ck.items())
        if len(tasks) > 1:
            note += (" Missed: the build runs its tasks in %d fresh worker processes (build.py: "
                     "all TF1 targets of a spec, or one TF2 target, per process, because TF2 "
                     "function names come from a process-wide counter), and each worker reads "
                     "its checkpoint again. Cost in this run: the extra reads took %s; the "
                     "workers spent %s s starting up and importing TensorFlow and %s s reading "
                     "checkpoints in all (per-task table in the details)."
                     % (len(tasks), extra, fmt(startup), fmt(restore)))
        else:
            note += " Missed: the extra reads took %s." % extra
    rows.append(Row("4", "`build --all%s` reads each checkpoint once" % jobs1, "; ".join(once),
                    "-", None, "once per checkpoint",
                    ok if report["checkpoints"] else None, note))
    if has_jobs:
        ratio = res2.wall / plain1.wall
        rows.append(Row("4", "`build --all --jobs 2` vs `--jobs 1` (wall; peak RSS)",
                        "%s s; peak RSS %s (tree), %s (largest process)"
                        % (fmt(res2.wall), mib(res2.tree_peak), mib(res2.maxrss)),
                        "%s s; peak RSS %s (`--jobs 1`, not instrumented)"
                        % (fmt(plain1.wall), mib(max(plain1.tree_peak, plain1.maxrss))),
                        ratio, "-", None,
                        "speed-up %.2f x on %d cores; --jobs 2 peak RSS %s 3 GiB. The "
                        "instrumented `--jobs 1` run above took %s s (timers, RSS resets, first "
                        "run after the cache was filled)."
                        % (1 / ratio, os.cpu_count(),
                           "<" if max(res2.tree_peak, res2.maxrss) < RSS_TARGET else ">=",
                           fmt(res1.wall))))
    else:
        rows.append(Row("4", "`build --all --jobs 2` vs `--jobs 1`",
                        "not available yet (`hubexport build` has no --jobs option)", "-", None,
                        "-", None, ""))

    # ---- rows: figure 6
    walls = [r.wall for r in noop]
    statuses = _statuses(noop[-1].stdout)
    rebuilt = sum(v for k, v in statuses.items() if k != "up-to-date")
    fetches = sum(f["calls"] for f in noop_report["fetch"].values())
    t_noop = median(walls)
    met = t_noop < NOOP_TARGET and rebuilt == 0
    rows.append(Row("6", "`build --all` with everything up to date (median wall)",
                    "%s s; %d of %d rebuilt" % (fmt(t_noop), rebuilt, sum(statuses.values())),
                    "-", None, "< 2 s, nothing rebuilt", met,
                    "fetch calls: %d; TensorFlow imported: %s; %s bytes read (rchar)."
                    % (fetches, "yes" if noop_report["tf_anywhere"] else "no",
                       fmt(noop_report["io"]["rchar"]))))

    # ---- details
    lines = ["Stand-in tarballs (from the checked-in manifests) served over 127.0.0.1. Cache "
             "filled first with `hubexport fetch`: %s. `build --all%s` ran through "
             "benchmarks/instrumented_build.py (timers only; stage definitions in "
             "benchmarks/bench_instrument.py): %s s wall, %d modules, %d worker processes."
             % (", ".join("%s %s s" % (a, fmt(t)) for a, t in fill.items()), jobs1,
                fmt(res1.wall), n_targets, report["workers"]), "",
             "Per checkpoint tarball (in the CLI process):", "",
             "| spec | fetch_checkpoint calls | seconds (cached: size + hash check) | bytes read |",
             "|---|---|---|---|"]
    for name, f in sorted(report["fetch"].items()):
        lines.append("| %s | %d | %s | %s |" % (name, f["calls"], fmt(f["seconds"]),
                                                fmt(f["rchar"])))
    if report["tasks"]:
        lines += ["", "Per worker task (seconds; start-up = process start to the pool's "
                  "initializer; checkpoint = open + check + read values + writing the values "
                  "file, or mapping it, + the net's variable list):", "",
                  "| spec | modules | start-up | TF import | checkpoint read | modules total | "
                  "task total | peak RSS |", "|---|---|---|---|---|---|---|---|"]
        by_pid = {}
        for t in report["targets"]:
            by_pid[t["pid"]] = by_pid.get(t["pid"], 0.0) + t["total"]
        for t in report["tasks"]:
            lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                t["spec"], ", ".join(h.split("/", 3)[3] for h in t["targets"]),
                fmt(t["startup_s"]), fmt(t["tf_import_s"]), fmt(t["restore_s"]),
                fmt(by_pid.get(t["pid"], 0.0)), fmt(t["seconds"]), mib(t["peak_rss"])))
    lines += ["", "Checkpoint reads (all processes):", "",
              "| checkpoint | bytes | opened | values read | seconds | bytes read by values() | "
              "bytes read by open + check + values (incl. lazily imported Python modules) | "
              "values file mapped (incl. by the reader) | seconds mapping |",
              "|---|---|---|---|---|---|---|---|---|"]
    for path, c in sorted(report["checkpoints"].items()):
        lines.append("| %s | %s | %d | %d | %s | %s | %s | %d | %s |" % (
            Path(path).name, fmt(c["size"]), c["opens"], c["values_calls"], fmt(c["seconds"]),
            fmt(c["values_rchar"]), fmt(c["rchar"]), c["maps"], fmt(c["map_seconds"])))
    lines += ["", "Per module (seconds; peak RSS is the high-water mark of the process "
              "while that module was built, its spec's checkpoint values being in memory):", "",
              "| module | format | graph construction | variables from checkpoint | writing | "
              "card | other | total | peak RSS |", "|---|---|---|---|---|---|---|---|---|"]
    for t in sorted(report["targets"], key=lambda t: t["handle"]):
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            t["handle"], t["format"], fmt(t["graph"]), fmt(t["variables"]), fmt(t["write"]),
            fmt(t["card"] * 1000) + " ms", fmt(t["other"]), fmt(t["total"]), mib(t["peak_rss"])))
    if report["targets"]:
        tot = {k: sum(t[k] for t in report["targets"])
               for k in ("graph", "variables", "write", "card", "other", "total")}
        lines.append("| **all modules** | | %s | %s | %s | %s | %s | %s | |" % (
            fmt(tot["graph"]), fmt(tot["variables"]), fmt(tot["write"]),
            fmt(tot["card"] * 1000) + " ms", fmt(tot["other"]), fmt(tot["total"])))
    if report["errors"]:
        lines += ["", "Instrumentation problems: %s" % "; ".join(report["errors"])]
    if has_jobs:
        lines += ["", "`--jobs 2`: %s s wall, process-tree RSS peak %s (sampled every 0.25 s), "
                  "largest single process %s; `--jobs 1` (not instrumented): %s s, "
                  "instrumented: %s s." % (
                      fmt(res2.wall), mib(res2.tree_peak), mib(res2.maxrss), fmt(plain1.wall),
                      fmt(res1.wall))]
    details.append(("4. Build", "\n".join(lines)))
    details.append(("6. Rebuild with nothing changed", (
        "`hubexport build --all` over the finished output of figure 4, %d runs after one "
        "warm-up: %s s (median %s s). Statuses: %s. One extra instrumented run: "
        "fetch_checkpoint called %d times, TensorFlow imported: %s, %s bytes read through "
        "read() (Python's own imports included). build.build() compares each target's stamp "
        "(sha256 of the spec file, the pinned checksum, hubexport's version, kind and "
        "version) before fetching, so an up-to-date family never touches the tarballs."
        % (len(walls), ", ".join(fmt(w) for w in walls), fmt(t_noop), statuses, fetches,
           "yes" if noop_report["tf_anywhere"] else "no", fmt(noop_report["io"]["rchar"])))))
