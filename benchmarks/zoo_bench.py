"""Figure "4 zoo": ``hubexport build --all --jobs 2`` over every single-model spec.

Figure 4 (build_bench.py) stays on the two seed models, so that its figures
remain comparable from release to release; this section builds the zoo of
the single-model specs (every ``specs/*.yaml`` that defines one model: 10
models, 80 modules) the way a user would, with two worker processes. The
variant tables (specs/mobilenet_v1.yaml, specs/mobilenet_v2.yaml: 38
MobileNets, 348 modules) are section ``mobilenet`` (mobilenet_bench.py), so
that these rows stay comparable with the runs before the MobileNets.

Inputs: a stand-in tarball per model (``hubexport.standin.make_standin``,
seed 0, from the checked-in manifests; build_bench.ensure_standins links the
test suite's identical set when its key matches exactly, else links per-model
stand-ins) and a spec directory pinned to them, served by benchmarks/server.py
on 127.0.0.1. The cache is filled first with ``hubexport fetch`` per model, so
downloads are not in the timing. The stand-in specs are pinned to the
stand-ins' sha256, so no ``--allow-unpinned`` is needed even for models whose
shipped spec says ``checksum: unpublished``.

Measured, in one run of instrumented_build.py (stage timers of
bench_instrument.py, in the CLI process and in every worker):
  * the wall time of the whole ``build --all --jobs 2`` and its module count;
  * per architecture: modules, seconds per module (mean of
    ``_write_target``: graph construction / variables from the checkpoint /
    writing / card), worker time per module (start-up, TensorFlow import and
    checkpoint read included), the worker processes' peak RSS (kernel
    high-water mark, VmHWM) and the process tree's peak summed RSS while a
    worker of that architecture was alive (sampled every 0.25 s here, with the
    owner of every process known afterwards from the workers' reports);
  * which architecture is the slowest per module.
The output (several GB for the full zoo) and the cache are removed afterwards;
the stand-ins stay under build/bench/standins/ for the next run.

QUICK mode: the two models with the fewest parameters, classification
versions 3 and 5 only (as figure 4's QUICK mode).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import threading
import time
from pathlib import Path

from build_bench import (RSS_TARGET, _build_cmd, _instrumented, _quick_specs, _statuses,
                         ensure_standins, shipped_specs)
from common import (HUBEXPORT, QUICK, proc_table, REPO, WORK, LoopbackServer, Row, fmt, log, mib,
                    run_child)

QUICK_MODELS = 2
SAMPLE = 0.25  # seconds between process-tree RSS samples
FIGURE = "4 zoo"


@functools.lru_cache(maxsize=1)
def _num_parameters(model) -> int:
    """Parameters of ``model``'s checkpoint (global_step excluded), from its manifest."""
    spec = shipped_specs().get(model)
    arch = spec.architecture if spec is not None else model
    path = REPO / "hubexport" / "data" / ("%s_manifest.json" % arch)
    return json.loads(path.read_text())["num_parameters"]


def zoo_models() -> tuple:
    """The models of this section: the single-model specs (no variant table), sorted.

    In QUICK mode the QUICK_MODELS of them with the fewest parameters.
    """
    models = tuple(sorted(n for n, s in shipped_specs().items() if s.variant is None))
    if QUICK:
        models = tuple(sorted(sorted(models, key=_num_parameters)[:QUICK_MODELS]))
    return models


class _TreeSampler:
    """Samples {pid: RSS} of this process's descendants (``exclude`` and its children left out)."""

    def __init__(self, exclude=()):
        self.exclude = set(exclude)
        self.samples = []  # list of (monotonic time, {pid: rss bytes})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _scan(self) -> dict:
        me = os.getpid()
        parents, rss = proc_table()
        out = {}
        for pid, value in rss.items():
            p = pid
            while p and p != me and p not in self.exclude:
                p = parents.get(p, 0)
            if p == me and pid != me:
                out[pid] = value
        return out

    def _loop(self):
        while not self._stop.wait(SAMPLE):
            try:
                self.samples.append((time.monotonic(), self._scan()))
            except Exception:  # noqa: BLE001 - a vanished /proc entry
                pass

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False


