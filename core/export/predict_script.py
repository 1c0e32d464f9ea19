"""The ``predict.py`` shipped in a deployment bundle (kept as text: it runs without Slimline)."""
from __future__ import annotations

SCRIPT = '''#!/usr/bin/env python3
"""Run __MODEL_FILE__ on an .npz file and print one prediction per row.

Needs only the packages in requirements.txt (numpy, onnxruntime):
    python -m venv .venv && .venv/bin/pip install -r requirements.txt
    .venv/bin/python predict.py data.npz [--batch 64] [--json]

The .npz holds one array per model input, named after the input (a model with one
input also accepts a single array of any name), and optionally "labels". Rows are
the first axis. Output: "row<TAB>prediction" lines (top-1 class for outputs with a
class axis, else the values); with labels, the top-1 accuracy goes to stderr.
"""
import argparse
import json
import os
import sys

import numpy as np
import onnxruntime as ort

MODEL_FILE = "__MODEL_FILE__"
LABEL_KEYS = ("labels", "label", "y", "targets")
NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
            "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
            "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


def load_feeds(path, session):
    """Arrays for every model input, cast to the input's type; plus labels if present."""
    data = np.load(path)
    arrays = {k: data[k] for k in data.files}
    labels = next((arrays.pop(k) for k in LABEL_KEYS if k in arrays), None)
    inputs = session.get_inputs()
    feeds = {}
    for i in inputs:
        if i.name in arrays:
            arr = arrays[i.name]
        elif len(inputs) == 1 and len(arrays) == 1:
            arr = next(iter(arrays.values()))
        else:
            sys.exit(f"error: {path} has no array named '{i.name}' (found {sorted(arrays)})")
        feeds[i.name] = np.ascontiguousarray(arr, dtype=NP_TYPES.get(i.type, np.float32))
    return feeds, labels


def predictions(output):
    """Top-1 class per row when the last axis holds classes, else the raw values."""
    if output.ndim >= 2 and output.shape[-1] > 1:
        top = output.argmax(axis=-1)
        return [int(t) if np.ndim(t) == 0 else t.tolist() for t in top]
    return [v.tolist() if hasattr(v, "tolist") else v for v in output.reshape(len(output), -1).squeeze(-1)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help=".npz with one array per model input (+ optional labels)")
    parser.add_argument("--model", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), MODEL_FILE))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = all cores)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    args = parser.parse_args(argv)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(args.model, sess_options=options, providers=["CPUExecutionProvider"])
    feeds, labels = load_feeds(args.data, session)
    n = len(next(iter(feeds.values())))
    preds = []
    for start in range(0, n, args.batch):
        batch = {k: v[start:start + args.batch] for k, v in feeds.items()}
        preds.extend(predictions(session.run(None, batch)[0]))
    accuracy = None
    if labels is not None and len(labels) == len(preds) and all(isinstance(p, int) for p in preds):
        accuracy = float(np.mean(np.asarray(preds) == np.asarray(labels)))
    if args.json:
        print(json.dumps({"model": os.path.basename(args.model), "n": n, "predictions": preds,
                          "accuracy": accuracy}))
    else:
        for row, p in enumerate(preds):
            print(f"{row}\\t{p}")
    if accuracy is not None:
        print(f"top-1 accuracy {accuracy:.4f} on {n} rows", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


def render(model_file: str) -> str:
    """predict.py for a bundle whose model file is ``model_file`` (next to the script)."""
    return SCRIPT.replace("__MODEL_FILE__", model_file)
