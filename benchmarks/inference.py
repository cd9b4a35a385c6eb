"""Figure 5: inference throughput of exported modules (images/s, batch 16, default size).

Runs inference_child.py twice on the modules figure 4 built:
  * ``hub_load``: version 3 through ``hub.load`` vs the checkpoint's net
    (``checkpoint_function``) in the same process; target ratio >= 0.98;
  * ``keras_layer`` (TF_USE_LEGACY_KERAS=1, a separate process): version 5
    through ``hub.KerasLayer`` vs ``checkpoint_function`` (target >= 0.98),
    and the Inception-ResNet-V2 v5 module vs
    ``tf_keras.applications.InceptionResNetV2(weights=None)`` (target >= 1.0).
Medians of interleaved rounds after warm-up (see inference_child.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from common import PYTHON, QUICK, WORK, Row, child_env, fmt, log, median, run_child

ARCHITECTURES = ("inception_v2", "inception_resnet_v2")
TARGET_CKPT = 0.98
TARGET_KERAS = 1.0
OPS_SHOWN = ("Conv2D", "DepthwiseConv2dNative", "FusedBatchNormV3", "MatMul", "Relu", "AddV2",
             "Mul", "Sub", "ConcatV2", "AvgPool", "MaxPool", "Assert", "Identity")


COMPUTE_OPS = ("Conv2D", "DepthwiseConv2dNative", "FusedBatchNormV3", "MatMul", "Relu", "AddV2",
               "Mul", "Sub", "ConcatV2", "AvgPool", "MaxPool")


def _why(r: dict, ours: str, ref: str) -> str:
    """What bounds a ratio below target: graph differences, or run-to-run noise."""
    a, b = r["ops"][ours], r["ops"][ref]
    diff = ["%s %d vs %d" % (op, a.get(op, 0), b.get(op, 0)) for op in COMPUTE_OPS
            if a.get(op, 0) != b.get(op, 0)]
    t_ours, t_ref = r["times"][ours], r["times"][ref]
    noise = max((max(t) - min(t)) / median(t) for t in (t_ours, t_ref))
    best = min(t_ref) / min(t_ours)
    text = ("the graphs differ only in %s (compute-op counts in the details)" % ", ".join(diff)
            if diff else "both graphs hold the same compute ops (counts in the details)")
    gap = 1 - median(t_ref) / median(t_ours)
    verdict = ("the gap (%.1f%%) is within this run's noise" % (gap * 100) if gap <= noise
               else "the gap (%.1f%%) is larger than this run's noise" % (gap * 100))
    return ("%s; the per-call times of the pair spread by up to %.0f%% within this run "
            "(%s: %s s; %s: %s s) and the best-call ratio is %.2f; %s" % (
                text, noise * 100, ours, ", ".join(fmt(x) for x in t_ours), ref,
                ", ".join(fmt(x) for x in t_ref), best, verdict))


def _ops_table(ops: dict) -> list[str]:
    names = list(ops)
    lines = ["| op type | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for op in OPS_SHOWN + ("(all ops)",):
        vals = [sum(h.values()) if op == "(all ops)" else h.get(op, 0) for h in ops.values()]
        if any(vals):
            lines.append("| %s | %s |" % (op, " | ".join(str(v) for v in vals)))
    return lines


def run(rows, details, context):
    """Measures figure 5; needs ``context`` from build_bench (modules, specs, cache)."""
    if "modules" not in context:
        raise RuntimeError("figure 5 needs the modules built by the build section (run it too)")
    batch = 2 if QUICK else 16
    reps = 2 if QUICK else 9
    lines = ["Batch %d at the default image size (224 / 299 pixels), %d interleaved rounds "
             "after a warm-up call per candidate; medians. TensorFlow's default thread pools "
             "(all %s cores)." % (batch, reps, "2"), ""]
    labels = {"hub_load": ("v3 via `hub.load`", "module"),
              "keras_layer": ("v5 via `hub.KerasLayer`", "module")}
    for mode, env_extra in (("hub_load", {}), ("keras_layer", {"TF_USE_LEGACY_KERAS": "1"})):
        out = WORK / ("inference-%s.json" % mode)
        log("inference: %s" % mode)
        run_child([PYTHON, Path(__file__).with_name("inference_child.py"), mode, context["specs"],
                   context["cache"], context["modules"], ",".join(ARCHITECTURES), batch, reps,
                   out], env=child_env(**env_extra), timeout=1800)
        data = json.loads(out.read_text())
        for arch in ARCHITECTURES:
            r = data[arch]
            thr = {k: r["batch"] / median(v) for k, v in r["times"].items()}
            label = labels[mode][0]
            ratio = thr["module"] / thr["checkpoint"]
            met = ratio >= TARGET_CKPT
            note = ("outputs bit-identical to the checkpoint's net." if r["max_abs_diff"] == 0
                    else "max |module - checkpoint| logits: %.2g." % r["max_abs_diff"])
            if not met:
                note += " Missed by %.1f%% of the target; %s." % (
                    (1 - ratio / TARGET_CKPT) * 100, _why(r, "module", "checkpoint"))
            rows.append(Row("5", "%s %s vs the checkpoint's net (`checkpoint_function`)"
                            % (arch, label), "%s images/s" % fmt(thr["module"]),
                            "%s images/s" % fmt(thr["checkpoint"]), ratio,
                            ">= %.2f" % TARGET_CKPT, met, note))
            if "keras" in thr:
                kratio = thr["module"] / thr["keras"]
                kmet = kratio >= TARGET_KERAS
                knote = ""
                if not kmet:
                    knote = "Missed by %.1f%%; %s." % ((1 - kratio / TARGET_KERAS) * 100,
                                                       _why(r, "module", "keras"))
                rows.append(Row("5", "%s %s vs `tf_keras.applications.InceptionResNetV2("
                                "weights=None)`" % (arch, label),
                                "%s images/s" % fmt(thr["module"]),
                                "%s images/s" % fmt(thr["keras"]), kratio,
                                ">= %.1f" % TARGET_KERAS, kmet, knote))
            lines += ["**%s, %s** (images/s: %s; set-up s: %s; warm-up call s: %s). Op "
                      "counts of each candidate's graph:" % (
                          arch, label, ", ".join("%s %s" % (k, fmt(v)) for k, v in thr.items()),
                          ", ".join("%s %s" % (k, fmt(v)) for k, v in r["setup"].items()),
                          ", ".join("%s %s" % (k, fmt(v)) for k, v in r["warmup"].items())), ""]
            lines += _ops_table(r["ops"]) + [""]
    details.append(("5. Exported modules: inference", "\n".join(lines)))
