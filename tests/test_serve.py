"""`hubexport serve`: tensorflow_hub loads every published module over HTTP (issue 6).

The full-family test starts the real CLI (`hubexport -v serve REGISTRY --port 0
--json`) and, in a second interpreter with TFHUB_CACHE_DIR in a tmp directory
and TF_USE_LEGACY_KERAS=1, loads each published module (the registry models
of tests/registry_support.py) once with `hub.load`
from its URL (v4 and v5 with `hub.KerasLayer`, whose resolved object is that
hub.load), checks the signatures and outputs, and that the unpacked files are
the published ones, byte for byte. The other
tests run the server in a thread on a small registry (two inception_v2
modules) and speak raw HTTP to it.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import urllib.parse

import pytest

from family_support import SPECS
from registry_support import (HANDLE, REGISTRY_MODELS, REGISTRY_MODULES, Served, link_copy,
                              published_family, replace_file,
                              small_output)

from hubexport.errors import PublishError, UsageError

SECRET = "hubexport-serve-secret-6f1d"


@pytest.fixture(scope="module")
def small_registry(family, tmp_path_factory):
    """A registry with inception_v2 classification v3 and v5 (module-scoped; not modified)."""
    from hubexport.publish import publish

    root = tmp_path_factory.mktemp("serve")
    publish(small_output(family, root / "out"), root / "registry")
    (root / "secret.txt").write_text(SECRET)  # beside the registry: must never be served
    (root / "registry" / "unlisted.txt").write_text(SECRET)  # inside, but not in the index
    return root / "registry"


@pytest.fixture
def served(small_registry):
    with Served(small_registry) as server:
        yield server


def _entry(registry, module_handle):
    index = json.loads((registry / "index.json").read_text())
    return {e["module_handle"]: e for e in index["modules"]}[module_handle]


def test_compressed_handle_archive_card_and_index(served, small_registry):
    entry = _entry(small_registry, HANDLE + "/3")
    status, headers, body = served.get("/%s/3?tf-hub-format=compressed" % HANDLE)
    assert status == 200 and headers["Content-Type"] == "application/gzip"
    assert int(headers["Content-Length"]) == entry["size"] == len(body)
    assert hashlib.sha256(body).hexdigest() == entry["sha256"]
    status, _, same = served.get("/%s/3.tar.gz" % HANDLE)
    assert status == 200 and same == body
    status, headers, head_body = served.request("HEAD", "/%s/3?tf-hub-format=compressed" % HANDLE)
    assert status == 200 and head_body == b"" and int(headers["Content-Length"]) == entry["size"]
    card = (small_registry / entry["doc"]).read_bytes()
    for path in ("/%s/3" % HANDLE, "/%s/3/" % HANDLE, "/" + entry["doc"]):
        status, headers, body = served.get(path)
        assert (status, body) == (200, card), path
        assert headers["Content-Type"].startswith("text/markdown")
    status, _, body = served.get("/index.json")
    assert status == 200 and body == (small_registry / "index.json").read_bytes()
    status, headers, body = served.get("/")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert (HANDLE + "/5  (saved_model_2").encode() in body


def test_unknown_handles_get_a_plain_404(served):
    for path in ("/%s/7" % HANDLE, "/%s/7?tf-hub-format=compressed" % HANDLE,
                 "/google/imagenet/mobilenet/classification/3", "/%s" % HANDLE, "/favicon.ico"):
        status, headers, body = served.get(path)
        assert status == 404, path
        assert headers["Content-Type"] == "text/plain; charset=utf-8"
        text = body.decode()
        assert text.startswith("404 Not Found: no module or file ") and "<" not in text
        assert urllib.parse.unquote(path.split("?")[0]) in text


def test_uncompressed_format_is_refused_with_a_reason(served):
    status, _, body = served.get("/%s/3?tf-hub-format=uncompressed" % HANDLE)
    assert status == 400
    assert b"serves only tf-hub-format=compressed" in body


@pytest.mark.parametrize("path", [
    "/../secret.txt", "/../../../../../../etc/passwd", "/%2e%2e/secret.txt",
    "/%2E%2E%2Fsecret.txt", "/google/../../secret.txt",
    "/%s/3/../../../../../../secret.txt" % HANDLE, "/%s/3/saved_model.pb" % HANDLE,
    "/%s/3/variables/variables.index" % HANDLE, "/unlisted.txt", "/.hubexport-publish.lock",
    "/..%5csecret.txt", "/%00/secret.txt", "//etc/passwd", "/./index.json",
    "/assets/docs/../../secret.txt", "/assets/docs/google/models/imagenet/inception_v2/",
])
def test_nothing_outside_the_index_is_served(served, path):
    status, _, body = served.get(path)
    assert status in (400, 404), (path, status)
    assert SECRET.encode() not in body and b"root:" not in body


def test_a_damaged_registry_is_refused_at_start(small_registry, tmp_path):
    from hubexport.serve import make_server

    registry = tmp_path / "registry"
    link_copy(small_registry, registry)
    archive = registry / HANDLE / "5.tar.gz"
    replace_file(archive, archive.read_bytes()[:-1] + b"\0")
    with pytest.raises(PublishError, match=r"is damaged .*5\.tar\.gz: sha256 "):
        make_server(registry, port=0)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-m", "hubexport.cli", "serve", str(registry),
                           "--port", "0"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1 and "is damaged" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(UsageError, match="has no index.json"):
        make_server(tmp_path, port=0)


def test_an_archive_changed_while_serving_gets_500_not_its_bytes(small_registry, tmp_path):
    registry = tmp_path / "registry"
    link_copy(small_registry, registry)
    with Served(registry) as server:
        assert server.get("/%s/5?tf-hub-format=compressed" % HANDLE)[0] == 200
        archive = registry / HANDLE / "5.tar.gz"
        replace_file(archive, b"\0" * archive.stat().st_size)
        status, _, body = server.get("/%s/5?tf-hub-format=compressed" % HANDLE)
        assert status == 500 and b"no longer matches index.json" in body


def test_an_index_edited_while_serving_is_not_trusted(small_registry, tmp_path):
    registry = tmp_path / "registry"
    link_copy(small_registry, registry)
    with Served(registry) as server:
        good = (registry / "index.json").read_bytes()
        index = json.loads(good)
        index["modules"] = index["modules"][:1]  # drop v5, keep the old digest
        replace_file(registry / "index.json", json.dumps(index).encode())
        status, _, body = server.get("/index.json")
        assert (status, body) == (200, good)  # still the index it checked
        assert server.get("/%s/5?tf-hub-format=compressed" % HANDLE)[0] == 200


def test_symlinks_out_of_the_registry_are_not_followed(small_registry, tmp_path):
    registry = tmp_path / "registry"
    link_copy(small_registry, registry)
    secret = small_registry.parent / "secret.txt"
    with Served(registry) as server:
        doc = registry / _entry(registry, HANDLE + "/3")["doc"]
        doc.unlink()
        doc.symlink_to(secret)
        archive = registry / HANDLE / "5.tar.gz"
        archive.unlink()
        archive.symlink_to(secret)
        for path in ("/%s/3" % HANDLE, "/%s/5?tf-hub-format=compressed" % HANDLE,
                     "/%s/5.tar.gz" % HANDLE):
            status, _, body = server.get(path)
            assert status == 500 and b"leads outside the registry" in body, path
            assert SECRET.encode() not in body


def test_publishing_into_a_served_registry_is_picked_up(family, tmp_path):
    from hubexport.publish import publish

    output = small_output(family, tmp_path / "out", [("inception_v2", "feature_vector", 1)])
    publish(output, tmp_path / "registry")
    with Served(tmp_path / "registry") as server:
        fv, cls = "google/imagenet/inception_v2/feature_vector/1", HANDLE + "/1"
        assert server.get("/%s?tf-hub-format=compressed" % cls)[0] == 404
        publish(small_output(family, tmp_path / "out2", [("inception_v2", "classification", 1)]),
                tmp_path / "registry")
        assert server.get("/%s?tf-hub-format=compressed" % cls)[0] == 200
        assert server.get("/%s?tf-hub-format=compressed" % fv)[0] == 200


# --- every module of the family through tensorflow_hub's own resolver -----------

# Run in two interpreters at a time, each for half the models. Each module is
# loaded once, over HTTP (its unpacked files are then checked to be the
# published ones, byte for byte, so a second load from the registry's
# directory could only compute the same). Versions 4 and 5 are loaded with
# hub.KerasLayer(url), which resolves the handle with hub.load
# (tensorflow_hub/keras_layer.py: load_module -> module_v2.load);
# `resolved_object` is what that hub.load returned, so one download and one
# load serve both clients, whose outputs (and serving_default's) must agree.
_LOAD_ALL = r"""
import json, sys
import numpy as np
import tensorflow as tf
import tensorflow_hub as hub

