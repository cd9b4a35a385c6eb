"""Figure "4 mobilenet": one ``hubexport build 'mobilenet_v*' --jobs 2`` of all 38 MobileNets.

Issue 12: 348 modules (16 MobileNet V1 models x 8 modules, 22 MobileNet V2
models x 10) must build fast enough; the per-module cost of a small
MobileNet (graph construction, variables from the checkpoint, writing,
card) must be well below an Inception's. Section ``zoo`` (zoo_bench.py)
stays on the ten single-model specs; this section builds the two variant
tables (specs/mobilenet_v1.yaml, specs/mobilenet_v2.yaml) the way a user
would, with two worker processes.

Inputs: a stand-in tarball per model (``hubexport.standin.make_standin(model,
dir, seed=0)``, from the checked-in manifests), each cached in
``build/bench/standins/models/<model>-<key>/`` (key: the model name, its
architecture's manifest, hubexport/standin.py and its variant table; the
missing ones are made in one child process, one TensorFlow import), and a
set directory ``build/bench/standins/mobilenet-<key>/`` hard-linking them,
with copies of the variant tables in which every row of the set is pinned
(``hubexport.standin.pin_variant_text``) to its stand-in's size and sha256,
plus inception_v1 (the comparison; build_bench's per-model stand-in). Served
by benchmarks/server.py on 127.0.0.1; the cache is filled first with one
``hubexport fetch`` of every model, so downloads are not in the timing.

Measured, in one run of instrumented_build.py (stage timers of
bench_instrument.py, in the CLI process and in every worker):
  * the wall time of the whole build, its module count (checked against
    the specs: 348) and the time split by stage summed over the workers
    (start-up, TensorFlow import, checkpoint read, graph construction,
    variables, writing, card, other) and the CLI's tarball checks;
  * per family (V1, V2): modules, mean seconds per module split by stage
    (graph construction / variables from checkpoint / writing / card),
    per format, and worker time per module (start-up, TensorFlow import
    and checkpoint read included); per architecture (depth multiplier) and
    per model in the details;
  * seconds per module of the smallest (mobilenet_v1_025_128) and the
    largest (mobilenet_v2_140_224) MobileNet;
  * seconds per module of the smallest MobileNet vs Inception V1, over
    the same (kind, version) pairs (target: ratio <= RATIO_TARGET), side by
    side: PAIR_REPS instrumented ``build mobilenet_v1_025_128 inception_v1
    --jobs 2`` into fresh outputs, after the 38, so that both are timed under
    the same load (the machine may be shared); means over every rep. The
    smallest MobileNet's figure from the 38-model build, and Inception V1's
    from section ``zoo`` when it ran, are given beside it as a cross-check.
Output (about 4 GB for all 38) and cache are removed afterwards; the
stand-ins stay under build/bench/standins/.

QUICK mode: the smallest and the largest MobileNet only, classification
versions 3 and 5 (4 modules; figure 4's QUICK reduction, in spec copies
whose changelog keeps only those versions), built by name; Inception V1
likewise.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import yaml

from build_bench import (RSS_TARGET, STANDINS, _instrumented, _link, _per_model_standins,
                         _statuses, shipped_specs)
from common import (HUBEXPORT, QUICK, REPO, WORK, LoopbackServer, Row, fmt, log, mib,
                    run_child)
from zoo_bench import SAMPLE, _TreeSampler, _tree_bytes

FIGURE = "4 mobilenet"
FAMILIES = ("mobilenet_v1", "mobilenet_v2")  # the variant tables' spec files (stems)
PATTERN = "mobilenet_v*"  # what the full build is given, as a user would type it
SMALLEST = "mobilenet_v1_025_128"  # 0.47 M parameters, 128 x 128 pixels (ZOO.md)
LARGEST = "mobilenet_v2_140_224"  # 6.1 M parameters, 224 x 224 pixels
REFERENCE = "inception_v1"  # 6.6 M parameters: the smallest Inception
RATIO_TARGET = 0.5  # smallest MobileNet / Inception V1, seconds per module ("well below")
STAGES = ("graph", "variables", "write", "card", "other")
QUICK_VERSIONS = (3, 5)  # classification only, as figure 4's QUICK mode
PAIR_REPS = 1 if QUICK else 2  # builds of the smallest MobileNet beside Inception V1


def mobilenet_models() -> tuple:
    """The models of this section: every model of the variant tables, sorted.

    In QUICK mode only :data:`SMALLEST` and :data:`LARGEST`.
    """
    if QUICK:
        return (SMALLEST, LARGEST)
    return tuple(sorted(n for n, s in shipped_specs().items()
                        if s.variant is not None and s.source.stem in FAMILIES))


# --------------------------------------------------------------------------
# Stand-ins
# --------------------------------------------------------------------------


def ensure_mobilenet_standins(models, label) -> Path:
    """A directory with the stand-ins of ``models`` and :data:`REFERENCE`, and ``specs/``.

    ``specs/`` holds a copy of each variant table with every row of
    ``models`` pinned to its stand-in (other rows as shipped) and
    :data:`REFERENCE`'s pinned spec. Made once per input hash as
    ``STANDINS/<label>-<key>/`` (hard links to the per-model stand-ins;
    older sets of the same label are removed).

    Raises:
      RuntimeError: a pinned copy does not carry a stand-in's checksum.
    """
    from hubexport.specs import load_spec_file, load_specs
    from hubexport.standin import pin_variant_text

    models = tuple(sorted(models))
    variants = _per_model_standins(models)
    reference = _per_model_standins([REFERENCE])[REFERENCE]
    h = hashlib.sha256(",".join(models).encode())
    for m in models:
        h.update(variants[m].name.encode())
    h.update(reference.name.encode())
    done = STANDINS / ("%s-%s" % (label, h.hexdigest()[:16]))
    marker = done / ".complete"
    if marker.is_file() and marker.read_text().split() == list(models):
        return done
    for old in STANDINS.iterdir():
        if old != done and (old.name.rsplit("-", 1)[0] == label
                            or old.name.startswith(".work-%s-" % label)):
            shutil.rmtree(old, ignore_errors=True)
    work = STANDINS / (".work-%s-%d" % (label, os.getpid()))
    shutil.rmtree(work, ignore_errors=True)
    (work / "specs").mkdir(parents=True)
    shipped = shipped_specs()
    tables = {}  # spec file name -> text, pinned row by row
    for m in models:
        spec = shipped[m]
        name = spec.source.name
        made = load_spec_file(variants[m] / "specs" / name)[m].checkpoint
        text = tables.get(name) or spec.source.read_text(encoding="utf-8")
        tables[name] = pin_variant_text(text, spec.variant, made.size, made.checksum,
                                        source=spec.source)
        _link(variants[m] / made.filename, work / made.filename)
    for name, text in tables.items():
        (work / "specs" / name).write_text(text, encoding="utf-8")
    for f in reference.iterdir():
        if f.is_file():
            _link(f, work / f.name)
    _link(reference / "specs" / ("%s.yaml" % REFERENCE),
          work / "specs" / ("%s.yaml" % REFERENCE))
    loaded = load_specs(work / "specs")
    for m in models:
        want = load_spec_file(variants[m] / "specs" / shipped[m].source.name)[m].checkpoint
        if loaded[m].checkpoint.checksum != want.checksum:
            raise RuntimeError("stand-in set %s: %s is not pinned to its stand-in" % (work, m))
    (work / ".complete").write_text("\n".join(models) + "\n")
    shutil.rmtree(done, ignore_errors=True)
    os.replace(work, done)
    return done


def _quick_specs(spec_dir: Path, dest: Path) -> Path:
    """Spec copies keeping only classification versions QUICK_VERSIONS (and their changelog)."""
    from hubexport.specs import load_specs

    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for path in spec_dir.glob("*.yaml"):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        family = data["modules"]["classification"]
        family["versions"] = {v: family["versions"][v] for v in QUICK_VERSIONS}
        data["modules"] = {"classification": family}
        changelog = (data.get("card") or {}).get("changelog")
        if changelog:
            data["card"]["changelog"] = {v: e for v, e in changelog.items()
                                         if v in QUICK_VERSIONS}
        (dest / path.name).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    load_specs(dest)
    return dest


# --------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------


def _pair(handle) -> str:
    """``kind/version`` of a module handle ``google/imagenet/NAME/KIND/VERSION``."""
    return "/".join(handle.split("/")[3:5])


def _model_of(handle) -> str:
    return handle.split("/")[2]


def _num_parameters(architecture) -> int:
    path = REPO / "hubexport" / "data" / ("%s_manifest.json" % architecture)
    return json.loads(path.read_text())["num_parameters"]


def _summary(targets, tasks) -> dict:
    """Means over ``targets`` (bench_instrument target records) and the cost of their ``tasks``."""
    n = len(targets)
    mean = {k: sum(t[k] for t in targets) / n if n else 0.0 for k in ("total",) + STAGES}
    by_format = {}
    for t in targets:
        by_format.setdefault(t["format"], []).append(t["total"])
    worker = sum(t["startup_s"] + t["seconds"] for t in tasks)
    return {"modules": n, "mean": mean,
            "by_format": {f: sum(v) / len(v) for f, v in by_format.items()},
            "tasks": len(tasks), "worker_per_module": worker / n if n else None,
            "startup": sum(t["startup_s"] for t in tasks),
            "tf_import": sum(t["tf_import_s"] for t in tasks),
            "restore": sum(t["restore_s"] for t in tasks),
            "worker_hwm": max([t["peak_rss"] for t in tasks] + [t["peak_rss"] for t in targets]
                              + [0])}


def _group(report, key) -> dict:
    """dict group -> :func:`_summary` of the report's targets and tasks, grouped by key(model)."""
    groups = {}
    for t in report["targets"]:
        groups.setdefault(key(_model_of(t["handle"])), ([], []))[0].append(t)
    for t in report["tasks"]:
        groups.setdefault(key(t["spec"]), ([], []))[1].append(t)
    return {g: _summary(targets, tasks) for g, (targets, tasks) in groups.items()}


