"""Shared machinery of the reliability suite (issue 7).

* :class:`Case` -- what one test records for docs/RELIABILITY.md: the case,
  the expected behaviour, what was observed, and the counters (trials,
  failures contained, bytes written outside the allowed directories,
  partial modules left behind). ``conftest.py`` collects them.
* :class:`Sandbox` -- a per-test directory tree: the allowed directories
  (``cache/``, ``out/``, ``registry/``) plus everything else (``cwd/``,
  ``home/``, ``sentinel/`` with victim files that hostile archives aim at).
  ``snapshot()`` / ``bytes_outside()`` measure every byte written outside
  the allowed directories.
* :func:`run_cli` -- runs the real command line (``python -m hubexport.cli``)
  in a subprocess inside a sandbox, optionally with tuned fetch constants
  (``cli_tuned.py``), a file-size limit, or a kill/interrupt schedule.
* Builders of hostile archives, specs pinned to them, and checks of module
  directories (complete and loadable, or absent).
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import hashlib
import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TUNED_CLI = HERE / "cli_tuned.py"

ARCH = "inception_v2"


def _manifest_header():
    from hubexport.standin import load_manifest

    return load_manifest(ARCH)["header"]["checkpoint"]


FILENAME = _manifest_header()["tarball"]  # inception_v2_2016_08_28.tar.gz
MEMBER = _manifest_header()["member"]  # inception_v2.ckpt
SPEC_TEXT = (REPO / "specs" / f"{ARCH}.yaml").read_text(encoding="utf-8")
HANDLE_DIR = Path("google", "imagenet", ARCH, "classification")

# Fast network behaviour for CLI runs through cli_tuned.py (seconds).
FAST_FETCH = {"BACKOFF": 0.05, "CONNECT_TIMEOUT": 2.0, "READ_TIMEOUT": 1.5, "RETRIES": 3,
              "CHUNK_BYTES": 64 * 1024}

# Lines on stderr that are not hubexport's messages: TensorFlow's native
# logging and hubexport's own logging (warnings such as "retrying").
_NOISE = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl|hubexport: )")


# --------------------------------------------------------------------------
# What a test records
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    """One row of docs/RELIABILITY.md, filled in by a test.

    Attributes:
      test: pytest node id.
      group: section of the table ("Archives", "Network", ...).
      title: the case, e.g. "member with '..'".
      expected: the expected behaviour (one sentence).
      observed: what happened (filled from measurements).
      trials: faults injected (each counts as one case tried).
      contained: trials whose failure was contained (clear error or clean
        recovery, nothing partial, nothing outside).
      bytes_outside: bytes written outside the allowed directories.
      partial_modules: partial module directories (or partial files at a
        final path) left behind.
      metrics: extra measured numbers (seconds, bytes, requests, ...).
    """

    test: str
    group: str = ""
    title: str = ""
    expected: str = ""
    observed: str = ""
    trials: int = 0
    contained: int = 0
    bytes_outside: int = 0
    partial_modules: int = 0
    metrics: dict = dataclasses.field(default_factory=dict)

    def describe(self, group: str, title: str, expected: str) -> "Case":
        self.group, self.title, self.expected = group, title, expected
        return self

    def trial(self, contained: bool, *, bytes_outside: int = 0, partial_modules: int = 0,
              observed: str | None = None, **metrics: Any) -> None:
        """Records one injected fault and its measured consequences."""
        self.trials += 1
        self.contained += bool(contained)
        self.bytes_outside += int(bytes_outside)
        self.partial_modules += int(partial_modules)
        if observed is not None:
            self.observed = observed
        self.metrics.update(metrics)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def shorten(text: str, sandbox: "Sandbox | None" = None, limit: int = 200) -> str:
    """``text`` with the sandbox path replaced by ``$SANDBOX``, cut to ``limit`` characters."""
    if sandbox is not None:
        text = text.replace(str(sandbox.root), "$SANDBOX")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------
# Sandbox: allowed directories and a sentinel tree around them
# --------------------------------------------------------------------------


class Sandbox:
    """A test's directory tree; only ``allowed`` subdirectories may change.

    Layout under ``root``: ``cache/``, ``out/``, ``registry/`` (allowed),
    ``cwd/`` (the CLI's working directory), ``home/`` (its ``$HOME``),
    ``sentinel/`` (victim files: ``victim/secret.txt``, ``victim/dir/``),
    ``inputs/`` (what the test serves: specs, mirror files; written by the
    test before the snapshot). ``home/.keras/keras.json`` exists, as on any
    machine that has imported TensorFlow (Keras 3 writes it on import if
    missing).
    """

    ALLOWED = ("cache", "out", "registry")

    def __init__(self, root: Path):
        self.root = Path(root)
        for name in ("cache", "out", "registry", "cwd", "home", "sentinel/victim/dir", "inputs"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        (self.sentinel / "victim" / "secret.txt").write_text("do not overwrite\n")
        (self.sentinel / "victim" / "dir" / "keep.bin").write_bytes(b"\0" * 4096)
        # Keras 3, which `import tensorflow` loads, creates ~/.keras/keras.json
        # when it is missing (Keras's own behaviour, not hubexport's). Every
        # machine that has imported TensorFlow has one; so does this $HOME,
        # and any other write under it still counts.
        (self.home / ".keras").mkdir()
        (self.home / ".keras" / "keras.json").write_text(json.dumps(
            {"floatx": "float32", "epsilon": 1e-07, "backend": "tensorflow",
             "image_data_format": "channels_last"}, indent=4))

    cache = property(lambda self: self.root / "cache")
    out = property(lambda self: self.root / "out")
    registry = property(lambda self: self.root / "registry")
    cwd = property(lambda self: self.root / "cwd")
    home = property(lambda self: self.root / "home")
    sentinel = property(lambda self: self.root / "sentinel")
    inputs = property(lambda self: self.root / "inputs")

    def snapshot(self) -> dict[str, tuple]:
        """State of every entry outside the allowed directories (no symlink is followed)."""
        state: dict[str, tuple] = {}
        allowed = {self.root / a for a in self.ALLOWED}
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            here = Path(dirpath)
            dirnames[:] = [d for d in dirnames if here / d not in allowed]
            for name in dirnames + filenames:
                path = here / name
                rel = str(path.relative_to(self.root))
                st = os.lstat(path)
                if stat.S_ISREG(st.st_mode):
                    state[rel] = ("file", st.st_size, st.st_mtime_ns, _sha256_file(path))
                elif stat.S_ISLNK(st.st_mode):
                    state[rel] = ("symlink", len(os.readlink(path)), os.readlink(path))
                elif stat.S_ISDIR(st.st_mode):
                    state[rel] = ("dir", 0)
                else:
                    state[rel] = ("special", 1, stat.S_IFMT(st.st_mode))
        return state

    @staticmethod
    def bytes_outside(before: dict, after: dict) -> tuple[int, list[str]]:
        """Bytes written (and entries changed) outside the allowed directories.

        Returns:
          (bytes, changed paths): new or changed entries count their size
          (a symlink its target's length, a device/FIFO 1 byte, a new
          directory 0 bytes but still listed); removed entries count their
          old size.
        """
        total, changed = 0, []
        for rel in sorted(set(before) | set(after)):
            old, new = before.get(rel), after.get(rel)
            if old == new:
                continue
            changed.append(rel)
            total += (new or old)[1]
        return total, changed


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------
# Running the real command line
# --------------------------------------------------------------------------


@dataclasses.dataclass
class CliResult:
    """A finished CLI run."""

    args: list
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    cpu_seconds: float = 0.0

    @property
    def message_lines(self) -> list[str]:
        """stderr lines that are hubexport's own messages (not TF or log noise)."""
        return [l for l in self.stderr.splitlines() if l.strip() and not _NOISE.match(l)]

    @property
    def error(self) -> str:
        lines = [l for l in self.message_lines if l.startswith("error: ")]
        return lines[0] if lines else ""

    def check_one_line_error(self, code: int, *patterns: str) -> str:
        """Asserts: exit ``code``, no traceback, exactly one message line, ``error: ...``
        matching every regex of ``patterns``; returns the line."""
        assert "Traceback" not in self.stderr, self.stderr[-4000:]
        assert self.returncode == code, (self.returncode, self.stderr[-4000:])
        lines = self.message_lines
        assert len(lines) == 1 and lines[0].startswith("error: "), self.stderr[-4000:]
        for p in patterns:
            assert re.search(p, lines[0]), (p, lines[0])
        return lines[0]

    def check_ok(self) -> None:
        assert "Traceback" not in self.stderr, self.stderr[-4000:]
        assert self.returncode == 0, (self.returncode, self.stderr[-4000:])
        assert not self.error, self.stderr[-4000:]


def cli_env(sandbox: Sandbox | None = None, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    for var in ("HUBEXPORT_MIRROR", "HUBEXPORT_CACHE", "XDG_CACHE_HOME", "HTTP_PROXY",
                "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(var, None)
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
               PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1", TF_CPP_MIN_LOG_LEVEL="2")
    if sandbox is not None:
        env["HOME"] = str(sandbox.home)
    env.update(extra or {})
    return env


def cli_command(args: Iterable[str], tuning: dict | None = None) -> list[str]:
    """``python -m hubexport.cli ARGS`` (or cli_tuned.py with fetch constants)."""
    if tuning:
        return [sys.executable, str(TUNED_CLI), json.dumps(tuning), *map(str, args)]
    return [sys.executable, "-m", "hubexport.cli", *map(str, args)]


def run_cli(args: Iterable[str], sandbox: Sandbox | None = None, *, tuning: dict | None = None,
            timeout: float = 600, preexec_fn: Callable | None = None,
            env: dict | None = None) -> CliResult:
    """Runs the real CLI to completion in the sandbox's cwd with its $HOME."""
    cmd = cli_command(args, tuning)
    before = os.times()
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          cwd=str(sandbox.cwd) if sandbox else str(REPO),
                          env=cli_env(sandbox, env), preexec_fn=preexec_fn)
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system
                                                           - before.children_system)
    return CliResult(cmd, proc.returncode, proc.stdout, proc.stderr,
                     time.monotonic() - start, cpu)


def start_cli(args: Iterable[str], sandbox: Sandbox, *, tuning: dict | None = None,
              preexec_fn: Callable | None = None, env: dict | None = None) -> subprocess.Popen:
    """Starts the CLI in its own session (process group), for kill/interrupt tests.

    SIGINT is reset to its default disposition in the child, as a terminal's
    Ctrl-C finds it: a suite started in the background of a non-interactive
    shell (`make test &`) inherits SIGINT ignored, and a CLI started with
    SIGINT ignored rightly ignores Ctrl-C.
    """
    def preexec():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if preexec_fn is not None:
            preexec_fn()

    return subprocess.Popen(cli_command(args, tuning), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=str(sandbox.cwd),
                            env=cli_env(sandbox, env), preexec_fn=preexec,
                            start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> CliResult:
    start = time.monotonic()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        raise AssertionError("the CLI did not exit within %.0f s; stderr:\n%s"
                             % (timeout, err[-3000:]))
    return CliResult(list(proc.args), proc.returncode, out, err, time.monotonic() - start)


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Sends ``sig`` to the CLI's whole process group (it and its workers)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``, from /proc."""
    members = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields: state, ppid, pgrp, ...
            members.append(int(stat_file.parent.name))
    return members


def wait_group_gone(pgid: int, timeout: float = 30) -> None:
    """Waits until no live process of group ``pgid`` is left (workers included)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not group_members(pgid):
            return
        time.sleep(0.02)
    raise AssertionError("processes %s of group %d still running after %.0f s"
                         % (group_members(pgid), pgid, timeout))


def file_size_limit(limit_bytes: int) -> Callable[[], None]:
    """A preexec_fn simulating a full disk: RLIMIT_FSIZE, SIGXFSZ ignored (writes fail EFBIG)."""
    def apply():
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return apply


# --------------------------------------------------------------------------
# Specs pinned to test tarballs
# --------------------------------------------------------------------------


def write_spec_dir(dest: Path, data: bytes | None = None, *, size: int | str | None = "auto",
                   checksum: str | None = None) -> Path:
    """Writes ``dest/inception_v2.yaml``: the shipped spec pinned to ``data``.

    Args:
      dest: directory to write (created).
      data: the tarball's bytes (pins size and sha256 unless given).
      size: "auto" (len(data)), an int, or None (``size: null``, unpublished).
      checksum: "ALGO:HEX" to pin instead of the sha256 of ``data``.

    Returns:
      ``dest``.
    """
    from hubexport.standin import pin_spec_text

    dest.mkdir(parents=True, exist_ok=True)
    if size == "auto":
        size = len(data)
    checksum = checksum or "sha256:" + sha256_bytes(data)
    text = pin_spec_text(SPEC_TEXT, "null" if size is None else size, checksum)
    (dest / f"{ARCH}.yaml").write_text(text, encoding="utf-8")
    return dest


# --------------------------------------------------------------------------
# Tarballs, honest and hostile
# --------------------------------------------------------------------------


def tar_bytes(entries: list, compression: str = "gz") -> bytes:
    """A tar archive in memory.

    Args:
      entries: (name, bytes) pairs for regular files, or TarInfo objects
        (regular-file data in ``info.data`` if any).
      compression: "gz", "bz2", "xz" or "" (plain tar).
    """
    buf = io.BytesIO()
    mode = "w:" + compression if compression else "w"
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.GNU_FORMAT) as tf:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                data = getattr(entry, "data", None)
                tf.addfile(entry, io.BytesIO(data) if data is not None else None)
            else:
                name, data = entry
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tar_info(name: str, kind: str, *, linkname: str = "", data: bytes | None = None):
    info = tarfile.TarInfo(name)
    info.type = {"sym": tarfile.SYMTYPE, "link": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE,
                 "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE, "dir": tarfile.DIRTYPE,
                 "file": tarfile.REGTYPE}[kind]
    info.linkname = linkname
    info.mode = 0o755 if kind == "dir" else 0o644
    if kind in ("chr", "blk"):
        info.devmajor, info.devminor = 1, 3
    if data is not None:
        info.size, info.data = len(data), data
    return info


def bomb_bz2(member: str, inflated: int = 4 << 30) -> bytes:
    """A bzip2 tar.gz-named bomb: a few KiB that inflate to ``inflated`` bytes of zeros.

    One bzip2 stream of 64 MiB of zeros (about 100 bytes) repeated: bzip2
    readers (and tarfile's) read concatenated streams as one.
    """
    info = tarfile.TarInfo(member)
    info.size, info.mode = inflated, 0o644
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    chunk = 64 << 20
    assert inflated % chunk == 0
    zeros = bz2.compress(bytes(chunk), 9)
    tail = bz2.compress(bytes(1024), 9)  # end-of-archive blocks
    return bz2.compress(header, 9) + zeros * (inflated // chunk) + tail


def bomb_gzip(member: str, inflated: int = 1 << 30) -> bytes:
    """A gzip bomb: about inflated / 1000 bytes inflating to ``inflated`` zeros (multi-member gzip)."""
    info = tarfile.TarInfo(member)
    info.size, info.mode = inflated, 0o644
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    chunk = 16 << 20
    assert inflated % chunk == 0
    zeros = gzip.compress(bytes(chunk), 9, mtime=0)
    return (gzip.compress(header, 9, mtime=0) + zeros * (inflated // chunk)
            + gzip.compress(bytes(1024), 9, mtime=0))


# --------------------------------------------------------------------------
# Output and cache inspection
# --------------------------------------------------------------------------

# Names of temporary files and directories hubexport uses (build.py, fetch.py).
_LEFTOVER = re.compile(r"^(\.\d+\.(tmp|old)-.*|\..+\.tmp-\d+|\.extract-.*|.*\.part|\.standin-.*)$")


def leftovers(*roots: Path) -> list[str]:
    """Temporary files/directories of interrupted work under ``roots``."""
    found = []
    for root in roots:
        if not root.exists():
            continue
        for path in root.rglob("*"):
            if _LEFTOVER.match(path.name):
                found.append(str(path))
    return sorted(found)


@dataclasses.dataclass
class ModuleReference:
    """What a complete module of the target looks like (from a known-good build)."""

    files: dict  # relative path -> size (bytes) for every file of the module
    variables: dict  # name -> shape (list) from variables.index


def module_files(module_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(module_dir)): p.stat().st_size
            for p in sorted(module_dir.rglob("*")) if p.is_file()}


def read_variables_index(module_dir: Path) -> dict:
    """Variables in the module's variables.index: name -> shape (cheap; no data read)."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(module_dir / "variables" / "variables"))
    return {k: list(v) for k, v in reader.get_variable_to_shape_map().items()}


def reference_of(module_dir: Path) -> ModuleReference:
    return ModuleReference(module_files(module_dir), read_variables_index(module_dir))


def module_problem(module_dir: Path, ref: ModuleReference) -> str | None:
    """Returns why ``module_dir`` is not a complete, loadable TF1 Hub module, or None.

    Cheap load check: the same files with the same sizes as a known-good
    build (TF writes these deterministic sizes), ``saved_model.pb`` parses
    with the default and ``train`` graph variants serving ``default``,
    ``tfhub_module.pb`` parses as a FORMAT_V3 ModuleDef, and the variables
    index is readable and lists the same variables and shapes.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    from hubexport.formats import hub_protos

    try:
        files = module_files(module_dir)
        if files != ref.files:
            missing = sorted(set(ref.files) - set(files))
            return "files differ from a complete module (missing %s, sizes %s)" % (
                missing, {k: (files.get(k), v) for k, v in ref.files.items()
                          if files.get(k) != v})
        sm = saved_model_pb2.SavedModel()
        sm.ParseFromString((module_dir / "saved_model.pb").read_bytes())
        tags = sorted(tuple(sorted(mg.meta_info_def.tags)) for mg in sm.meta_graphs)
        if tags != [(), ("train",)]:
            return "saved_model.pb has tag sets %s" % tags
        if any("default" not in mg.signature_def for mg in sm.meta_graphs):
            return "saved_model.pb lacks the default signature"
        module_def = hub_protos.ModuleDef.FromString((module_dir / "tfhub_module.pb").read_bytes())
        if module_def.format != hub_protos.FORMAT_V3:
            return "tfhub_module.pb has format %r" % module_def.format
        if read_variables_index(module_dir) != ref.variables:
            return "variables.index lists other variables"
    except Exception as e:  # any failure to read is a broken module
        return "unreadable: %s: %s" % (type(e).__name__, str(e).splitlines()[0][:200])
    return None
