"""The main job end to end, on a machine that cannot reach TF-Slim's hosts.

1. Writes a stand-in ``inception_v2_2016_08_28.tar.gz`` (the real file name,
   member, V1 checkpoint format, variable names, shapes and dtypes; seeded
   random values) and a spec directory pinning its size and checksum.
2. Serves it from a real HTTP server on 127.0.0.1.
3. Runs ``hubexport build inception_v2 --version 3`` against that mirror
   (download, verification, extraction, strict restore, module, card).
4. Loads the module with ``hub.load`` (tag sets [] and ["train"]) and
   ``hub.KerasLayer``, and checks that its logits equal what the net computes
   directly from the checkpoint (max abs diff <= 1e-5) at 224x224, and that
   299x299 and 160x160 inputs work; ``hubexport verify`` checks the module
   and its card against the spec first.

Run it with ``make demo``; DEMO_DIR (default build/demo) holds everything.
"""

import functools
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

HANDLE = "google/imagenet/inception_v2/classification"


def hubexport(*args):
    """Runs the hubexport CLI in a child process, as a user would."""
    cmd = [sys.executable, "-m", "hubexport.cli", *args]
    print("$ hubexport " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def main():
    demo = Path(os.environ.get("DEMO_DIR", "build/demo")).resolve()
    mirror, out, cache = demo / "mirror", demo / "modules", demo / "cache"
    mirror.mkdir(parents=True, exist_ok=True)
    tarball = mirror / "inception_v2_2016_08_28.tar.gz"
    if not tarball.exists() or not (mirror / "specs" / "inception_v2.yaml").exists():
        hubexport("make-standin", "inception_v2", str(mirror))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:%d" % server.server_port
    try:
        hubexport("build", "inception_v2", "--version", "3", "--force",
                  "--specs", str(mirror / "specs"), "--mirror", url,
                  "--cache-dir", str(cache), "--output", str(out))
    finally:
        server.shutdown()
    hubexport("verify", str(out / HANDLE / "3"), "--specs", str(mirror / "specs"))
    check(out / HANDLE / "3", out / HANDLE / "3.md", cache)


def check(module_dir, card, cache):
    """Loads the module with the TF2 clients and compares it with the checkpoint."""
    import numpy as np

    from hubexport.tfimport import import_tensorflow

    tf = import_tensorflow()
    import tensorflow_hub as hub

    from hubexport.checkpoint import Checkpoint
    from hubexport.nets import checkpoint_function, variable_requests

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (4, 224, 224, 3)).astype(np.float32)
    ckpt_path = next(cache.glob("checkpoints/inception_v2-*/inception_v2.ckpt"))
    ckpt = Checkpoint(ckpt_path)
    values = ckpt.values(r.name for r in variable_requests("inception_v2"))
    # The net run directly on the restored checkpoint, as a graph function.
    direct, _ = checkpoint_function("inception_v2", values)(tf.constant(images))

    module = hub.load(str(module_dir))
    logits = module.signatures["image_classification"](images=tf.constant(images))["default"]
    diff = float(np.abs(logits.numpy() - direct.numpy()).max())
    print("hub.load(tags=[]): logits %s, max abs diff vs checkpoint %.2e" % (logits.shape, diff))
    assert diff <= 1e-5, diff
    train = hub.load(str(module_dir), tags=["train"])
    out = train.signatures["image_classification_with_bn_hparams"](
        images=tf.constant(images), batch_norm_momentum=tf.constant(0.997))["default"]
    print("hub.load(tags=['train']): logits %s" % (out.shape,))
    layer = hub.KerasLayer(str(module_dir), signature="image_classification",
                           output_key="default")
    keras_diff = float(np.abs(layer(tf.constant(images)).numpy() - direct.numpy()).max())
    print("hub.KerasLayer: max abs diff vs checkpoint %.2e" % keras_diff)
    assert keras_diff <= 1e-5, keras_diff
    for size in (299, 160):
        batch = tf.constant(rng.uniform(0, 1, (1, size, size, 3)).astype(np.float32))
        shape = module.signatures["image_classification"](images=batch)["default"].shape
        print("%dx%d input: logits %s" % (size, size, shape))
    print("\nmodule: %s\ncard:   %s" % (module_dir, card))


if __name__ == "__main__":
    main()
