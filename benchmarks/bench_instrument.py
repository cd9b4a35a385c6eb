"""Stage timers for ``hubexport build``, installed in the CLI process and in its workers.

Used by instrumented_build.py (figures 4 and 6). :func:`install` wraps,
without changing what they do, the functions each build stage calls:

  per spec (in the process that fetches)
    fetch      ``hubexport.fetch.fetch_checkpoint`` (cached tarball: size and
               hash check; extraction if needed)
  per checkpoint read (in whichever process reads it)
    restore    ``Checkpoint.__init__`` + ``check`` + ``values`` (reading the
               TF V1 checkpoint), ``checkpoint.write_values_file`` and
               ``map_values_file`` (the values file shared by the workers,
               see ``checkpoint.read_once``) and
               ``nets.variable_requests``
  per target (``hubexport.build._write_target``)
    graph      TF1 Hub format: ``hub_tf1.build_graph`` + ``export_meta_graph``
               (both graph variants); TF2: tracing the functions (what
               ``write_saved_model_2`` spends outside the two parts below)
    variables  checkpoint values into the module's variables: TF1
               ``_save_variables`` minus ``Saver.save``; TF2 the root
               object's ``__init__`` (variables made from the values, one
               eager pass on a 1-image batch)
    write      TF1: ``Saver.save`` + the rest of ``write_hub_module``
               (MetaGraph/SavedModel protos to disk); TF2:
               ``tf.saved_model.save``
    card       ``cards.render_card``
    other      renames, stamp, cleanup (the rest of ``_write_target``)

When ``hubexport.build`` hands work to worker processes (``_run_tasks`` with
an ``_init_worker`` initializer), the initializer is replaced by
:func:`worker_init`, which installs the same timers in each worker and also
records per task: the worker's start-up (process start to initializer), the
TensorFlow import, the checkpoint read and the task's peak RSS.

Peak RSS: the kernel's high-water mark (VmHWM) is reset
(``/proc/self/clear_refs`` = 5) before each target and read after it; a
process's peak is the maximum of all its readings. Bytes read are
/proc/self/io ``rchar`` deltas (read() on files; sockets not counted).
Each process writes its report as JSON into ``$BENCH_REPORT_DIR``.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
import sys
import time

REPORT = {"pid": os.getpid(), "role": "parent", "fetch": {}, "checkpoints": {}, "tasks": [],
          "targets": [], "peak_rss": 0, "errors": []}
_STATE = {"target": None, "task": None}
_SEQ = [0]


def _io() -> dict:
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f.read().splitlines())}


def hwm() -> int:
    """VmHWM in bytes, also folded into this process's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                value = int(line.split()[1]) * 1024
                REPORT["peak_rss"] = max(REPORT["peak_rss"], value)
                if _STATE["task"] is not None:
                    _STATE["task"]["peak_rss"] = max(_STATE["task"]["peak_rss"], value)
                return value
    return 0


def reset_hwm() -> None:
    """Reads the high-water mark (folding it into the peaks), then resets it."""
    hwm()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError as exc:
        REPORT["errors"].append("cannot reset VmHWM: %s" % exc)


def _timed(owner, attr, on_done):
    """Replaces owner.attr by a wrapper calling on_done(seconds, rchar, args, kwargs)."""
    original = getattr(owner, attr)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        io0 = _io()["rchar"]
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            on_done(time.perf_counter() - t0, _io()["rchar"] - io0, args, kwargs)

    setattr(owner, attr, wrapper)
    return original


def _add(entry, key, value):
    if entry is not None:
        entry[key] = entry.get(key, 0) + value


