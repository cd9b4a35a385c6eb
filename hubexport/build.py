"""The build stage: from a spec's checkpoint to module directories and cards.

Public entry point: :func:`build`. For each spec it fetches and verifies the
tarball once, reads the checkpoint once, checks it strictly against the net,
then writes every requested module with the format writer its version names
(``hub`` -> :mod:`hubexport.formats.hub_tf1`, ``saved_model_2`` ->
:mod:`hubexport.formats.saved_model_2`) and renders its card.

Output layout (``OUT`` = ``--output``)::

    OUT/google/imagenet/inception_v2/classification/3/      the module
    OUT/google/imagenet/inception_v2/classification/3.md     its card
    OUT/google/imagenet/inception_v2/classification/.3.stamp what it was built from

With ``deploy=("tflite", "tfjs")`` (``--deploy``), each module whose
version lists a format under ``deploy`` in its spec then gets that format's
variants, beside the modules under their own handles (:mod:`hubexport.deploy`)::

    OUT/google/lite-model/imagenet/inception_v2/classification/5/default/1.tflite  (and 1.md)
    OUT/google/tfjs-model/imagenet/inception_v2/classification/3/default/1/        (and 1.md)

A module directory appears only complete: it is written to a temporary
directory beside it (``.3.tmp-<pid>``) and renamed into place; the card
follows, then the stamp. Leftovers of an interrupted build are removed by
the next build of the same target. A target whose stamp matches the inputs
(spec file, checkpoint checksum, hubexport version) is not rebuilt. The stamp
also records what ``hubexport publish`` needs (see :func:`build_record`).

A spec whose checkpoint has no published checksum (``checksum: unpublished``)
is refused before anything is done unless ``allow_unpinned``; allowed, its
tarball is fetched (or the cached one hashed) before the up-to-date check,
since the stamp holds the sha256 of the bytes the module was built from, and
the stamp records them with ``"pinned": false``.

Worker processes (``jobs``): the parent fetches and verifies each tarball
once, then hands out tasks to ``jobs`` worker processes (spawned, so no
TensorFlow state is inherited). A task is either all TF1 Hub format targets
(versions 1 and 3) of one spec, or one TF2 SavedModel target (versions 4 and
5); each task runs in a fresh process. A checkpoint shared by several tasks
is still read from disk once per build: the first task to need it reads and
checks it and writes its values to a values file in ``OUT/.hubexport-values-
<pid>/`` (:func:`hubexport.checkpoint.read_once`); the other tasks
memory-map that file. The directory is removed when the build ends (or, after
a crash, by the next build of the same output, which holds the output lock).
TensorFlow names the functions of a TF2 SavedModel after a process-wide
counter, so a TF2 module written after other work in the same process gets
other bytes in ``saved_model.pb``; writing each one in a fresh process makes
every module's bytes depend only on its inputs, not on ``--jobs`` or on what
else the same command built (README, "Reproducible archives").
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import filelock

from hubexport import __version__
from hubexport.atomic import disk_error as _disk_error
from hubexport.atomic import write_text as _write_atomic
from hubexport.errors import BuildError, UsageError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class BuildResult:
    """What happened to one target.

    Attributes:
      module_handle: e.g. ``google/imagenet/inception_v2/classification/3``
        (a deployment variant's handle for a variant).
      module_dir: the module directory (Path); for a deployment variant, its
        file or directory (e.g. ``.../5/default/1.tflite``).
      card: the card file (Path).
      status: "built" or "up-to-date".
      seconds: wall time spent on this target (seconds).
      deploy: None for a module; a deployment variant's format ("tflite", "tfjs").
    """

    module_handle: str
    module_dir: Path
    card: Path
    status: str
    seconds: float
    deploy: str | None = None

    def to_json(self):
        out = {"module_handle": self.module_handle, "module_dir": str(self.module_dir),
               "card": str(self.card), "status": self.status,
               "seconds": round(self.seconds, 3)}
        if self.deploy is not None:
            out["deploy"] = self.deploy
        return out


def target_paths(output, target):
    """Returns (module_dir, card_path, stamp_path) of a target under ``output``."""
    parent = Path(output) / target.handle
    version = str(target.version.version)
    return parent / version, parent / (version + ".md"), parent / ("." + version + ".stamp")


def _stamp(target, source=None):
    """The content hash that decides whether a built module is up to date.

    ``source`` is :func:`source_record`'s dict; for an unpinned source its
    checksum (of the bytes used) goes into the hash, since the spec has none.
    """
    spec = target.spec
    h = hashlib.sha256()
    h.update(Path(spec.source).read_bytes())
    if spec.labels is not None:
        h.update(b"labels:" + _read_labels(spec.labels).encode())
    if spec.checkpoint.local:
        checksum = "local:" + source["checksum"]
    elif source is not None and not source["pinned"]:
        checksum = "unpinned:" + source["checksum"]
    else:
        checksum = "%s:%s" % (spec.checkpoint.checksum_algo, spec.checkpoint.checksum_hex)
    h.update(("%s|%s|%s|%d" % (checksum, __version__, target.kind,
                               target.version.version)).encode())
    return h.hexdigest()


def is_up_to_date(output, target, source=None):
    """True if the module, its card and a matching stamp are all in place.

    ``source``: :func:`source_record`'s dict (needed for an unpinned source).
    """
    module_dir, card, stamp = target_paths(output, target)
    try:
        return (module_dir.is_dir() and card.is_file()
                and json.loads(stamp.read_text()).get("stamp") == _stamp(target, source))
    except (OSError, ValueError):
        return False


def source_record(spec, fetched=None):
    """The ``source`` of a build record: what the module's checkpoint tarball was.

    Args:
      spec: a :class:`hubexport.specs.ModelSpec`.
      fetched: the :class:`hubexport.fetch.FetchedSource` of an unpinned or
        local source (required then; ignored for a pinned tarball).

    Returns:
      dict (JSON-ready): ``url``, ``filename``, ``size`` (bytes; for a
      pinned source as the spec says, possibly None), ``checksum``
      (``"ALGO:HEX"`` as pinned by the spec, or ``"sha256:HEX"`` of the
      bytes used for an unpinned one), ``member`` and ``pinned`` (bool).
      A local checkpoint's has ``url`` and ``member`` None, ``path`` (the
      checkpoint read: V1 file or V2 prefix), ``size`` (its files' bytes),
      ``checksum`` (``"sha256:HEX"``, see :mod:`hubexport.local_source`)
      and ``files`` ({name: sha256 hex}).

    Raises:
      ValueError: the source is unpinned or local and ``fetched`` is None.
    """
    ckpt = spec.checkpoint
    if (not ckpt.pinned or ckpt.local) and fetched is None:
        raise ValueError("source_record: %s has no published checksum or is local; pass what "
                         "was fetched" % spec.name)
    if ckpt.local:
        return {"url": None, "path": str(fetched.checkpoint), "filename": fetched.checkpoint.name,
                "size": fetched.size, "checksum": fetched.checksum, "files": dict(fetched.files),
                "member": None, "pinned": ckpt.pinned}
    record = {"url": ckpt.url, "filename": ckpt.filename, "size": ckpt.size,
              "checksum": "%s:%s" % (ckpt.checksum_algo, ckpt.checksum_hex),
              "member": ckpt.member, "pinned": True}
    if not ckpt.pinned:
        record.update(size=fetched.size, checksum=fetched.checksum, pinned=False)
    return record


def _clean_leftovers(parent, version):
    """Removes temporary files and directories of interrupted builds of one target.

    These are the module's ``.V.tmp-PID`` / ``.V.old-PID`` directories and the
    card's and stamp's ``_write_atomic`` files (``.V.md.tmp-PID``,
    ``..V.stamp.tmp-PID``).
    """
    if not parent.is_dir():
        return
    prefixes = tuple(p % version for p in (".%s.tmp-", ".%s.old-", ".%s.md.tmp-",
                                           "..%s.stamp.tmp-"))
    for entry in parent.iterdir():
        if entry.name.startswith(prefixes):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink()


def _tf_write_error(error):
    """The reason of a TensorFlow error raised while writing, or None if it is another error.

    TF reports file system failures as ``tf.errors.OpError`` whose message
    holds ``<path>; <reason>`` (e.g. "File too large") after lines such as
    "Graph execution error:"; returns that reason (one line).
    """
    import re
    import sys

    tf = sys.modules.get("tensorflow")
    if tf is None or not isinstance(error, tf.errors.OpError):
        return None
    lines = [l.strip() for l in str(getattr(error, "message", error)).splitlines() if l.strip()]
    for line in lines:
        m = re.search(r"/\S*; ([^;]+)$", line)
        if m:
            return m.group(1)
    useful = [l for l in lines if not l.startswith(("Graph execution error", "Detected at"))]
    return (useful or lines or [type(error).__name__])[0][:200]


def build(specs, *, output, version=None, kind=None, cache_dir=None, mirror=None,
          force=False, progress=None, jobs=1, allow_unpinned=False, on_unpinned=None,
          deploy=()):
    """Builds modules and cards.

    Args:
      specs: list of :class:`hubexport.specs.ModelSpec` to build.
      output: the output directory (created if missing).
      version: int, or None for every version the spec defines.
      kind: "classification", "feature_vector", or None for both.
      cache_dir: download cache (see :func:`hubexport.fetch.default_cache_dir`).
      mirror: base URL or path replacing the tarballs' download location.
      force: rebuild even when up to date.
      progress: show download progress bars (None: when stderr is a TTY).
      jobs: number of worker processes writing modules (int >= 1).
      allow_unpinned: accept specs whose checkpoint has no published
        checksum (else they are refused before anything is done).
      on_unpinned: called as ``on_unpinned(spec, fetched)`` (a
        :class:`hubexport.fetch.FetchedSource`) after an unpinned source was
        fetched; None logs :func:`hubexport.fetch.unpinned_warning` as a
        warning.
      deploy: deployment formats (names of :data:`hubexport.deploy.FORMATS`,
        e.g. ``("tflite",)``): after the modules, each target whose version
        lists one of them under ``deploy`` in its spec gets that format's
        variants (:func:`hubexport.deploy.deploy_targets`), written in worker
        processes too.

    Returns:
      list of :class:`BuildResult`, one per target, in build order (spec
      order, then kind and version), then one per deployment variant.

    Raises:
      UsageError: the version or kind is not defined by a spec, ``jobs``
        < 1, or ``deploy`` names an unknown format or one that no target's
        version lists.
      UnpinnedSourceError: a spec's checkpoint has no published checksum
        and ``allow_unpinned`` is False (a UsageError; nothing is written).
      FetchError, ChecksumError, ArchiveError: the tarball could not be had.
      CheckpointError: the checkpoint does not fit the net.
      BuildError: writing a module failed (nothing partial is left).
    """
    from hubexport import fetch
    from hubexport.deploy import deploy_targets

    if not isinstance(jobs, int) or jobs < 1:
        raise UsageError("--jobs must be a whole number >= 1, got %r" % (jobs,))
    unique = {spec.name: spec for spec in specs}  # a model named twice is built once
    plan = [(spec, spec.targets(version=version, kind=kind)) for spec in unique.values()]
    variants = deploy_targets([t for _, targets in plan for t in targets], deploy)
    for spec, _ in plan:
        fetch.require_pinned(spec, allow_unpinned)
        if spec.labels is not None:
            check_labels(spec)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    results = {}
    with filelock.FileLock(str(output / ".hubexport.lock")):
        for stale in output.glob(_SHARED_PREFIX + "*"):  # of a build killed earlier
            shutil.rmtree(stale, ignore_errors=True)
        todo_by_spec = []
        for spec, targets in plan:
            for t in targets:  # debris of killed builds, also of targets now up to date
                module_dir = target_paths(output, t)[0]
                _clean_leftovers(module_dir.parent, module_dir.name)
            fetched = None
            if not spec.checkpoint.pinned or spec.checkpoint.local:
                # its stamp needs the digest of the bytes used
                fetched = fetch.fetch_source(spec, cache_dir=cache_dir, mirror=mirror,
                                             progress=progress, allow_unpinned=True)
                if spec.checkpoint.local:
                    log.info("%s: local checkpoint %s, %s", spec.name, fetched.checkpoint,
                             fetched.checksum)
                elif on_unpinned is None:
                    log.warning("%s", fetch.unpinned_warning(spec, fetched))
                else:
                    on_unpinned(spec, fetched)
            source = source_record(spec, fetched)
            todo = [t for t in targets if force or not is_up_to_date(output, t, source)]
            for t in targets:
                if t not in todo:
                    module_dir, card, _ = target_paths(output, t)
                    results[t.module_handle] = BuildResult(t.module_handle, module_dir, card,
                                                           "up-to-date", 0.0)
            if todo:
                todo_by_spec.append((spec, todo, fetched))
        if todo_by_spec:
            for r in _run_tasks(todo_by_spec, output, cache_dir, mirror, progress, jobs):
                results[r.module_handle] = r
        deployed = _deploy(variants, output, force, jobs)
    return [results[t.module_handle] for _, targets in plan for t in targets] + deployed


def _deploy(variants, output, force, jobs):
    """Writes the deployment variants that are not up to date; returns a BuildResult each.

    Runs after the modules are built (under the build's output lock); each
    variant's parent module and its stamp are in place. The variants of one
    module in one format are one task (one process reads the module once).
    """
    from hubexport import deploy

    results, tasks = {}, {}
    for v in variants:
        module_dir, _, parent_stamp_file = target_paths(output, v.parent)
        parent_stamp = json.loads(parent_stamp_file.read_text())["stamp"]
        path, card, _ = deploy.variant_paths(output, v)
        if not force and deploy.is_up_to_date(output, v, parent_stamp):
            results[v.variant_handle] = BuildResult(v.variant_handle, path, card,
                                                    "up-to-date", 0.0, v.format)
        else:
            key = (v.parent.module_handle, v.format)
            tasks.setdefault(key, (_deploy_task, ([], str(module_dir), str(output),
                                                  parent_stamp)))[1][0].append(v)
    for r in (_run_in_workers(list(tasks.values()), jobs) if tasks else []):
        results[r.module_handle] = r
    return [results[v.variant_handle] for v in variants]


_SHARED_PREFIX = ".hubexport-values-"


def _run_tasks(todo_by_spec, output, cache_dir, mirror, progress, jobs):
    """Fetches each checkpoint once (here), then writes the targets in worker processes.

    Args:
      todo_by_spec: list of (spec, targets to write, the
        :class:`hubexport.fetch.FetchedSource` of an unpinned spec, fetched
        already, or None).

    Returns:
      list of :class:`BuildResult` of the targets written, in completion order.
    """
    from hubexport import fetch

    tasks = []
    for spec, todo, fetched in todo_by_spec:
        if fetched is None:
            ckpt_path = str(fetch.fetch_checkpoint(spec, cache_dir=cache_dir, mirror=mirror,
                                                   progress=progress))
        else:
            ckpt_path = str(fetched.checkpoint)
        source = source_record(spec, fetched)
        hub = [t for t in todo if t.version.format == "hub"]
        if hub:
            tasks.append((spec, hub, ckpt_path, source))
        tasks.extend((spec, [t], ckpt_path, source) for t in todo
                     if t.version.format != "hub")
    # A checkpoint needed by several tasks is read once, into a values file
    # in this build's shared directory (module docstring).
    shared_dir = None
    if len(set(t[2] for t in tasks)) < len(tasks):
        shared_dir = output / ("%s%d" % (_SHARED_PREFIX, os.getpid()))
        shutil.rmtree(shared_dir, ignore_errors=True)
        try:
            shared_dir.mkdir()
        except OSError as e:
            raise _disk_error("create", shared_dir, e.strerror or e, output) from None
    shared = None if shared_dir is None else str(shared_dir)
    try:
        return _run_in_workers([(_build_task, (spec, targets, ckpt_path, str(output), shared,
                                               source))
                                for spec, targets, ckpt_path, source in tasks], jobs)
    finally:
        if shared_dir is not None:
            shutil.rmtree(shared_dir, ignore_errors=True)


def _run_in_workers(calls, jobs):
    """Runs ``calls`` (function, args) in up to ``jobs`` worker processes, each in a fresh one.

    Each function returns a list of :class:`BuildResult`; returns them all,
    in completion order. See _run_tasks and _deploy.
    """
    results = []
    # max_tasks_per_child=1: every task starts in a fresh process (see the
    # module docstring on TF2 function names).
    with concurrent.futures.ProcessPoolExecutor(
            max_workers=min(jobs, len(calls)), mp_context=multiprocessing.get_context("spawn"),
            max_tasks_per_child=1, initializer=_init_worker,
            initargs=(logging.getLogger("hubexport").getEffectiveLevel(), os.getpid())) as pool:
        # Ctrl-C reaches the whole process group, workers too; one starting up
        # would die of it with a traceback. So workers (and the pool's threads,
        # which start replacement workers) begin with SIGINT blocked, then
        # ignore it (_init_worker): the parent alone handles Ctrl-C and stops
        # them (_stop_workers).
        import signal

        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            futures = [pool.submit(function, *args) for function, args in calls]
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        try:
            for future in concurrent.futures.as_completed(futures):
                results.extend(future.result())
        except concurrent.futures.process.BrokenProcessPool as e:
            pool.shutdown(wait=True, cancel_futures=True)
            raise BuildError("a build worker process died (%s); check free memory, or "
                             "rerun with fewer --jobs" % (e,)) from None
        except BaseException:
            _stop_workers(pool)
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results


def _stop_workers(pool):
    """Asks every worker to stop now (SIGTERM: it unwinds and removes its temp dirs)."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.terminate()


def _init_worker(level, parent_pid):
    """Runs first in each worker process: signals and logging like the parent's.

    SIGINT (Ctrl-C, sent to the whole process group) is ignored: the parent
    handles it and stops the workers with SIGTERM, which raises
    KeyboardInterrupt here so that a module being written is removed. On
    Linux a worker also gets SIGTERM when the parent dies (``kill -9``):
    the parent held the output lock, so an orphan must not go on writing.
    """
    import signal
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _terminated)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before that
        os._exit(1)
    logging.basicConfig(level=level, format="hubexport: %(message)s")
    logging.getLogger("hubexport").setLevel(level)


# True while this worker process runs a task (_build_task).
_task_running = False


def _terminated(signum, frame):
    """SIGTERM handler of a worker process (see _init_worker).

    Inside a task it raises KeyboardInterrupt, so that the module being
    written is removed and the pool returns the interruption as the task's
    result. Between tasks (starting up, waiting for work) there is nothing to
    clean up, and an exception there would be printed by multiprocessing as a
    traceback: the worker exits at once instead, with 128 + signum.
    """
    if _task_running:
        raise KeyboardInterrupt
    os._exit(128 + signum)


def _build_task(spec, targets, ckpt_path, output, shared_dir=None, source=None):
    """In a worker process: reads and checks one checkpoint, then writes its targets.

    Args:
      spec: the :class:`hubexport.specs.ModelSpec`.
      targets: list of its :class:`hubexport.specs.Target` to write.
      ckpt_path: path (str) of the fetched, verified checkpoint (TF V1 file or V2 prefix).
      output: the output directory (str).
      shared_dir: None to read the checkpoint here, or the build's directory
        (str) of values files shared with the other tasks of the checkpoint
        (:func:`hubexport.checkpoint.read_once`).
      source: the stamps' source record (:func:`source_record`), or None
        for the spec's own (a pinned source).

    Returns:
      list of :class:`BuildResult`, one per target.
    """
    global _task_running
    _task_running = True
    try:
        return _run_task(spec, targets, ckpt_path, output, shared_dir, source)
    finally:
        _task_running = False


def _deploy_task(variants, module_dir, output, parent_stamp):
    """In a worker process: writes deployment variants of one module (:func:`hubexport.deploy.write_variant`).

    Returns:
      list of :class:`BuildResult`, one per variant.
    """
    global _task_running
    from hubexport.deploy import write_variant
    from hubexport.tfimport import import_tensorflow

    _task_running = True
    try:
        import_tensorflow()
        results = []
        for variant in variants:
            started = time.monotonic()
            path, card, _ = write_variant(variant, module_dir, output, parent_stamp)
            log.info("built %s", variant.variant_handle)
            results.append(BuildResult(variant.variant_handle, path, card, "built",
                                       time.monotonic() - started, variant.format))
        return results
    finally:
        _task_running = False


def _run_task(spec, targets, ckpt_path, output, shared_dir, source=None):
    from hubexport.checkpoint import read_once
    from hubexport.nets import get_net, variable_requests
    from hubexport.tfimport import import_tensorflow

    import_tensorflow()
    output = Path(output)
    requests = variable_requests(spec.architecture, spec.num_classes)
    logits = sorted({r.name for r in requests}
                    - {r.name for r in variable_requests(spec.architecture, None)})
    try:
        values = read_once(ckpt_path, requests, shared_dir,
                           moving_averages=spec.checkpoint.use_moving_averages,
                           logits=logits, spec_file=spec.source)
    except OSError as e:  # writing the values file
        raise _disk_error("write the values of %s to" % ckpt_path, shared_dir,
                          e.strerror or e, output) from None
    min_size = get_net(spec.architecture).min_image_size
    results = []
    for target in targets:
        started = time.monotonic()
        module_dir, card, stamp = _write_target(spec, target, values, output, min_size, source)
        results.append(BuildResult(target.module_handle, module_dir, card, "built",
                                   time.monotonic() - started))
        log.info("built %s", target.module_handle)
    return results


def _write_target(spec, target, values, output, min_size, source=None):
    from hubexport.cards import render_card

    if source is None:
        source = source_record(spec)

    module_dir, card, stamp = target_paths(output, target)
    parent, version = module_dir.parent, module_dir.name
    parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(parent, version)
    tmp = parent / (".%s.tmp-%d" % (version, os.getpid()))
    num_classes = spec.num_classes if target.kind == "classification" else None
    try:
        write_module(spec.architecture, target.version, values, tmp,
                     num_classes=num_classes, image_size=spec.image_size,
                     input_mapping=spec.input_mapping, labels=spec.labels)
        card_text = render_card(target, min_size)
        if stamp.exists():
            stamp.unlink()
        if module_dir.exists():
            old = parent / (".%s.old-%d" % (version, os.getpid()))
            os.replace(module_dir, old)
            os.replace(tmp, module_dir)
            shutil.rmtree(old)
        else:
            os.replace(tmp, module_dir)
    except OSError as e:
        raise _disk_error("write", module_dir, e.strerror or e, parent) from None
    except Exception as e:  # TensorFlow's I/O errors are not OSErrors
        reason = _tf_write_error(e)
        if reason is None:
            raise
        raise _disk_error("write", module_dir, reason, parent) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _write_atomic(card, card_text)
    _write_atomic(stamp, json.dumps({"stamp": _stamp(target, source), "hubexport": __version__,
                                     "module": build_record(target, source)}, indent=1))
    return module_dir, card, stamp


def build_record(target, source=None):
    """What a module was built from, as its stamp records it for ``hubexport publish``.

    Args:
      target: a :class:`hubexport.specs.Target`.
      source: :func:`source_record`'s dict of the tarball used; None means
        the spec's own (only possible for a pinned source).

    Returns:
      dict (JSON-ready): ``module_handle``, ``handle`` (without version),
      ``version`` (int), ``spec`` (name), ``architecture``, ``kind``,
      ``format`` ("hub" or "saved_model_2"), ``input_size``, ``image_size``
      (pixels), ``signatures`` (list), ``tensorflow`` (version string of the
      TensorFlow that wrote the module) and ``source``: the checkpoint
      tarball's ``url``, ``filename``, ``size`` (bytes, or None if the spec
      pins no size), ``checksum`` ("ALGO:HEX" as pinned by the spec, or
      "sha256:HEX" of the bytes used when the spec has no published
      checksum), ``member`` and ``pinned`` (bool).
    """
    import sys

    spec = target.spec
    if source is None:
        source = source_record(spec)
    tf = sys.modules.get("tensorflow")
    return {
        "module_handle": target.module_handle, "handle": target.handle,
        "version": target.version.version, "spec": spec.name,
        "architecture": spec.architecture, "kind": target.kind,
        "format": target.version.format, "input_size": target.version.input_size,
        "image_size": spec.image_size, "signatures": list(target.version.signatures),
        "tensorflow": getattr(tf, "__version__", None),
        "source": dict(source),
    }


def write_module(architecture, version_spec, values, out_dir, *, num_classes, image_size,
                 input_mapping, labels=None):
    """Writes one module directory with the writer of its format.

    Args:
      architecture: a name of :data:`hubexport.nets.ARCHITECTURES`.
      version_spec: a :class:`hubexport.specs.VersionSpec` (format, input
        size, signatures).
      values: dict variable name -> numpy float32 array.
      out_dir: directory to create.
      num_classes: the checkpoint's class count, or None for a
        feature_vector module.
      image_size: default image size in pixels.
      input_mapping: a :class:`hubexport.nets.InputMapping` (the spec's).
      labels: a class label file (Path) the module carries as
        ``assets/labels.txt``, or None.

    Raises:
      BuildError: the label file cannot be read.
    """
    labels_text = _read_labels(labels) if labels is not None else None
    if version_spec.format == "hub":
        from hubexport.formats.hub_tf1 import write_hub_module

        write_hub_module(architecture, values, str(out_dir), num_classes=num_classes,
                         image_size=image_size, input_size=version_spec.input_size,
                         signatures=list(version_spec.signatures),
                         input_mapping=input_mapping, labels=labels_text)
    else:
        from hubexport.formats.saved_model_2 import write_saved_model_2

        write_saved_model_2(architecture, values, str(out_dir), num_classes=num_classes,
                            image_size=image_size, input_size=version_spec.input_size,
                            serving_default="serving_default" in version_spec.signatures,
                            input_mapping=input_mapping, labels=labels_text)


def check_labels(spec):
    """Checks that a spec's label file has one line per class.

    Args:
      spec: a :class:`hubexport.specs.ModelSpec` with ``labels``.

    Returns:
      list of str: the labels, line i for logit index i.

    Raises:
      SpecError: the count differs from ``num_classes`` (exit code 2).
      BuildError: the file cannot be read.
    """
    from hubexport.errors import SpecError

    labels = _read_labels(spec.labels).splitlines()
    if len(labels) != spec.num_classes:
        raise SpecError("%s: %d labels (lines), but %s says num_classes: %d; write one label "
                        "per class, line i for logit index i"
                        % (spec.labels, len(labels), spec.source, spec.num_classes))
    return labels


def _read_labels(path):
    """The text of a class label file (str, UTF-8); BuildError if it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BuildError("cannot read the labels file %s (%s); check the spec's labels field"
                         % (path, getattr(e, "strerror", None) or e)) from None
