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
TF.js rows are not measured yet (no TF.js variant is written yet, issue 13).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from common import HUBEXPORT, PYTHON, QUICK, REPO, WORK, Row, child_env, fmt, log, median, run_child

DEPLOY_MODELS = ("inception_v2",)
ROUNDS = 1 if QUICK else 3
REPS = 2 if QUICK else 5


def _litert_python() -> str:
    return os.environ.get("HUBEXPORT_LITERT_PYTHON", str(REPO / ".venv-litert" / "bin" / "python"))


def run(rows, details, context):
    """Measures figure 7; needs ``context`` from build_bench (modules, specs, cache)."""
    if "modules" not in context:
        raise RuntimeError("figure 7 needs the modules built by the build section (run it too)")
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
        proc = subprocess.run([HUBEXPORT, "build", model, "--version", "5", "--kind",
                               "classification", "--deploy", "tflite", "--json", "--specs",
                               str(context["specs"]), "--cache-dir", str(context["cache"]),
                               "--output", str(modules)], capture_output=True, text=True,
                              env=child_env(), timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError("build --deploy tflite failed: %s" % proc.stderr[-2000:])
        results = {r["module_handle"]: r for r in json.loads(proc.stdout)}
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
        for name in list(candidates)[1:]:
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
    details.append(("7. Deployment variants: TFLite in LiteRT", "\n".join(lines)))