def _count(n, noun) -> str:
    return "%d %s%s" % (n, noun, "" if n == 1 else "s")


def _split(m) -> str:
    """'graph / variables / write / card' of a mean dict, card in ms."""
    return "%s / %s / %s / %s ms" % (fmt(m["graph"]), fmt(m["variables"]), fmt(m["write"]),
                                     fmt(m["card"] * 1000))


def _build_args(spec_dir, names, mirror, cache, output):
    return (["build"] + list(names) + ["--json", "--specs", spec_dir, "--mirror", mirror,
                                        "--cache-dir", cache, "--output", output, "--jobs", "2"])


def _means(targets) -> dict:
    """Mean seconds of ``total`` and each stage over target records (zeros if none)."""
    n = len(targets)
    return {k: sum(t[k] for t in targets) / n if n else 0.0 for k in ("total",) + STAGES}


def _miss_note(ratio, ours, theirs) -> str:
    """What a missed ratio target is missed by, and the MobileNet's largest stage."""
    stage = max(("graph", "variables", "write"), key=lambda k: ours[k])
    label = {"graph": "graph construction", "variables": "variables from the checkpoint",
             "write": "writing"}[stage]
    return (" Missed by %.0f %%; the MobileNet's largest stage is %s: %s s, %.0f %% of its "
            "module time, %s x Inception V1's (whose parameters are %s x as many)."
            % (100 * (ratio / RATIO_TARGET - 1), label, fmt(ours[stage]),
               100 * ours[stage] / ours["total"],
               fmt(ours[stage] / theirs[stage]) if theirs[stage] else "n/a",
               fmt(_num_parameters(REFERENCE)
                   / _num_parameters(shipped_specs()[SMALLEST].architecture))))