def _tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _per_architecture(report, samples, out_sizes):
    """dict spec name -> figures of its modules, tasks and processes (see the module docstring)."""
    spec_of_pid = {t["pid"]: t["spec"] for t in report["tasks"]}
    arch = {}

    def entry(name):
        return arch.setdefault(name, {"targets": [], "tasks": [], "pids": set()})

    for t in report["targets"]:
        name = spec_of_pid.get(t["pid"]) or t["handle"].split("/")[2]
        entry(name)["targets"].append(t)
    for t in report["tasks"]:
        e = entry(t["spec"])
        e["tasks"].append(t)
        e["pids"].add(t["pid"])
    out = {}
    for name, e in arch.items():
        ts = e["targets"]
        n = len(ts)
        mean = {k: sum(t[k] for t in ts) / n if n else 0.0
                for k in ("total", "graph", "variables", "write", "card", "other")}
        by_format = {}
        for t in ts:
            by_format.setdefault(t["format"], []).append(t["total"])
        worker = sum(t["startup_s"] + t["seconds"] for t in e["tasks"])
        hwm = max([t["peak_rss"] for t in e["tasks"]] + [t["peak_rss"] for t in ts] + [0])
        alive = [s for _, s in samples if e["pids"] & s.keys()]
        out[name] = {
            "modules": n, "mean": mean,
            "by_format": {f: sum(v) / len(v) for f, v in by_format.items()},
            "worker_per_module": worker / n if n else None,
            "tasks": len(e["tasks"]),
            "startup": sum(t["startup_s"] + t["tf_import_s"] for t in e["tasks"]),
            "restore": sum(t["restore_s"] for t in e["tasks"]),
            "worker_hwm": hwm,
            "worker_sampled": max([s[p] for s in alive for p in e["pids"] & s.keys()] + [0]),
            "tree_peak": max([sum(s.values()) for s in alive] + [0]),
            "params": _num_parameters(name),
            "tarball": report["fetch"].get(name, {}).get("tarball_size"),
            "module_bytes": out_sizes.get(name, 0),
        }
    return out


