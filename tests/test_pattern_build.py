"""`hubexport build 'mobilenet_v1_*_128'`: a shell-style pattern builds the models it matches (issue 12).

The real CLI builds version 3 of the feature_vector module of every model the
pattern matches (the four MobileNet V1 depth multipliers at 128 pixels),
from stand-ins (hubexport.standin, from the checked-in manifests) served by
a loopback HTTP server, and `hubexport verify` passes on what it wrote.
"""

import json
import os
import subprocess
import sys

import pytest

from httpserver import HTTPTestServer

pytestmark = pytest.mark.slow

MODELS = ["mobilenet_v1_025_128", "mobilenet_v1_050_128", "mobilenet_v1_075_128",
          "mobilenet_v1_100_128"]


def cli(*args, timeout=900):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    return subprocess.run([sys.executable, "-m", "hubexport.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout)


def test_a_pattern_builds_every_model_it_matches(tmp_path):
    from hubexport.standin import make_standin

    mirror = tmp_path / "mirror"
    for model in MODELS:
        make_standin(model, mirror, seed=0)
    out = tmp_path / "out"
    server = HTTPTestServer(directory=str(mirror)).start()
    try:
        result = cli("build", "mobilenet_v1_*_128", "--version", "3", "--kind", "feature_vector",
                     "--json", "--jobs", "2", "--specs", mirror / "specs",
                     "--mirror", server.base_url, "--cache-dir", tmp_path / "cache",
                     "--output", out)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    handles = sorted(r["module_handle"] for r in json.loads(result.stdout))
    assert handles == ["google/imagenet/%s/feature_vector/3" % m for m in MODELS]
    for model in MODELS:
        handle = out / "google" / "imagenet" / model / "feature_vector"
        assert (handle / "3" / "saved_model.pb").is_file() and (handle / "3.md").is_file()
    # Nothing else: only version 3 of the feature_vector modules.
    assert sorted(p.name for p in (out / "google" / "imagenet").iterdir()) == MODELS
    verified = cli("verify", out, "--specs", mirror / "specs")
    assert verified.returncode == 0, verified.stdout[-2000:] + verified.stderr[-2000:]
