"""Shared pytest fixtures.

HTTP server fixtures (see tests/httpserver.py for the server's API):
  http_server   a started HTTPTestServer on 127.0.0.1 (plain HTTP)
  https_server  the same over TLS; REQUESTS_CA_BUNDLE points at its cert
Both make sure loopback traffic never goes through a proxy.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from httpserver import HTTPTestServer  # noqa: E402


def pytest_configure(config):
    """Registers the reliability suite's report hooks (in xdist's controller too)."""
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "reliability", "report_hooks.py")
    spec = importlib.util.spec_from_file_location("reliability_report_hooks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config.pluginmanager.register(module, "reliability-report-hooks")


def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def http_server(monkeypatch):
    """A started loopback HTTP server; stopped after the test."""
    _no_proxy(monkeypatch)
    server = HTTPTestServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def https_server(monkeypatch):
    """A started loopback HTTPS server whose certificate requests trusts."""
    _no_proxy(monkeypatch)
    server = HTTPTestServer(tls=True).start()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", server.ca_file)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    try:
        yield server
    finally:
        server.stop()


# --- The built module family (session fixtures) -----------------------------
#
#   standins  stand-in tarballs of every shipped spec + a spec directory
#             pinned to them (hubexport.standin, from the checked-in
#             manifests); cached under build/test-standins/<key>/ across
#             sessions, keyed by the manifests, specs and the generator's source.
#   mirror    a loopback HTTP server serving the stand-in tarballs.
#   family    every module of the family's models (tests/family_support.py:
#             every version and kind of each) built once per run by
#             `hubexport build MODEL...` from that mirror; see the Family class.
#
# HUBEXPORT_TEST_MODELS=a,b (a development aid; CI never sets it) limits the
# stand-ins and the family to those models; tests of other models then fail
# for want of their modules.

import hashlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

from family_support import MODELS  # noqa: E402


def _standin_key():
    h = hashlib.sha256(",".join(MODELS).encode())
    for path in sorted((REPO / "hubexport" / "data").glob("*_manifest.json")) + [
            REPO / "hubexport" / "standin.py"] + sorted((REPO / "specs").glob("*.yaml")):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _build_lock(root):
    """A file lock under ``root``: pytest-xdist's workers build a session fixture once."""
    import filelock

    root.mkdir(parents=True, exist_ok=True)
    return filelock.FileLock(str(root / ".lock"))


@pytest.fixture(scope="session")
def standins():
    """Path of a directory with the stand-in tarball of every model and ``specs/``."""
    root = REPO / "build" / "test-standins"
    done = root / _standin_key()
    with _build_lock(root):
        if not (done / ".complete").exists():
            from hubexport.standin import make_standin

            work = root / (".work-%d" % os.getpid())
            shutil.rmtree(work, ignore_errors=True)
            for name in MODELS:
                make_standin(name, work, seed=0)
            (work / ".complete").write_text("\n".join(MODELS) + "\n")
            shutil.rmtree(done, ignore_errors=True)
            os.replace(work, done)
    return done


@pytest.fixture(scope="session")
def mirror(standins):
    """A loopback HTTP server serving the stand-in tarballs for the session."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        os.environ.pop(var, None)
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    server = HTTPTestServer(directory=str(standins)).start()
    try:
        yield server
    finally:
        server.stop()


class Family:
    """The modules built for the session.

    Attributes:
      output: the build output directory (Path).
      specs_dir: the stand-in spec directory used for the build.
      cache_dir: the download cache used for the build.
      results: the parsed ``hubexport build --json`` output.
    """

    def __init__(self, output, specs_dir, cache_dir, results):
        self.output, self.specs_dir, self.cache_dir, self.results = (
            output, specs_dir, cache_dir, results)

    def module(self, model, kind, version):
        """Path of module ``google/imagenet/<model>/<kind>/<version>``."""
        return self.output / "google" / "imagenet" / model / kind / str(version)

    def card(self, model, kind, version):
        """Path of that module's card."""
        return self.output / "google" / "imagenet" / model / kind / ("%d.md" % version)

    def spec(self, model):
        """The stand-in spec (a :class:`hubexport.specs.ModelSpec`) of ``model``."""
        if not _SPECS:
            from hubexport.specs import load_specs

            _SPECS.update(load_specs(self.specs_dir))
        return _SPECS[model]

    def checkpoint(self, model):
        """Path of the extracted stand-in checkpoint of ``model``."""
        (path,) = self.cache_dir.glob("checkpoints/%s-*/*.ckpt" % model)
        return path

    def values(self, model):
        """The checkpoint's values of every variable the net needs (the last model's cached)."""
        if model not in _VALUES:
            from hubexport.checkpoint import Checkpoint
            from hubexport.nets import variable_requests

            spec = self.spec(model)
            _VALUES.clear()  # one model's values at a time: the zoo's add up to GBs
            _VALUES[model] = Checkpoint(self.checkpoint(model)).values(
                r.name for r in variable_requests(spec.architecture, spec.num_classes))
        return _VALUES[model]

    def checkpoint_function(self, model):
        """The model's net run on its checkpoint (:func:`hubexport.nets.checkpoint_function`).

        The last model's function is cached.

        Maps float32 images [batch, height, width, 3] in [0, 1] to (logits
        [batch, num_classes], features [batch, feature_size]).
        """
        if model not in _FUNCTIONS:
            import gc

            from hubexport.nets import checkpoint_function

            spec = self.spec(model)
            _FUNCTIONS.clear()  # one model's net at a time
            gc.collect()
            _FUNCTIONS[model] = checkpoint_function(spec.architecture, self.values(model),
                                                    spec.num_classes,
                                                    input_mapping=spec.input_mapping)
        return _FUNCTIONS[model]