base = sys.argv[1]
results = {}
for handle, (size, signatures) in json.loads(sys.argv[2]).items():
    version = int(handle.rsplit("/", 1)[1])
    images = tf.constant(np.random.default_rng(version).uniform(
        0, 1, (1, size, size, 3)).astype(np.float32))
    url = base + "/" + handle
    if version in (1, 3):
        remote = hub.load(url)
        want = remote.signatures["default"](images=images)["default"].numpy()
        got = {}
    else:
        layer = hub.KerasLayer(url, trainable=False)
        remote = layer.resolved_object
        want = remote(images).numpy()
        got = {"hub.KerasLayer": layer(images).numpy()}
        if version == 5:
            key = "logits" if "/classification/" in handle else "feature_vector"
            got["serving_default"] = remote.signatures["serving_default"](inputs=images)[key].numpy()
    results[handle] = {
        "shape": list(want.shape),
        "scale": float(np.abs(want).max()),
        "signatures_equal": sorted(remote.signatures) == sorted(signatures),
        "diffs": {k: (float(np.abs(v - want).max()) if v.shape == want.shape else None)
                  for k, v in got.items()},
        "finite": bool(all(np.isfinite(v).all() for v in [want, *got.values()])),
    }
print("RESULTS " + json.dumps(results))
"""


@pytest.mark.slow
def test_hub_load_and_keras_layer_load_every_module_over_http(family, tmp_path):
    registry, _ = published_family(family)
    index = json.loads((registry / "index.json").read_text())
    handles = [e["module_handle"] for e in index["modules"]]
    assert sorted(handles) == sorted("google/imagenet/%s/%s/%d" % m for m in REGISTRY_MODULES)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_USE_LEGACY_KERAS="1",
               TFHUB_CACHE_DIR=str(tmp_path / "tfhub-cache"), NO_PROXY="127.0.0.1",
               no_proxy="127.0.0.1")
    env.pop("TFHUB_MODEL_LOAD_FORMAT", None)
    server = subprocess.Popen([sys.executable, "-m", "hubexport.cli", "-v", "serve", str(registry),
                               "--port", "0", "--json"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
    try:
        info = json.loads(server.stdout.readline())
        assert info["modules"] == len(handles) and info["url"].startswith("http://127.0.0.1:")
        loaders = []
        for half in (REGISTRY_MODELS[0::2], REGISTRY_MODELS[1::2]):
            mine = {e["module_handle"]: (SPECS[e["module_handle"].split("/")[2]].image_size,
                                         e["signatures"])
                    for e in index["modules"] if e["module_handle"].split("/")[2] in half}
            loaders.append(subprocess.Popen(
                [sys.executable, "-c", _LOAD_ALL, info["url"], json.dumps(mine)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
        outputs = [p.communicate(timeout=1800) + (p.returncode,) for p in loaders]
    finally:
        server.send_signal(signal.SIGTERM)
        _, log = server.communicate(timeout=60)
    results = {}
    for stdout, stderr, returncode in outputs:
        assert returncode == 0, stderr[-4000:]
        (line,) = [l for l in stdout.splitlines() if l.startswith("RESULTS ")]
        results.update(json.loads(line[len("RESULTS "):]))
    assert server.returncode == 0, log[-2000:]
    assert sorted(results) == sorted(handles)
    for handle, r in results.items():
        arch, kind, version = handle.split("/")[2:5]
        width = SPECS[arch].num_classes if kind == "classification" else SPECS[arch].feature_size
        assert r["shape"] == [1, width], handle
        assert r["finite"] and r["signatures_equal"], handle
        # (what each client computes, against hub.load's output)
        clients = {"1": [], "3": [], "4": ["hub.KerasLayer"],
                   "5": ["hub.KerasLayer", "serving_default"]}[version]
        assert sorted(r["diffs"]) == sorted(clients), handle
        for client, diff in r["diffs"].items():
            assert diff is not None and diff <= 1e-5 * max(1.0, r["scale"]), (handle, client, r)
    # tensorflow_hub fetched each archive once ...
    fetched = [l for l in log.splitlines() if "tf-hub-format=compressed" in l and '" 200 ' in l]
    assert len(fetched) == len(handles), log[-3000:]
    # ... and unpacked exactly the published module files.
    cache = tmp_path / "tfhub-cache"
    for entry in index["modules"]:
        key = hashlib.sha1(("%s/%s" % (info["url"], entry["module_handle"])).encode()).hexdigest()
        unpacked = cache / key
        files = {p.relative_to(unpacked).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in unpacked.rglob("*") if p.is_file()}
        assert files == entry["files"], entry["module_handle"]
