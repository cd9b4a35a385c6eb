"""Helpers shared by the registry tests (test_publish, test_serve, test_verify).

Build outputs made of hard-linked copies of the session's family, the
registry models of the family published once by the real CLI, and a
registry server in a thread.
"""

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from family_support import MODULES

HANDLE = "google/imagenet/inception_v2/classification"
SMALL = [("inception_v2", "classification", 3), ("inception_v2", "classification", 5)]
# What the registry tests publish, serve and load over HTTP: every version and
# kind of Inception V2 (each module format the registry holds), and versions
# 3 and 5 (TF1 Hub format and TF2 SavedModel) of Inception-ResNet-V2 and of
# one Inception and one ResNet of the zoo. Publishing all 144 modules would
# gzip 15 GB to show nothing more; `hubexport verify` checks every built
# module, tests/test_verify.py.
REGISTRY_MODELS = ("inception_v2", "inception_resnet_v2", "inception_v3", "resnet_v2_50")
REGISTRY_MODULES = [m for m in MODULES if m[0] == "inception_v2"
                    or (m[0] in REGISTRY_MODELS and m[2] in (3, 5))]

_PUBLISHED = {}


def run_cli(*args, timeout=1800):
    """Runs ``hubexport ARGS`` in a fresh interpreter; returns the CompletedProcess."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "hubexport.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout)


def published_family(family):
    """(registry Path, publish --json output) of the REGISTRY_MODULES, published by the CLI.

    Their modules, cards and stamps are hard-linked into a build output of
    their own (``<family root>/registry-output``), which is published once
    per test run into ``<family root>/registry`` (kept from run to run, so a
    later run's publish is a no-op): pytest-xdist's workers take turns under
    a file lock, the first publishes, the others read its result
    (``registry-result.json``, stamped with the run's id).
    """
    import filelock

    if "family" not in _PUBLISHED:
        root = family.output.parent
        output, registry = root / "registry-output", root / "registry"
        result_file = root / "registry-result.json"
        run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or "pid-%d" % os.getpid()
        with filelock.FileLock(str(root / ".registry.lock")):
            saved = json.loads(result_file.read_text()) if result_file.is_file() else {}
            if saved.get("run") != run:
                result_file.unlink(missing_ok=True)
                shutil.rmtree(output, ignore_errors=True)
                if not (registry / "index.json").is_file():  # a publish killed midway
                    shutil.rmtree(registry, ignore_errors=True)
                small_output(family, output, REGISTRY_MODULES)
                proc = run_cli("publish", output, "--registry", registry, "--json")
                assert proc.returncode == 0, proc.stderr[-3000:]
                saved = {"run": run, "result": json.loads(proc.stdout)}
                tmp = result_file.with_name(".registry-result.json.tmp")
                tmp.write_text(json.dumps(saved))
                tmp.replace(result_file)
        _PUBLISHED["family"] = (registry, saved["result"])
    return _PUBLISHED["family"]


def link_copy(src, dst):
    """Copies a file or tree as hard links (cheap; replace files to change them)."""
    if Path(src).is_dir():
        shutil.copytree(src, dst, copy_function=os.link)
    else:
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        os.link(src, dst)


def small_output(family, root, modules=SMALL):
    """A build output with some of the family's modules, their cards and stamps."""
    for arch, kind, version in modules:
        module = family.module(arch, kind, version)
        rel = module.relative_to(family.output)
        link_copy(module, root / rel)
        link_copy(family.card(arch, kind, version), root / rel.parent / ("%d.md" % version))
        link_copy(module.parent / (".%d.stamp" % version), root / rel.parent / (".%d.stamp" % version))
    return root


def replace_file(path, data):
    """Writes ``data`` as a new file at ``path`` (breaking any hard link)."""
    path = Path(path)
    path.unlink()
    path.write_bytes(data)


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@contextlib.contextmanager
def cli_server(registry):
    """``hubexport serve REGISTRY --port 0`` in its own process; yields its base URL.

    Stopped with SIGTERM (its clean shutdown) when the block ends.
    """
    import signal

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    server = subprocess.Popen([sys.executable, "-m", "hubexport.cli", "serve", str(registry),
                               "--port", "0", "--json"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = server.stdout.readline()
        assert line, server.stderr.read()[-3000:]
        yield json.loads(line)["url"]
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)


def published_variants(output, prefix, registry):
    """Publishes the variants under ``output/google/PREFIX`` (only those) into ``registry``.

    The variants are hard-linked into an output of their own, so that their
    parent modules are not packed again; returns the ``publish --json`` result.
    """
    only = Path(str(registry) + "-output")
    link_copy(Path(output) / "google" / prefix, only / "google" / prefix)
    proc = run_cli("publish", only, "--registry", registry, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


class Served:
    """A RegistryServer running in a thread; ``get(path)`` speaks raw HTTP/1.1."""

    def __init__(self, registry):
        from hubexport.serve import make_server

        self.server = make_server(registry, port=0)
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = self.server.url
        self.port = self.server.server_address[1]

    def request(self, method, path):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            conn.endheaders()
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def get(self, path):
        return self.request("GET", path)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False