_VALUES = {}
_SPECS = {}
_FUNCTIONS = {}


def _code_key():
    """Hash of hubexport's code, templates and the stand-ins: what a build depends on."""
    h = hashlib.sha256(_standin_key().encode())
    for path in sorted((REPO / "hubexport").rglob("*")):
        if path.is_file() and path.suffix in (".py", ".j2", ".json") and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def family(standins, mirror):
    """Every module of the family, built by the real CLI from the loopback mirror.

    The output lives in build/test-family/<key>/, keyed by the hash of
    hubexport's code and the stand-ins, so a session after a code change
    builds afresh and one without a change reuses the modules (the CLI
    skips up-to-date modules; it still fetches and verifies over HTTP).
    Directories of other keys untouched for an hour are removed.
    """
    parent = REPO / "build" / "test-family"
    key = _code_key()
    if parent.is_dir():
        for old in parent.iterdir():
            # Keys not touched for an hour belong to no running session.
            if old.name != key and time.time() - old.stat().st_mtime > 3600:
                shutil.rmtree(old, ignore_errors=True)
    root = parent / key
    output, cache = root / "modules", root / "cache"
    # One build per test run: pytest-xdist's workers share it (the first
    # builds, the others wait for the lock and read its results).
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or "pid-%d" % os.getpid()
    results_file = root / "build-results.json"
    with _build_lock(root):
        if results_file.is_file() and json.loads(results_file.read_text())["run"] == run:
            results = json.loads(results_file.read_text())["results"]
        else:
            cmd = [sys.executable, "-m", "hubexport.cli", "build", *MODELS, "--json",
                   "--jobs", "2", "--specs", str(standins / "specs"),
                   "--mirror", mirror.base_url, "--cache-dir", str(cache),
                   "--output", str(output)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3000)
            assert proc.returncode == 0, proc.stderr[-3000:]
            results = json.loads(proc.stdout)
            tmp = results_file.with_name(".build-results.json.tmp")
            tmp.write_text(json.dumps({"run": run, "results": results}))
            tmp.replace(results_file)
    return Family(output, standins / "specs", cache, results)


# --- pytest-xdist: what must run on one worker ------------------------------
#
# `make test` runs the suite on two workers (`-n 2 --dist loadgroup`). Tests
# that share a module- or session-scoped fixture run on one worker, so the
# fixture (a legacy-venv run, a registry, a set of loaded modules) is made
# once per run, not once per worker; test_family's tests of one handle share
# its loaded modules. The session fixtures every worker has anyway (the
# stand-ins, their mirror, the built family: built once under a file lock)
# do not group tests.
_SHARED_BY_EVERY_WORKER = frozenset({"standins", "mirror", "family"})


def _ours(fixturedef):
    """Whether a fixture is this suite's (not pytest's, e.g. tmp_path_factory, or a plugin's).

    Every worker has pytest's session fixtures anyway; grouping by them
    would put every test using ``tmp_path`` in one group, and split the tests
    of a module fixture into two groups, each making the fixture.
    """
    module = getattr(fixturedef.func, "__module__", "") or ""
    return not module.startswith(("_pytest", "pytest", "xdist", "hypothesis"))


def _fixture_keys(item):
    """The module- and session-scoped fixtures of ours that a test uses, one key per instance.

    A module fixture's key is its module and parameter (each parameter is an
    instance of its own); a session fixture's is its name and parameter.
    """
    keys = set()
    for name in item.fixturenames:
        defs = item._fixtureinfo.name2fixturedefs.get(name)
        if not defs or name in _SHARED_BY_EVERY_WORKER or defs[-1].scope == "function" \
                or not _ours(defs[-1]):
            continue
        callspec = getattr(item, "callspec", None)
        param = callspec.params.get(name, "") if callspec else ""
        where = item.nodeid.split("::")[0] if defs[-1].scope == "module" else name
        key = "%s:%s" % (where, name) + ("=%s" % (param,) if param != "" else "")
        # pytest-xdist reads the group after the last "@", and only if no "]" follows it.
        keys.add(key.translate(str.maketrans("[]@", "()_")))
    return keys


def xdist_groups(items):
    """{test node id: group name}: tests that share any fixture instance share a group.

    The groups are the connected components of "uses the same instance of a
    module- or session-scoped fixture" (a union-find over the fixture keys):
    a test using fixtures A and B and another using only A land on one
    worker, so A is made once per run, not once per worker that drew one of
    its tests. Tests with no such fixture get no group (any worker).
    """
    parent = {}

    def find(key):
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    keys = {item.nodeid: sorted(_fixture_keys(item)) for item in items}
    for ks in keys.values():
        for other in ks[1:]:
            parent[find(other)] = find(ks[0])
    return {nodeid: find(ks[0]) for nodeid, ks in keys.items() if ks}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's, which reads the marks into node ids
def pytest_collection_modifyitems(config, items):
    groups = xdist_groups(items)
    for item in items:
        if item.nodeid in groups:
            item.add_marker(pytest.mark.xdist_group(groups[item.nodeid]))

