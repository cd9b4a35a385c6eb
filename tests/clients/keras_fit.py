"""Fits hub.KerasLayer models in tf-keras and reports what changed (run in a fresh interpreter).

Started by the tests with ``TF_USE_LEGACY_KERAS=1`` set here (hub.KerasLayer
needs tf-keras). Usage:

    python keras_fit.py CASES_JSON

CASES_JSON: a JSON list of ``[name, module path, trainable, image size in
pixels, weight decay]``. For each case a ``Sequential([KerasLayer, Dense(5)])``
is fitted for one epoch on 8 random images (batch 4) with
``arguments=dict(batch_norm_momentum=0.997)``. Prints one line
``RESULTS <json>`` mapping name -> counts of weights (trainable, moving
statistics, other) and how many changed, the number of the layer's trainable
weights, whether the head changed, the number and sum of ``model.losses`` and
the sum TF-Slim's ``l2_regularizer(weight_decay)`` gives for the layer's
``weights`` variables (``weight_decay * sum(w**2) / 2``), and the losses.
"""

import json
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_hub as hub  # noqa: E402


def fit(path, trainable, size, weight_decay):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, [8, size, size, 3]).astype(np.float32)
    y = rng.integers(0, 5, [8])
    tf.keras.utils.set_random_seed(0)
    layer = hub.KerasLayer(path, trainable=trainable, arguments=dict(batch_norm_momentum=0.997))
    model = tf.keras.Sequential([layer, tf.keras.layers.Dense(5)])
    model.build([None, size, size, 3])
    before = [w.numpy() for w in layer.weights]
    head_before = [w.numpy() for w in model.layers[1].weights]
    model.compile(optimizer=tf.keras.optimizers.SGD(0.01),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    trainable_ids = {id(w) for w in layer.trainable_weights}
    changed = {"trainable": 0, "moving": 0, "other": 0}
    counts = {"trainable": 0, "moving": 0, "other": 0}
    unchanged_trainable = []
    for w, old in zip(layer.weights, before):
        leaf = w.name.split(":")[0].rsplit("/", 1)[-1]
        kind = ("trainable" if id(w) in trainable_ids else
                "moving" if leaf.startswith("moving_") else "other")
        counts[kind] += 1
        moved = not np.array_equal(w.numpy(), old)
        changed[kind] += int(moved)
        if kind == "trainable" and not moved:
            unchanged_trainable.append(w.name.split(":")[0])
    decay = [w for w in layer.weights if w.name.split("/")[-1].startswith("weights")]
    want_loss = sum(weight_decay * float(np.sum(w.numpy().astype(np.float64) ** 2)) / 2
                    for w in decay)
    return dict(
        counts=counts, changed=changed, unchanged_trainable=unchanged_trainable,
        n_layer_trainable=len(layer.trainable_weights),
        head_changed=any(not np.array_equal(w.numpy(), o)
                         for w, o in zip(model.layers[1].weights, head_before)),
        n_losses=len(model.losses),
        sum_losses=float(tf.add_n(model.losses)) if model.losses else 0.0,
        want_sum_losses=want_loss, n_decay=len(decay), loss=history.history["loss"])


def main(argv):
    results = {}
    for name, path, trainable, size, weight_decay in json.loads(argv[1]):
        results[name] = fit(path, trainable, size, weight_decay)
    print("RESULTS " + json.dumps(results))


if __name__ == "__main__":
    main(sys.argv)
