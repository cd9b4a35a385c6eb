"""Figure 7: a TFLite variant in LiteRT against its parent module in TensorFlow (images/s).

Converts the version 5 classification modules of DEPLOY_MODELS (built by
the build section, or here) with ``hubexport build --deploy tflite``, then
measures images/s at batch 1 and batch 16 of the parent's
``serving_default`` in TensorFlow 2.21 and of the float32 and
dynamic-range ``.tflite`` files in LiteRT (``ai-edge-litert``, in
``.venv-litert``; 2 threads, XNNPACK), each in a child process of its own
(deploy_child.py). The candidates take turns, ROUNDS times, so that the
machine's drift hits them alike; figures are medians over all timed calls.
No target: the rows say what a phone-style runtime gives on this machine.
The TF.js rows do the same for the ``--deploy tfjs`` float32 variant of
TFJS_MODEL's version 3 classification module (built here from the mobilenet
section's stand-ins, which that section's clean-up leaves; TensorFlow.js's
own model zoo serves this MobileNet) in Node.js
(TensorFlow.js 4.22.0 from tests/tfjs, cpu and wasm backends;
tfjs_child.cjs) against that module's ``default`` signature in TensorFlow,
TFJS_ROUNDS rounds of TFJS_REPS calls (the cpu backend is plain JavaScript
and takes seconds per image).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from common import HUBEXPORT, PYTHON, QUICK, REPO, WORK, Row, child_env, fmt, log, median, run_child

DEPLOY_MODELS = ("inception_v2",)
ROUNDS = 1 if QUICK else 3
REPS = 2 if QUICK else 5
# QUICK builds only the smallest and the largest MobileNet (mobilenet_bench).
TFJS_MODEL = "mobilenet_v1_025_128" if QUICK else "mobilenet_v1_100_224"
TFJS_ROUNDS, TFJS_REPS = 1, 2 if QUICK else 3


def _litert_python() -> str:
    return os.environ.get("HUBEXPORT_LITERT_PYTHON", str(REPO / ".venv-litert" / "bin" / "python"))


def run(rows, details, context):
    """Measures figure 7; needs ``context`` from build_bench and mobilenet_bench."""
    if "modules" not in context or "standins" not in context.get("mobilenet", {}):
        raise RuntimeError("figure 7 needs the modules built by the build and mobilenet "
                           "sections (run them too)")
    litert = _litert_python()
    if not Path(litert).is_file():
        raise RuntimeError("%s not found: run `make install-litert`" % litert)
    modules = Path(context["modules"])
    lines = ["Version 5 classification modules and their `--deploy tflite` variants; batch 1 "
             "and batch 16 (16 invocations of the one-image flat buffer) at the default size; "
             "%d rounds of %d timed calls per candidate after 2 warm-up calls, candidates "
             "taking turns; medians." % (ROUNDS, REPS), ""]
    for model in DEPLOY_MODELS:
        log("deploy: %s" % model)
        results = _build_variants(model, 5, "tflite", context["specs"], context["cache"], modules)
        parent = "google/imagenet/%s/classification/5" % model
        size = json.loads((modules / "google" / "imagenet" / model / "classification" /
                           ".5.stamp").read_text())["module"]["image_size"]
        candidates = {"module (TensorFlow)": (PYTHON, "module", results[parent]["module_dir"])}
        for variant in ("default", "dynamic_range"):
            handle = "google/lite-model/imagenet/%s/classification/5/%s/1" % (model, variant)
            candidates["%s .tflite (LiteRT)" % variant] = (litert, "litert",
                                                           results[handle]["module_dir"])
        times = {name: {1: [], 16: []} for name in candidates}
        for round_ in range(ROUNDS):
            for name, (python, mode, path) in candidates.items():
                out = WORK / ("deploy-%s.json" % round_)
                run_child([python, str(Path(__file__).with_name("deploy_child.py")), mode,
                           str(path), str(size), str(REPS), str(out)], env=child_env(),
                           timeout=1800)
                for n, ts in json.loads(out.read_text())["times"].items():
                    times[name][int(n)].extend(ts)
        thr = {name: {n: n / median(ts) for n, ts in per.items()} for name, per in times.items()}
        base = thr["module (TensorFlow)"]
        for name in list(candidates)[1:]:  # the .tflite files
            for n in (1, 16):
                rows.append(Row("7", "%s v5 classification, batch %d: %s vs the parent module "
                                "in TensorFlow (`serving_default`)" % (model, n, name),
                                "%s images/s" % fmt(thr[name][n]), "%s images/s" % fmt(base[n]),
                                thr[name][n] / base[n], "-", None,
                                "" if n == 1 else "16 invocations of the one-image flat buffer."))
        lines += ["**%s** (%d px): images/s" % (model, size), "",
                  "| candidate | batch 1 | batch 16 |", "|---|---|---|"]
        lines += ["| %s | %s | %s |" % (name, fmt(t[1]), fmt(t[16])) for name, t in thr.items()]
        lines.append("")
    lines += _tfjs(rows, context["mobilenet"])
    details.append(("7. Deployment variants: TFLite in LiteRT, TF.js in Node.js",
                    "\n".join(lines)))


def _build_variants(model, version, fmt, specs, cache, output, mirror=None):
    """``hubexport build MODEL --version V --kind classification --deploy FMT``: {handle: result}."""
    proc = subprocess.run([HUBEXPORT, "build", model, "--version", str(version), "--kind",
                           "classification", "--deploy", fmt, "--json", "--specs", str(specs),
                           "--cache-dir", str(cache), "--output", str(output)]
                          + (["--mirror", str(mirror)] if mirror else []),
                          capture_output=True, text=True, env=child_env(), timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError("build --deploy %s failed: %s" % (fmt, proc.stderr[-2000:]))
    return {r["module_handle"]: r for r in json.loads(proc.stdout)}


def _tfjs(rows, mobilenet):
    """The TF.js rows (module docstring); returns the detail lines."""
    model = TFJS_MODEL
    modules, cache = WORK / "deploy-tfjs-modules", WORK / "deploy-tfjs-cache"
    for d in (modules, cache):
        shutil.rmtree(d, ignore_errors=True)
    log("deploy: tfjs %s" % model)
    results = _build_variants(model, 3, "tfjs", mobilenet["specs"], cache, modules,
                              mirror=mobilenet["standins"])
    tf1 = results["google/imagenet/%s/classification/3" % model]["module_dir"]
    graph_model = results["google/tfjs-model/imagenet/%s/classification/3/default/1"
                          % model]["module_dir"]
    size = json.loads((Path(tf1).parent / ".3.stamp").read_text())["module"]["image_size"]
    node = shutil.which("node")
    tfjs_modules = REPO / "tests" / "tfjs" / "node_modules"
    if node is None or not tfjs_modules.is_dir():
        raise RuntimeError("node or tests/tfjs/node_modules missing: run `make install-tfjs`")
    child = str(Path(__file__).with_name("tfjs_child.cjs"))
    candidates = {
        "v3 module (TensorFlow)": [PYTHON, str(Path(__file__).with_name("deploy_child.py")),
                                   "module_tf1", tf1],
        "float32 TF.js graph model (Node.js, cpu backend)": [node, child, "cpu", graph_model],
        "float32 TF.js graph model (Node.js, wasm backend)": [node, child, "wasm", graph_model]}
    times = {name: {1: [], 16: []} for name in candidates}
    for round_ in range(TFJS_ROUNDS):
        for name, argv in candidates.items():
            out = WORK / ("deploy-tfjs-%s.json" % round_)
            run_child(argv + [str(size), str(TFJS_REPS), str(out)],
                      env=child_env(NODE_PATH=str(tfjs_modules)), timeout=3600)
            for n, ts in json.loads(out.read_text())["times"].items():
                times[name][int(n)].extend(ts)
    thr = {name: {n: n / median(ts) for n, ts in per.items()} for name, per in times.items()}
    base = thr["v3 module (TensorFlow)"]
    for name in list(candidates)[1:]:
        for n in (1, 16):
            rows.append(Row("7", "%s v3 classification, batch %d: %s vs the parent module in "
                            "TensorFlow (`default` signature)" % (model, n, name),
                            "%s images/s" % fmt(thr[name][n]), "%s images/s" % fmt(base[n]),
                            thr[name][n] / base[n], "-", None,
                            "@tensorflow/tfjs-node, TF.js's native backend, cannot be "
                            "installed here (it downloads a binary)."))
    lines = ["**%s** (%d px), TF.js: %d round(s) of %d timed calls per candidate after 2 "
             "warm-up calls; images/s" % (model, size, TFJS_ROUNDS, TFJS_REPS), "",
             "| candidate | batch 1 | batch 16 |", "|---|---|---|"]
    lines += ["| %s | %s | %s |" % (name, fmt(t[1]), fmt(t[16])) for name, t in thr.items()]
    return lines + [""]
