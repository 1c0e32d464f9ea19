"""The bundle's model card: what the model is, where it came from, how well it does.

``model_card.json`` is for tools, ``MODEL_CARD.md`` for people; both come from the
same dict so they cannot disagree.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from slimline.core.handle import ModelHandle
from slimline.core.render import fmt_bytes
from slimline.core.results import RunRecord, StepResult

CARD_FORMAT = "slimline.model_card"


def _spec(s: Any) -> dict[str, Any]:
    dyn = {str(d): i for i, d in enumerate(s.shape) if isinstance(d, str)}
    return {"name": s.name, "dtype": s.dtype, "shape": list(s.shape),
            "dynamic_dims": {name: f"axis {i}" for name, i in dyn.items()}}


def _observed(dataset: Any) -> dict[str, Any]:
    if dataset is None:
        return {}
    out = {}
    for k, v in dataset.inputs.items():
        arr = np.asarray(v)
        entry: dict[str, Any] = {"dtype": str(arr.dtype), "row_shape": list(arr.shape[1:])}
        if arr.size and np.issubdtype(arr.dtype, np.number):
            a = arr.astype(np.float64)
            entry.update(min=float(a.min()), max=float(a.max()), mean=float(a.mean()), std=float(a.std()))
        out[k] = entry
    return out


def _step_summary(r: StepResult) -> dict[str, Any]:
    lat = {b: {k: getattr(rep, k) for k in ("p50_ms", "p90_ms", "spread", "runs", "warmup", "threads", "provider",
                                            "input_kind")}
           for b, rep in (r.latency or {}).items()}
    return {"step_id": r.step_id, "title": r.title, "plugin": r.plugin,
            "size": {"bytes_on_disk": r.size.bytes_on_disk, "zip_bytes": r.size.zip_bytes,
                     "param_count": r.size.param_count},
            "latency": lat, "accuracy": r.accuracy.model_dump() if r.accuracy else None,
            "fidelity": r.fidelity.model_dump() if r.fidelity else None,
            "flags": list(r.flags), "warnings": list(r.warnings), "notes": list(r.notes)}


def preprocessing_notes(source_meta: dict[str, Any], observed: dict[str, Any],
                        inputs: list[dict[str, Any]]) -> list[str]:
    notes = []
    for key in ("preprocessing", "task", "dataset"):
        if source_meta.get(key):
            notes.append(f"{key}: {source_meta[key]}")
    for spec in inputs:
        obs = observed.get(spec["name"])
        line = f"input '{spec['name']}': {spec['dtype']} array shaped {spec['shape']}, rows on the first axis"
        if obs and "min" in obs:
            line += (f"; values seen in the evaluation data: {obs['min']:.4g} … {obs['max']:.4g} "
                     f"(mean {obs['mean']:.4g}, std {obs['std']:.4g}) — feed data prepared the same way")
        notes.append(line)
    return notes


def build_card(*, name: str, exported: ModelHandle, export_record: dict[str, Any], variant: Any,
               dataset: Any, pipeline_file: str | None, pipeline_sha: str | None,
               versions: dict[str, str], requirements: list[str], use: list[str] | None = None) -> dict[str, Any]:
    from slimline.core import __version__

    run: RunRecord | None = getattr(variant, "run", None)
    step: StepResult | None = getattr(variant, "step", None)
    original = (run.model if run is not None and run.model is not None else variant.handle).model_dump(mode="json")
    source_meta = dict(original.get("meta") or {})
    inputs = [_spec(s) for s in exported.inputs]
    observed = _observed(dataset)
    model_files = export_record["files"]
    main = export_record["path"]
    return {
        "format": CARD_FORMAT, "version": 1, "name": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "slimline_version": __version__,
        "model": {"file": main, "files": model_files, "format": "onnx",
                  "precision": (export_record.get("parity") or {}).get("precision"),
                  "opset": exported.opset, "producer": exported.producer, "sha256": export_record["sha256"],
                  "bytes": export_record["bytes"], "param_count": exported.param_count},
        "inputs": inputs, "outputs": [_spec(s) for s in exported.outputs],
        "dim_defaults": dict(exported.dim_defaults),
        "preprocessing": {"notes": preprocessing_notes(source_meta, observed, inputs),
                          "observed_inputs": observed,
                          "dataset": getattr(dataset, "source", "") or getattr(dataset, "name", "")},
        "source": {"model": original.get("path"), "format": original.get("format"),
                   "sha256": _original_sha(variant, original),
                   "run_id": run.run_id if run else None, "step_id": step.step_id if step else None,
                   "step_title": step.title if step else None,
                   "variant_file": variant.handle.path, "variant_sha256": export_record["source"].get("sha256")},
        "pipeline": ({"file": pipeline_file, "sha256": pipeline_sha, "name": run.pipeline.get("name"),
                      "steps": [{"id": s.get("id"), "plugin": s.get("plugin"), "enabled": s.get("enabled"),
                                 "params": s.get("params")} for s in run.pipeline.get("steps", [])]}
                     if run is not None and run.pipeline else None),
        "steps": [_step_summary(r) for r in run.results] if run is not None else [],
        "measured_on": run.environment if run is not None else None,
        "parity": export_record.get("parity"),
        "libraries": versions,
        "requirements": requirements,
        "usage": (use or ["python predict.py data.npz   (see predict.py --help)"])[0],
        "use": use or ["python predict.py data.npz"],
    }


def _original_sha(variant: Any, original: dict[str, Any]) -> str | None:
    """SHA-256 over the original model's files (the pipeline's input), if they are still there."""
    from slimline.core.export.records import model_sha256

    try:
        return model_sha256(original.get("files"), original.get("path", "")) or None
    except OSError:  # a gone/unreadable file: the card says unknown rather than guessing
        return None


def card_markdown(card: dict[str, Any]) -> str:
    """MODEL_CARD.md: the same facts as model_card.json, for people."""
    m, src = card["model"], card["source"]
    L = [f"# {card['name']}", "",
         f"Exported by Slimline {card['slimline_version']} on {card['created']}.", "",
         "## Model", "",
         f"- file: `{m['file']}` ({fmt_bytes(m['bytes'])}, ONNX opset {m['opset']}, precision {m['precision']})",
         f"- SHA-256: `{m['sha256']}`",
         f"- parameters: {m['param_count']:,}", ""]
    L += ["## Inputs and outputs", "", "| | name | dtype | shape | dynamic dims |", "|---|---|---|---|---|"]
    for kind in ("inputs", "outputs"):
        for s in card[kind]:
            dyn = ", ".join(f"{k} ({v})" for k, v in s["dynamic_dims"].items()) or "-"
            L.append(f"| {kind[:-1]} | `{s['name']}` | {s['dtype']} | {s['shape']} | {dyn} |")
    L += ["", "### Preprocessing", ""] + [f"- {n}" for n in card["preprocessing"]["notes"]] + [""]
    L += ["## Source", "",
          f"- original model: `{src.get('model')}` ({src.get('format')})",
          f"- original SHA-256: `{src.get('sha256') or 'unknown (file no longer present)'}`"]
    if src.get("run_id"):
        L.append(f"- run `{src['run_id']}`, step `{src.get('step_id')}` ({src.get('step_title')})")
    L.append(f"- variant SHA-256: `{src.get('variant_sha256')}`")
    pipe = card.get("pipeline")
    if pipe:
        L += ["", f"## Pipeline: {pipe.get('name')}", "",
              f"File `{pipe['file']}` (SHA-256 `{pipe['sha256']}`) in this bundle.", ""]
        L += [f"{i}. `{s['id']}` {s['plugin']}{'' if s.get('enabled', True) else ' (disabled)'} — "
              f"`{s.get('params')}`" for i, s in enumerate(pipe["steps"], 1)]
    if card["steps"]:
        L += ["", "## Measurements per step", ""]
        batches = list((card["steps"][0].get("latency") or {}).keys())
        head = ["step", "size", "params"] + [f"p50 / p90 ms (batch {b})" for b in batches] + \
            ["top-1", "cosine vs original", "flags"]
        L += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for s in card["steps"]:
            lat = [f"{s['latency'][b]['p50_ms']:.3f} / {s['latency'][b]['p90_ms']:.3f}"
                   if s["latency"].get(b) else "-" for b in batches]
            acc = s.get("accuracy") or {}
            fid = s.get("fidelity") or {}
            L.append("| " + " | ".join([f"{s['step_id']}: {s['title']}", fmt_bytes(s["size"]["bytes_on_disk"]),
                                        f"{s['size']['param_count'] or 0:,}", *lat,
                                        f"{acc['top1']:.4f} (n={acc['n']})" if acc else "-",
                                        f"{fid['mean_cosine']:.4f}" if fid.get("mean_cosine") is not None
                                        else "-", ", ".join(s.get("flags") or []) or "ok"]) + " |")
        warn = [(s["step_id"], w) for s in card["steps"] for w in s.get("warnings") or []]
        if warn:
            L += ["", "Warnings:", ""] + [f"- [{sid}] {w}" for sid, w in warn]
        env = card.get("measured_on") or {}
        if env:
            L += ["", f"Measured on: {env.get('cpu')}, {env.get('cores_usable') or env.get('cores_logical')} "
                      f"usable cores, {env.get('os')}, Python {env.get('python')}; "
                      + ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items())]
    p = card.get("parity") or {}
    if p:
        L += ["", "## Parity of this file", ""]
        if p.get("kind") == "weights":
            L.append(f"{p['n']} tensors read back bit-exact.")
        else:
            kind = f"rows of {p.get('dataset')}" if p.get("input_kind") == "dataset" else \
                "RANDOM rows (smoke check only)"
            top1 = f", top-1 agreement {p['top1_agreement']:.4f}" if p.get("top1_agreement") is not None else ""
            L.append(f"Loaded back with {p['runtime']} and compared with the variant ({p['source_runtime']}) on "
                     f"{p['n']} {kind}: max abs error {p['max_abs_error']:.3g} (allowed {p['max_abs_allowed']:.3g}),"
                     f" mean cosine {p['mean_cosine']:.6f}{top1}.")
            g = p.get("greedy")
            if g:
                L.append("")
                from slimline.core.lm.parity import GreedyCheck

                L.append(GreedyCheck.model_validate(g).summary().replace("greedy ", "Greedy tokens: ", 1) + ".")
    L += ["", "## Libraries", "", ", ".join(f"{k} {v}" for k, v in card["libraries"].items()), "",
          "## Use it", "", "```", "python -m venv .venv", ".venv/bin/pip install -r requirements.txt",
          *[f".venv/bin/{u}" for u in card.get("use") or ["python predict.py data.npz"]], "```", "",
          "`SHA256SUMS` lists every file of this bundle (`sha256sum -c SHA256SUMS`).", ""]
    return "\n".join(L)