def _checkpoint_bytes(path) -> int:
    """Bytes of a checkpoint: a V1 file, a V2 directory, or a V2 prefix's .index and .data-* files."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return sum(p.stat().st_size for p in path.parent.glob(path.name + ".*") if p.is_file())


def install() -> None:
    """Wraps the stage functions of this process (see the module docstring)."""
    from hubexport import build, cards, checkpoint, fetch, nets

    def fetched(seconds, rchar, args, kwargs):
        spec = args[0]
        entry = REPORT["fetch"].setdefault(spec.name, {"seconds": 0.0, "rchar": 0, "calls": 0})
        entry["seconds"] += seconds
        entry["rchar"] += rchar
        entry["calls"] += 1
        entry["tarball_size"] = os.path.getsize(fetch.tarball_path(spec, kwargs.get("cache_dir")))

    _timed(fetch, "fetch_checkpoint", fetched)

    current = {"path": None}

    def ck_entry(path):
        return REPORT["checkpoints"].setdefault(str(path), {
            "opens": 0, "values_calls": 0, "seconds": 0.0, "rchar": 0, "values_rchar": 0,
            "maps": 0, "map_seconds": 0.0, "map_rchar": 0, "size": _checkpoint_bytes(path)})

    def on_init(seconds, rchar, args, kwargs):
        current["path"] = str(args[1])
        e = ck_entry(args[1])
        e["opens"] += 1
        e["seconds"] += seconds
        e["rchar"] += rchar
        _add(_STATE["task"], "restore_s", seconds)
        _add(_STATE["task"], "restore_rchar", rchar)

    def on_read(count_key):
        def done(seconds, rchar, args, kwargs):
            path = getattr(args[0], "path", None) if args else None
            path = path or current["path"]
            if path is not None:
                e = ck_entry(path)
                e["seconds"] += seconds
                e["rchar"] += rchar
                if count_key:
                    e[count_key] += 1
                    e["values_rchar"] += rchar
            _add(_STATE["task"], "restore_s", seconds)
            _add(_STATE["task"], "restore_rchar", rchar)
        return done

    _timed(checkpoint.Checkpoint, "__init__", on_init)
    _timed(checkpoint.Checkpoint, "check", on_read(None))
    _timed(checkpoint.Checkpoint, "values", on_read("values_calls"))

    real_read_once = checkpoint.read_once

    def read_once(path, *args, **kwargs):
        current["read_once"] = str(path)
        try:
            return real_read_once(path, *args, **kwargs)
        finally:
            current["read_once"] = None

    checkpoint.read_once = read_once

    def on_map(seconds, rchar, args, kwargs):
        if current.get("read_once"):
            e = ck_entry(current["read_once"])
            e["maps"] += 1
            e["map_seconds"] += seconds
            e["map_rchar"] += rchar
        _add(_STATE["task"], "restore_s", seconds)
        _add(_STATE["task"], "restore_rchar", rchar)

    _timed(checkpoint, "map_values_file", on_map)

    def on_write_values(seconds, rchar, args, kwargs):
        if current.get("read_once"):
            e = ck_entry(current["read_once"])
            e["seconds"] += seconds
        _add(_STATE["task"], "restore_s", seconds)

    _timed(checkpoint, "write_values_file", on_write_values)

    def on_requests(seconds, rchar, args, kwargs):
        _add(_STATE["task"], "restore_s", seconds)

    _timed(nets, "variable_requests", on_requests)

    real_write_target = build._write_target

    def write_target(spec, target, *args, **kwargs):
        rec = {"handle": target.module_handle, "format": target.version.format,
               "pid": os.getpid(), "graph": 0.0, "variables": 0.0, "write": 0.0, "card": 0.0,
               "module": 0.0, "_save_variables": 0.0, "_saver_save": 0.0, "_init": 0.0,
               "_sm_save": 0.0}
        _STATE["target"] = rec
        reset_hwm()
        t0 = time.perf_counter()
        try:
            return real_write_target(spec, target, *args, **kwargs)
        finally:
            rec["total"] = time.perf_counter() - t0
            rec["peak_rss"] = hwm()
            if rec["format"] == "hub":
                rec["variables"] = rec["_save_variables"] - rec["_saver_save"]
                rec["write"] = rec["module"] - rec["graph"] - rec["variables"]
            else:
                rec["variables"] = rec["_init"]
                rec["write"] = rec["_sm_save"]
                rec["graph"] = rec["module"] - rec["variables"] - rec["write"]
            rec["other"] = rec["total"] - rec["module"] - rec["card"]
            REPORT["targets"].append({k: v for k, v in rec.items() if not k.startswith("_")})
            _STATE["target"] = None

    build._write_target = write_target

    def into(key):
        def done(seconds, rchar, args, kwargs):
            _add(_STATE["target"], key, seconds)
        return done

    patched_tf = []
    real_write_module = build.write_module

    def write_module(*args, **kwargs):
        if not patched_tf:  # the writers import TensorFlow: patch them only once it is needed
            import tensorflow as tf

            from hubexport.formats import hub_tf1, saved_model_2

            _timed(hub_tf1, "build_graph", into("graph"))
            _timed(hub_tf1, "_save_variables", into("_save_variables"))
            _timed(tf.compat.v1.train, "export_meta_graph", into("graph"))
            _timed(tf.compat.v1.train.Saver, "save", into("_saver_save"))
            _timed(tf.saved_model, "save", into("_sm_save"))
            _timed(saved_model_2._image_module_class(), "__init__", into("_init"))
            patched_tf.append(True)
        t0 = time.perf_counter()
        try:
            return real_write_module(*args, **kwargs)
        finally:
            _add(_STATE["target"], "module", time.perf_counter() - t0)

    build.write_module = write_module
    _timed(cards, "render_card", into("card"))

    if hasattr(build, "_init_worker") and hasattr(build, "_build_task"):
        build._init_worker = worker_init  # pickled by reference: bench_instrument.worker_init



def dump() -> None:
    """Writes this process's report to $BENCH_REPORT_DIR/report-<pid>-<n>.json."""
    directory = os.environ.get("BENCH_REPORT_DIR")
    if not directory:
        return
    hwm()
    REPORT["tensorflow_imported"] = "tensorflow" in sys.modules
    _SEQ[0] += 1
    path = os.path.join(directory, "report-%d-%d.json" % (os.getpid(), _SEQ[0]))
    with open(path + ".tmp", "w") as f:
        json.dump(REPORT, f, indent=1)
    os.replace(path + ".tmp", path)