def run(rows, details, context):
    """Measures figure "4 zoo"; appends Rows and detail text."""
    models = zoo_models()
    standins = ensure_standins(models, label="zoo-quick" if QUICK else "zoo")
    spec_dir = standins / "specs"
    if QUICK:
        spec_dir = _quick_specs(spec_dir, WORK / "zoo-quick-specs")
    cache = WORK / "zoo-cache"
    output = WORK / "zoo-modules"
    for d in (cache, output):
        shutil.rmtree(d, ignore_errors=True)
    try:
        with LoopbackServer(standins) as server:
            fill = {}
            for model in models:
                fill[model] = run_child([HUBEXPORT, "fetch", model, "--specs", spec_dir,
                                         "--mirror", server.base_url, "--cache-dir",
                                         cache]).wall
            log("zoo: cache filled for %d models in %.0f s" % (len(models), sum(fill.values())))
            log("zoo: build --all --jobs 2 over %s (instrumented)" % ", ".join(models))
            with _TreeSampler(exclude=[server.proc.pid]) as sampler:
                res, report = _instrumented(WORK / "reports-zoo", _build_cmd(
                    spec_dir, server.base_url, cache, output, 2), sample=0, timeout=4 * 3600)
        statuses = _statuses(res.stdout)
        sizes = {}
        imagenet = output / "google" / "imagenet"
        if imagenet.is_dir():
            for d in imagenet.iterdir():
                sizes[d.name] = _tree_bytes(d)
    finally:
        for d in (output, cache):  # several GB for the full zoo
            shutil.rmtree(d, ignore_errors=True)

    n_modules = sum(statuses.values())
    per = _per_architecture(report, sampler.samples, sizes)
    samples_peak = max([sum(s.values()) for _, s in sampler.samples] + [0])
    tree_peak = max(samples_peak, res.tree_peak)
    largest = max([report["process_peak"]] + [a["worker_hwm"] for a in per.values()])
    once = all(c["opens"] == 1 and c["values_calls"] == 1 for c in report["checkpoints"].values())
    seed = context.get("build_jobs2")
    seed_note = ("" if not seed else
                 " For scale, figure 4's plain `--jobs 2` over the 2 seed models in this run: "
                 "%s s for %d modules (%s s per module)."
                 % (fmt(seed["wall"]), seed["modules"], fmt(seed["wall"] / seed["modules"])))
    rows.append(Row(
        FIGURE, "`build --all --jobs 2` over %s: %d models, %d modules from cached tarballs "
        "(wall; peak RSS)" % ("the %d smallest single-model specs (QUICK)" % len(models)
                              if QUICK else "every single-model spec", len(models), n_modules),
        "%s s (%s s per module); peak RSS %s (tree), %s (largest process)"
        % (fmt(res.wall), fmt(res.wall / n_modules), mib(tree_peak), mib(largest)),
        "-", None, "-", None,
        "tree = summed RSS of the process tree, sampled every %s s; largest process = highest "
        "kernel high-water mark (VmHWM) of the CLI process or a worker; %d worker processes "
        "(one per task, 2 at a time); "
        "tree peak %s 3 GiB (figure 4's bound, set for `--jobs 1`); each checkpoint read once: "
        "%s; modules on disk: %.2f GB; statuses: %s.%s"
        % (SAMPLE, report["workers"], "<" if tree_peak < RSS_TARGET else ">=",
           "yes" if once else "no", sum(sizes.values()) / 1e9, statuses, seed_note)))

    # Figure 4's instrumented --jobs 1 run timed the seed models' modules with the same
    # timers: the fair comparison for the architectures both sections build.
    fig4 = {}
    for t in context.get("build_targets", []):
        fig4[t["handle"]] = t["total"]
    for name in sorted(per, key=lambda a: per[a]["mean"]["total"]):
        a = per[name]
        m = a["mean"]
        handles = [t["handle"] for t in report["targets"]
                   if t["handle"].split("/")[2] == name and t["handle"] in fig4]
        reference, ratio = "-", None
        if handles:
            ours = sum(t["total"] for t in report["targets"] if t["handle"] in handles)
            theirs = sum(fig4[h] for h in handles)
            ratio = ours / theirs
            reference = ("%s s per module (figure 4, `--jobs 1`, the same %d modules)"
                         % (fmt(theirs / len(handles)), len(handles)))
        rows.append(Row(
            FIGURE, "%s: %d modules, seconds per module (graph / variables / write / card); "
            "peak RSS" % (name, a["modules"]),
            "%s s per module (%s / %s / %s / %s ms); worker peak RSS %s, tree %s"
            % (fmt(m["total"]), fmt(m["graph"]), fmt(m["variables"]), fmt(m["write"]),
               fmt(m["card"] * 1000), mib(a["worker_hwm"]), mib(a["tree_peak"])),
            reference, ratio, "worker peak RSS < 3 GiB", a["worker_hwm"] < RSS_TARGET,
            "worker time per module %s s (start-up, TF import, checkpoint read included; %d "
            "worker processes); %s M parameters, tarball %s MB, modules %s MB on disk; tree = "
            "peak summed RSS of the process tree while a worker of %s was alive (the other "
            "worker included); target: figure 4's 3 GiB bound, which is what one worker "
            "builds at a time.%s"
            % (fmt(a["worker_per_module"]), a["tasks"], fmt(a["params"] / 1e6),
               fmt((a["tarball"] or 0) / 1e6), fmt(a["module_bytes"] / 1e6), name,
               " Ratio > 1: slower with two workers sharing the 2 cores." if handles else "")))

    slow = max(per, key=lambda a: per[a]["mean"]["total"])
    fast = min(per, key=lambda a: per[a]["mean"]["total"])
    slow_worker = max(per, key=lambda a: per[a]["worker_per_module"] or 0)
    rows.append(Row(
        FIGURE, "slowest architecture per module",
        "%s: %s s per module (%s x %s's %s s)" % (
            slow, fmt(per[slow]["mean"]["total"]),
            fmt(per[slow]["mean"]["total"] / per[fast]["mean"]["total"]), fast,
            fmt(per[fast]["mean"]["total"])),
        "-", None, "-", None,
        "ranked by mean module time (graph + variables + write + card); by worker time per "
        "module (start-up and checkpoint read included) the slowest is %s (%s s)."
        % (slow_worker, fmt(per[slow_worker]["worker_per_module"]))))

    # ---- details
    lines = ["Stand-in tarballs of %d models (%s) served over 127.0.0.1 from %s; cache filled "
             "first with `hubexport fetch` per model (%s s in all). `build --all --jobs 2` ran "
             "through benchmarks/instrumented_build.py: %s s wall, %d modules, %d worker "
             "processes, process-tree RSS peak %s."
             % (len(models), ", ".join(models), standins.relative_to(REPO)
                if standins.is_relative_to(REPO) else standins, fmt(sum(fill.values())),
                fmt(res.wall), n_modules, report["workers"], mib(tree_peak)), "",
             "Per architecture (seconds per module are means over its modules; worker time "
             "includes start-up, TensorFlow import and the checkpoint read):", "",
             "| architecture | parameters | modules | s/module | graph | variables | write | "
             "card | hub (TF1) s/module | saved_model_2 s/module | worker s/module | "
             "worker peak RSS (VmHWM) | worker RSS (sampled) | tree peak while alive | "
             "modules on disk |", "|" + "---|" * 15]
    for name in sorted(per, key=lambda a: per[a]["mean"]["total"]):
        a = per[name]
        m = a["mean"]
        lines.append("| %s | %s M | %d | %s | %s | %s | %s | %s ms | %s | %s | %s | %s | %s | "
                     "%s | %s MB |" % (
                         name, fmt(a["params"] / 1e6), a["modules"], fmt(m["total"]),
                         fmt(m["graph"]), fmt(m["variables"]), fmt(m["write"]),
                         fmt(m["card"] * 1000), fmt(a["by_format"].get("hub")),
                         fmt(a["by_format"].get("saved_model_2")),
                         fmt(a["worker_per_module"]), mib(a["worker_hwm"]),
                         mib(a["worker_sampled"]), mib(a["tree_peak"]),
                         fmt(a["module_bytes"] / 1e6)))
    if report["tasks"]:
        lines += ["", "Per worker task (seconds):", "",
                  "| spec | modules | start-up | TF import | checkpoint read | task total | "
                  "peak RSS |", "|---|---|---|---|---|---|---|"]
        for t in sorted(report["tasks"], key=lambda t: (t["spec"], t["targets"])):
            lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                t["spec"], ", ".join(h.split("/", 3)[3] for h in t["targets"]),
                fmt(t["startup_s"]), fmt(t["tf_import_s"]), fmt(t["restore_s"]),
                fmt(t["seconds"]), mib(t["peak_rss"])))
    if report["errors"]:
        lines += ["", "Instrumentation problems: %s" % "; ".join(report["errors"])]
    details.append(("4 zoo. Build every single-model spec with --jobs 2", "\n".join(lines)))
    # targets: for mobilenet_bench.py's comparison with Inception V1 (same timers, --jobs 2).
    context["zoo"] = {"wall": res.wall, "modules": n_modules, "per_architecture": per,
                      "targets": report["targets"]}