def run(rows, details, context):
    """Measures figure "4 mobilenet"; appends Rows and detail text."""
    specs = shipped_specs()
    models = mobilenet_models()
    standins = ensure_mobilenet_standins(models, "mobilenet-quick" if QUICK else "mobilenet")
    spec_dir = standins / "specs"
    if QUICK:
        spec_dir = _quick_specs(spec_dir, WORK / "mobilenet-quick-specs")
    from hubexport.specs import load_specs

    selected = load_specs(spec_dir)
    expected = sum(len(selected[m].targets()) for m in models)
    names = list(models) if QUICK else [PATTERN]
    cache = WORK / "mobilenet-cache"
    output = WORK / "mobilenet-modules"
    pair_output = WORK / "mobilenet-pair-modules"
    for d in (cache, output, pair_output):
        shutil.rmtree(d, ignore_errors=True)
    pair_targets, pair_walls = [], []
    try:
        with LoopbackServer(standins) as server:
            fill = run_child([HUBEXPORT, "fetch"] + list(models) + [
                "--specs", spec_dir, "--mirror", server.base_url, "--cache-dir", cache]).wall
            log("mobilenet: cache filled for %d models in %.0f s" % (len(models), fill))
            log("mobilenet: build %s --jobs 2 (%d modules, instrumented)"
                % (" ".join(names), expected))
            with _TreeSampler(exclude=[server.proc.pid]) as sampler:
                res, report = _instrumented(WORK / "reports-mobilenet", _build_args(
                    spec_dir, names, server.base_url, cache, output), sample=0,
                    timeout=4 * 3600)
            statuses = _statuses(res.stdout)
            sizes = {}
            imagenet = output / "google" / "imagenet"
            if imagenet.is_dir():
                for d in imagenet.iterdir():
                    sizes[d.name] = _tree_bytes(d)
            shutil.rmtree(output, ignore_errors=True)

            run_child([HUBEXPORT, "fetch", REFERENCE, "--specs", spec_dir, "--mirror",
                       server.base_url, "--cache-dir", cache])
            for rep in range(PAIR_REPS):
                shutil.rmtree(pair_output, ignore_errors=True)
                log("mobilenet: build %s %s --jobs 2 (the comparison, instrumented, %d of %d)"
                    % (SMALLEST, REFERENCE, rep + 1, PAIR_REPS))
                pair_res, pair_report = _instrumented(
                    WORK / "reports-mobilenet-pair",
                    _build_args(spec_dir, [SMALLEST, REFERENCE], server.base_url, cache,
                                pair_output), sample=0)
                pair_targets += pair_report["targets"]
                pair_walls.append(pair_res.wall)
    finally:
        for d in (output, pair_output, cache):
            shutil.rmtree(d, ignore_errors=True)

    n_modules = sum(statuses.values())
    built = statuses.get("built", 0)
    family_of = {m: specs[m].source.stem for m in models}
    per_family = _group(report, lambda m: family_of.get(m, m))
    per_arch = _group(report, lambda m: specs[m].architecture if m in specs else m)
    per_model = _group(report, lambda m: m)
    samples_peak = max([sum(s.values()) for _, s in sampler.samples] + [0])
    tree_peak = max(samples_peak, res.tree_peak)
    largest_process = max([report["process_peak"]]
                          + [a["worker_hwm"] for a in per_model.values()])
    tasks = report["tasks"]
    stage_sum = {k: sum(t[k] for t in report["targets"]) for k in STAGES}
    startup = sum(t["startup_s"] for t in tasks)
    tf_import = sum(t["tf_import_s"] for t in tasks)
    restore = sum(t["restore_s"] for t in tasks)
    worker_total = sum(t["startup_s"] + t["seconds"] for t in tasks)
    fetch_s = sum(f["seconds"] for f in report["fetch"].values())
    what = ("the smallest and the largest MobileNet (QUICK: classification versions 3 and 5)"
            if QUICK else "all %d MobileNet models" % len(models))

    # ---- the whole build
    rows.append(Row(
        FIGURE, "`build %s --jobs 2` over %s: %d modules from cached tarballs (wall; module "
        "count; time by stage)" % (" ".join(names), what, n_modules),
        "%s s (%s s per module); %d of %d modules built; stages: start-up %s s, TF import %s "
        "s, checkpoint read %s s, graph %s s, variables %s s, writing %s s, card %s s, other "
        "%s s (summed over the workers)"
        % (fmt(res.wall), fmt(res.wall / max(n_modules, 1)), built, expected, fmt(startup),
           fmt(tf_import), fmt(restore), fmt(stage_sum["graph"]), fmt(stage_sum["variables"]),
           fmt(stage_sum["write"]), fmt(stage_sum["card"]), fmt(stage_sum["other"])),
        "-", None, "all %d modules the specs define built" % expected,
        built == expected and n_modules == expected,
        "%d worker processes (one per task: all TF1 modules of a model, or one TF2 module; 2 at "
        "a time) spent %s s in all (%s s of worker time per module; 2 x wall = %s s); the CLI "
        "process checked the cached tarballs in %s s; peak RSS %s (process tree, sampled every "
        "%s s), %s (largest process, VmHWM; %s 3 GiB); modules on disk: %.2f GB; statuses: %s."
        % (report["workers"], fmt(worker_total), fmt(worker_total / max(n_modules, 1)),
           fmt(2 * res.wall), fmt(fetch_s), mib(tree_peak), SAMPLE, mib(largest_process),
           "<" if largest_process < RSS_TARGET else ">=", sum(sizes.values()) / 1e9,
           statuses)))

    # ---- per family
    for fam in sorted(per_family):
        a = per_family[fam]
        m = a["mean"]
        rows.append(Row(
            FIGURE, "%s: %s, %d modules, seconds per module (graph / variables / write / card)"
            % (fam, _count(sum(1 for x in models if family_of[x] == fam), "model"),
               a["modules"]),
            "%s s per module (%s)" % (fmt(m["total"]), _split(m)),
            "-", None, "-", None,
            "per format: %s; worker time per module %s s (start-up %s s, TF import %s s, "
            "checkpoint read %s s over %d worker processes); worker peak RSS %s."
            % (", ".join("%s %s s" % (f, fmt(v)) for f, v in sorted(a["by_format"].items())),
               fmt(a["worker_per_module"]), fmt(a["startup"]), fmt(a["tf_import"]),
               fmt(a["restore"]), a["tasks"], mib(a["worker_hwm"]))))

    # ---- smallest and largest
    for model, label in ((SMALLEST, "smallest"), (LARGEST, "largest")):
        a = per_model.get(model)
        if a is None:
            continue
        m = a["mean"]
        spec = specs[model]
        rows.append(Row(
            FIGURE, "%s (%s MobileNet: %s M parameters, %d pixels): %d modules, seconds per "
            "module (graph / variables / write / card)"
            % (model, label, fmt(_num_parameters(spec.architecture) / 1e6), spec.image_size,
               a["modules"]),
            "%s s per module (%s)" % (fmt(m["total"]), _split(m)), "-", None, "-", None,
            "per format: %s; worker time per module %s s (start-up, TF import, checkpoint "
            "read included; %d worker processes); modules %s MB on disk."
            % (", ".join("%s %s s" % (f, fmt(v)) for f, v in sorted(a["by_format"].items())),
               fmt(a["worker_per_module"]), a["tasks"], fmt(sizes.get(model, 0) / 1e6))))

    # ---- smallest MobileNet vs Inception V1, side by side, over the same (kind, version) pairs
    small = [t for t in pair_targets if _model_of(t["handle"]) == SMALLEST]
    ref = [t for t in pair_targets if _model_of(t["handle"]) == REFERENCE]
    common = sorted({_pair(t["handle"]) for t in small} & {_pair(t["handle"]) for t in ref})
    if common:
        o = _means([t for t in small if _pair(t["handle"]) in common])
        r = _means([t for t in ref if _pair(t["handle"]) in common])
        ratio = o["total"] / r["total"]
        in_38 = _means([t for t in report["targets"] if _model_of(t["handle"]) == SMALLEST
                        and _pair(t["handle"]) in common])
        zoo = [t for t in (context.get("zoo") or {}).get("targets", [])
               if _model_of(t["handle"]) == REFERENCE and _pair(t["handle"]) in common]
        cross = "in the %d-model build above: %s s per module" % (len(models),
                                                                 fmt(in_38["total"]))
        if zoo:
            cross += ("; Inception V1 in section zoo's `build --all --jobs 2`: %s s per module "
                      "(%d modules)" % (fmt(_means(zoo)["total"]), len(zoo)))
        rows.append(Row(
            FIGURE, "seconds per module, smallest MobileNet (%s) vs Inception V1, the same %d "
            "modules (kind/version), side by side" % (SMALLEST, len(common)),
            "%s s per module (%s)" % (fmt(o["total"]), _split(o)),
            "%s s per module (%s)" % (fmt(r["total"]), _split(r)),
            ratio, "<= %s" % RATIO_TARGET, ratio <= RATIO_TARGET,
            "mean `_write_target` time (graph construction + variables from the checkpoint + "
            "writing + card + other; worker start-up and checkpoint read not included) over "
            "%s of `build %s %s --jobs 2` (%s s wall); modules: %s. By stage, MobileNet / "
            "Inception V1: graph %s, variables %s, writing %s. Cross-check, the smallest "
            "MobileNet %s.%s"
            % (_count(PAIR_REPS, "run"), SMALLEST, REFERENCE,
               " / ".join(fmt(w) for w in pair_walls), ", ".join(common),
               fmt(o["graph"] / r["graph"]) if r["graph"] else "n/a",
               fmt(o["variables"] / r["variables"]) if r["variables"] else "n/a",
               fmt(o["write"] / r["write"]) if r["write"] else "n/a", cross,
               "" if ratio <= RATIO_TARGET else _miss_note(ratio, o, r))))
    else:
        rows.append(Row(FIGURE, "seconds per module, smallest MobileNet vs Inception V1",
                        "no modules in common (%s: %d, %s: %d)"
                        % (SMALLEST, len(small), REFERENCE, len(ref)),
                        "-", None, "<= %s" % RATIO_TARGET, None, ""))

    # ---- details
    lines = ["Stand-in tarballs of %d MobileNets served over 127.0.0.1 from %s; cache filled "
             "first with one `hubexport fetch` of every model (%s s). `build %s --jobs 2` ran "
             "through benchmarks/instrumented_build.py: %s s wall, %d modules, %d worker "
             "processes, process-tree RSS peak %s. Seconds per module are means of "
             "`_write_target` over the modules (graph construction / variables from the "
             "checkpoint / writing / card; stage definitions in benchmarks/bench_instrument.py); "
             "worker time per module also counts each worker's start-up, TensorFlow import and "
             "checkpoint read."
             % (len(models), standins.relative_to(REPO) if standins.is_relative_to(REPO)
                else standins, fmt(fill), " ".join(names), fmt(res.wall), n_modules,
                report["workers"], mib(tree_peak)), ""]
    header = ("| %s | parameters | modules | s/module | graph | variables | write | card | "
              "hub (TF1) s/module | saved_model_2 s/module | worker s/module | worker peak RSS "
              "(VmHWM) |")
    lines += ["Per architecture (depth multiplier; every resolution):", "",
              header % "architecture", "|" + "---|" * 12]

    def table_row(name, params, a):
        m = a["mean"]
        return "| %s | %s M | %d | %s | %s | %s | %s | %s ms | %s | %s | %s | %s |" % (
            name, fmt(params / 1e6), a["modules"], fmt(m["total"]), fmt(m["graph"]),
            fmt(m["variables"]), fmt(m["write"]), fmt(m["card"] * 1000),
            fmt(a["by_format"].get("hub")), fmt(a["by_format"].get("saved_model_2")),
            fmt(a["worker_per_module"]), mib(a["worker_hwm"]))

    for name in sorted(per_arch, key=lambda n: (n.rsplit("_", 1)[0], n)):
        lines.append(table_row(name, _num_parameters(name), per_arch[name]))
    lines += ["", "Per model:", "", header % "model", "|" + "---|" * 12]
    for name in sorted(per_model, key=lambda n: (specs[n].architecture, specs[n].image_size)):
        lines.append(table_row(name, _num_parameters(specs[name].architecture), per_model[name]))
    if pair_targets:
        lines += ["", "The comparison, %s of `build %s %s --jobs 2` (seconds per module, means "
                  "over the runs):" % (_count(PAIR_REPS, "run"), SMALLEST, REFERENCE), "",
                  "| module | format | graph | variables | write | card | other | total |",
                  "|---|---|---|---|---|---|---|---|"]
        by_handle = {}
        for t in pair_targets:
            by_handle.setdefault(t["handle"], []).append(t)
        for handle in sorted(by_handle, key=lambda h: (_pair(h), h)):
            m = _means(by_handle[handle])
            lines.append("| %s | %s | %s | %s | %s | %s ms | %s | %s |" % (
                handle, by_handle[handle][0]["format"], fmt(m["graph"]), fmt(m["variables"]),
                fmt(m["write"]), fmt(m["card"] * 1000), fmt(m["other"]), fmt(m["total"])))
    if report["errors"]:
        lines += ["", "Instrumentation problems: %s" % "; ".join(report["errors"])]
    details.append(("4 mobilenet. Build %s with --jobs 2" % (
        "the smallest and the largest MobileNet (QUICK)" if QUICK
        else "all %d MobileNets" % len(models)), "\n".join(lines)))
    context["mobilenet"] = {"wall": res.wall, "modules": n_modules, "per_family": per_family,
                            "per_model": per_model, "specs": spec_dir, "standins": standins}