def _seconds_since_process_start() -> float:
    with open("/proc/self/stat") as f:
        stat = f.read()
    start_ticks = int(stat[stat.rfind(")") + 2:].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def worker_init(*args, **kwargs):
    """Initializer of build worker processes: installs the timers, then hubexport's own."""
    startup = _seconds_since_process_start()
    REPORT["role"] = "worker"
    REPORT["pid"] = os.getpid()
    from hubexport import build, tfimport

    original_init = build._init_worker
    original_task = build._build_task
    try:
        install()
        build._init_worker = original_init

        def on_tf(seconds, rchar, a, kw):
            _add(_STATE["task"], "tf_import_s", seconds)

        _timed(tfimport, "import_tensorflow", on_tf)

        @functools.wraps(original_task)
        def build_task(spec, targets, *a, **kw):
            task = {"pid": os.getpid(), "spec": spec.name, "startup_s": startup,
                    "targets": [t.module_handle for t in targets], "tf_import_s": 0.0,
                    "restore_s": 0.0, "restore_rchar": 0, "peak_rss": 0}
            _STATE["task"] = task
            reset_hwm()
            t0 = time.perf_counter()
            try:
                return original_task(spec, targets, *a, **kw)
            finally:
                task["seconds"] = time.perf_counter() - t0
                hwm()
                REPORT["tasks"].append(task)
                _STATE["task"] = None
                dump()

        build._build_task = build_task  # the pool unpickles the task function by name
    except Exception as exc:  # noqa: BLE001 - run uninstrumented rather than not at all
        REPORT["errors"].append("worker instrumentation failed: %r" % exc)
    return original_init(*args, **kwargs)
