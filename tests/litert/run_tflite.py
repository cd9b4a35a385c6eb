"""Runs a .tflite file in LiteRT's interpreter (ai-edge-litert), in its own venv.

Started by tests/test_deploy_tflite.py with .venv-litert's python; it never
imports TensorFlow or hubexport, as a phone's app would not.

Usage:
    python run_tflite.py MODEL.tflite IMAGES.npy OUT.npy REPORT.json

IMAGES.npy is float32 [N, S, S, 3]; each image is one invocation (the
model takes a batch of 1). OUT.npy gets the outputs stacked ([N, ...]);
REPORT.json the interpreter's view: input and output names, shapes, dtypes,
the signature list and the LiteRT version.
"""

import json
import sys

import numpy as np
from ai_edge_litert import interpreter as litert


def main(model, images, out, report):
    interp = litert.Interpreter(model_path=model)
    interp.allocate_tensors()
    (inp,) = interp.get_input_details()
    (outp,) = interp.get_output_details()
    batch = np.load(images)
    results = []
    for image in batch:
        interp.set_tensor(inp["index"], image[None].astype(np.float32))
        interp.invoke()
        results.append(interp.get_tensor(outp["index"])[0].copy())
    np.save(out, np.stack(results))
    with open(report, "w") as f:
        json.dump({"input": {"name": inp["name"], "shape": inp["shape"].tolist(),
                             "dtype": np.dtype(inp["dtype"]).name},
                   "output": {"name": outp["name"], "shape": outp["shape"].tolist(),
                              "dtype": np.dtype(outp["dtype"]).name},
                   "signatures": interp.get_signature_list(),
                   "litert": getattr(litert, "__version__", None)}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
