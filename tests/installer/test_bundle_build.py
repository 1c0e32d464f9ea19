"""Build the PyInstaller one-folder bundle and check it does everything the development install does (slow).

Runs with `make installer-test` (about 10-15 minutes on 2 cores, plus the build). Set
SLIMLINE_PREBUILT_BUNDLE=dist/slimline to test a bundle `make installer` already built.

What "everything" means here, each time against the development install (this interpreter):
- `slimline selfcheck` in the bundle imports every module the app can reach (the build's list);
- the demo pipeline and two pipelines that together use every built-in plugin run headless in
  both, with the same figures (sizes, parameter counts, accuracy, fidelity; latency aside);
- every export format from those runs, the deployment bundle's predict.py run by the bundle's
  executable, `bench` and `report`;
- a guard: a plugin or a subcommand that none of the above exercises fails the test, so new
  ones (weight-only INT4, `sensitivity`) must be added here when they arrive; `sweep` runs in
  test_bundle_sweep_and_torchrun_like_dev (local engine; torchrun from the bundle's executable).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DEMO = ROOT / "resources" / "demo"
PIPELINES = {
    "demo": None,  # `slimline run --demo`: the bundled demo pipeline, model and data
    "int8": HERE / "pipeline_plugins_int8.json",
    "fp16": HERE / "pipeline_plugins_fp16.json",
    "llm": HERE / "pipeline_plugins_llm.json",
}
# Pipelines that run on a language model instead of the digits CNN: a tiny Llama built once (dev side) as the
# genai builder's KV-cache folder. No text file: the bundle leaves out transformers/tokenizers, and the
# weight-only step then checks on the model's own samples. The dims let the evaluator run the KV-cache inputs.
LM_PIPELINES = {"llm"}
# Pipelines on a causal LM folder with text files (LLM pruning, LM distillation, low-rank): they need
# transformers in the bundle (SLIMLINE_BUNDLE_HF=1 bash installers/build_bundle.sh); without it their test
# skips, the guard still counts them.
LM_TEXT_PIPELINES = {"llm_prune": HERE / "pipeline_plugins_llm_prune.json"}
LM_DIMS = ["--dim", "kv_cache_dim=16", "--dim", "past_sequence_length=0", "--dim", "sequence_length=16",
           "--dim", "total_sequence_length=16"]
# Subcommands exercised below (gui: test_bundle_starts_gui_offscreen / test_startup_times).
COVERED_COMMANDS = {"inspect", "run", "bench", "plugins", "export", "report", "gui", "selfcheck", "sweep",
                    "sensitivity", "search"}
SWEEP_PIPELINE = HERE / "pipeline_sweep.json"   # test_bundle_sweep_and_torchrun_like_dev
EXPORTS = [("s4", "torchscript"), ("s4", "pt2"), ("s4", "safetensors"), ("s4", "onnx"), (None, "onnx"),
           (None, "bundle")]
# Language-model formats, exported from a tiny Llama folder (the model builder runs as `slimline -m ...`).
LM_EXPORTS = ["onnx-genai", "onnx-genai-fp16", "onnx-genai-int4", "onnx-logits", "bundle"]
# Figures that differ from run to run by nature (timings) or by place (paths).
# flags/warnings: some are latency verdicts ("slower"); the figures behind the others are compared.
VOLATILE = ("latency", "duration", "seconds", "elapsed", "_ms", "per_s", "load_avg", "cached", "created", "run_id",
            "path", "files", "notes", "environment", "workspace", "out", "folder", "zip", "sha256", "cpu",
            "flags", "warnings")
# The torch.export-based exporter writes each node's Python stack trace (file paths of the install)
# into ONNX metadata, so ONNX byte counts differ by where torch lives; the content is compared instead.
ONNX_SIZE_KEYS = ("bytes_on_disk", "bytes_before", "bytes_after", "size_ratio")


def _headless_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM", "PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = "/usr/bin:/bin"                      # no venv on PATH: the bundle must stand alone
    env["SLIMLINE_WORKSPACE"] = str(tmp / "ws")
    env["HOME"] = str(tmp / "home")
    return env


def _dev_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["SLIMLINE_WORKSPACE"] = str(tmp / "ws")
    env["HOME"] = str(tmp / "home")
    return env


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    pre = os.environ.get("SLIMLINE_PREBUILT_BUNDLE")
    if pre:
        return Path(pre).resolve()
    dist = tmp_path_factory.mktemp("dist")
    t0 = time.time()
    proc = subprocess.run(["bash", "installers/build_bundle.sh"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "DIST": str(dist), "PYTHON": sys.executable}, timeout=3000)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print(f"\nbundle built in {time.time() - t0:.0f} s: {proc.stdout.strip().splitlines()[-2]}")
    return dist / "slimline"


class Side:
    """One installation: the bundle's executable or this interpreter's `slimline`, with its own HOME."""

    def __init__(self, name: str, argv: list[str], tmp: Path, env: dict[str, str]) -> None:
        self.name, self.argv, self.tmp, self.env = name, argv, tmp, env

    def run(self, *args: str, timeout: int = 900, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([*self.argv, *args], capture_output=True, text=True, env=self.env,
                              timeout=timeout, cwd=self.tmp)
        if check:
            assert proc.returncode == 0, f"{self.name}: slimline {' '.join(args)} → rc {proc.returncode}\n" \
                                         f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        return proc


@pytest.fixture(scope="module")
def sides(bundle, tmp_path_factory) -> dict[str, Side]:
    b, d = tmp_path_factory.mktemp("bundle-side"), tmp_path_factory.mktemp("dev-side")
    return {"bundle": Side("bundle", [str(bundle / "slimline")], b, _headless_env(b)),
            "dev": Side("dev", [sys.executable, "-m", "slimline.gui.launcher"], d, _dev_env(d))}


def _run_pipeline(side: Side, name: str, lm_model: Path | None = None) -> Path:
    """Run one pipeline headless in its own workspace; the run folder."""
    ws = side.tmp / f"ws-{name}"
    pipe = PIPELINES[name]
    if pipe is None:
        args = ["run", "--demo"]
    elif name in LM_PIPELINES:
        assert lm_model is not None
        args = ["run", str(pipe), str(lm_model), *LM_DIMS]
    else:
        args = ["run", str(pipe), str(DEMO / "digits_cnn.safetensors"), "--data", str(DEMO / "digits_eval.npz"),
                "--train-data", str(DEMO / "digits_train.npz")]
    side.run(*args, "--workspace", str(ws), "--threads", "1")
    (run_dir,) = (ws / "runs").iterdir()
    return run_dir


@pytest.fixture(scope="module")
def lm_model(tmp_path_factory) -> Path:
    """A tiny trained Llama as the genai builder's fp32 folder (built with this interpreter)."""
    from tests.plugins import lm_onnx

    root = tmp_path_factory.mktemp("lm")
    hf, _ = lm_onnx.tiny_llama(root)
    return lm_onnx.builder_onnx(hf, root / "builder")


@pytest.fixture(scope="module")
def runs(sides, lm_model) -> dict[str, dict[str, Path]]:
    """{pipeline: {side: run folder}}: every pipeline run by both installations."""
    out: dict[str, dict[str, Path]] = {}
    for name in PIPELINES:
        out[name] = {}
        for side in ("bundle", "dev"):
            t0 = time.time()
            out[name][side] = _run_pipeline(sides[side], name, lm_model)
            print(f"\n{name} pipeline, {side}: {time.time() - t0:.0f} s")
    return out


def figures(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a record to {dotted.key: value}, leaving out timings and paths (see VOLATILE)."""
    flat: dict[str, Any] = {}
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list):
        items = ((str(i), v) for i, v in enumerate(obj))
    else:
        return {prefix: obj}
    for key, value in items:
        if any(v in str(key).lower() for v in VOLATILE):
            continue
        flat.update(figures(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Keys whose values differ (floats within 1e-6 relative), or that only one side has."""
    diffs = [f"{k}: only in {'bundle' if k in a else 'dev'}" for k in sorted(set(a) ^ set(b))]
    for k in sorted(set(a) & set(b)):
        x, y = a[k], b[k]
        if isinstance(x, float) or isinstance(y, float):
            if not (isinstance(x, (int, float)) and isinstance(y, (int, float))
                    and math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9)):
                diffs.append(f"{k}: bundle {x!r} != dev {y!r}")
        elif x != y:
            diffs.append(f"{k}: bundle {x!r} != dev {y!r}")
    return diffs


def onnx_content(path: str | Path) -> bytes:
    """An ONNX model without node metadata and doc strings (what it computes, not where it was made)."""
    import onnx

    model = onnx.load(str(path))
    for graph in [model.graph]:
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
    del model.metadata_props[:]
    model.graph.doc_string = ""
    return model.SerializeToString()


def safetensors_content(path: str | Path) -> tuple[dict[str, str], dict[str, bytes]]:
    """(metadata, {tensor name: raw bytes + dtype/shape}) of a safetensors file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        tensors = {k: f"{f.get_tensor(k).dtype}{f.get_tensor(k).shape}".encode() + f.get_tensor(k).tobytes()
                   for k in f.keys()}
        return dict(f.metadata() or {}), tensors


def model_figures(record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(figures of a run record, {step: content of its ONNX model}); ONNX byte counts left to the content."""
    flat = figures({"results": record["results"], "final_model": record["final_model"]})
    contents: dict[str, bytes] = {}
    onnx_steps = set()
    for i, r in enumerate(record["results"]):
        path = (r.get("model") or {}).get("path", "")
        if str(path).endswith(".onnx"):
            onnx_steps.add(str(i))
            contents[r.get("step_id") or str(i)] = onnx_content(path)
    final_onnx = str(record["final_model"].get("path", "")).endswith(".onnx")
    drop = [k for k in flat if any(s in k for s in ONNX_SIZE_KEYS)
            and ((k.split(".")[0] == "results" and k.split(".")[1] in onnx_steps)
                 or (k.startswith("final_model.") and final_onnx))]
    for k in drop:
        del flat[k]
    return flat, contents


def _record(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "run.json").read_text(encoding="utf-8"))


def _prep_notes(record: dict[str, Any]) -> list[list[str]]:
    """Which pre-processing each step used (the label, without paths): a fallback must show."""
    return [[n.split("(")[0].strip() for n in r.get("notes", []) if n.startswith("pre-processing")]
            for r in record["results"]]


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_bundle_selfcheck_imports_every_reachable_module(sides, bundle):
    proc = sides["bundle"].run("selfcheck", "--json", timeout=600, check=False)
    result = json.loads(proc.stdout)
    assert proc.returncode == 0 and not result["failed"], result["failed"]
    listing = json.loads((bundle / "_internal" / "selfcheck_modules.json").read_text(encoding="utf-8"))
    mods = set(listing["modules"])
    assert result["checked"] == len(mods) > 300
    # the modules that static INT8 and FP16 reach by name, and this checkout's own modules
    assert {"onnxruntime.quantization.shape_inference", "onnxruntime.transformers.onnx_utils",
            "onnxruntime.transformers.float16", "onnxruntime.tools.symbolic_shape_infer",
            "slimline.gui.selfcheck"} <= mods
    from slimline.gui.selfcheck import slimline_modules

    assert set(slimline_modules()) <= mods, "the bundle was built from other sources than this checkout"
    # the bare-name modules of onnxruntime.transformers are real files inside the bundle
    assert (bundle / "_internal" / "onnxruntime" / "transformers" / "fusion_utils.py").is_file()


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("name", list(PIPELINES))
def test_bundle_pipeline_figures_equal_dev(runs, name):
    bundle_rec, dev_rec = _record(runs[name]["bundle"]), _record(runs[name]["dev"])
    assert bundle_rec["status"] == dev_rec["status"] == "done", (bundle_rec.get("error"), dev_rec.get("error"))
    steps = [r.get("step_id") for r in bundle_rec["results"]]
    assert len(steps) == len(dev_rec["results"]) >= 3
    assert _prep_notes(bundle_rec) == _prep_notes(dev_rec)
    fb, onnx_b = model_figures(bundle_rec)
    fd, onnx_d = model_figures(dev_rec)
    assert any(k.endswith("param_count") for k in fb)
    if name in LM_PIPELINES:  # no labelled data: the step's own perplexity check is the figure to compare
        assert any(k.endswith("metrics.perplexity_after") for k in fb), sorted(fb)[:40]
    else:
        assert any(k.endswith("accuracy.top1") for k in fb)
    assert onnx_b.keys() == onnx_d.keys() and onnx_b, "no ONNX step to compare"
    assert [s for s in onnx_b if onnx_b[s] != onnx_d[s]] == [], "ONNX models differ (beyond metadata)"
    diffs = differences(fb, fd)
    assert not diffs, f"{name}: {len(diffs)} figures differ:\n" + "\n".join(diffs[:40])


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_bundle_exports_every_format_like_dev(runs, sides):
    eval_npz = str(DEMO / "digits_eval.npz")
    records: dict[str, dict[str, Any]] = {"bundle": {}, "dev": {}}
    for side in ("bundle", "dev"):
        run_dir = runs["int8"][side]
        for step, fmt in EXPORTS:
            out = sides[side].tmp / f"export-{step or 'final'}-{fmt}"
            args = ["export", str(run_dir), "--format", fmt, "--out", str(out), "--json"]
            proc = sides[side].run(*args, *(["--step", step] if step else []), timeout=900)
            records[side][f"{step or 'final'}-{fmt}"] = json.loads(proc.stdout)
    for key, outer in records["bundle"].items():
        dev_outer = records["dev"][key]
        if "model_export" in outer:  # a deployment bundle: its predict.py check, then its model file
            assert outer["predict_check"] and figures(outer["predict_check"]) == figures(dev_outer["predict_check"])
            outer, dev_outer = outer["model_export"], dev_outer["model_export"]
        rec, dev_rec = outer, dev_outer
        fb, fd = figures(rec), figures(dev_rec)
        paths = [Path(r["path"]) if Path(r["path"]).is_absolute() else sides[s].tmp / r["path"]
                 for r, s in ((rec, "bundle"), (dev_rec, "dev"))]
        if rec["format"] == "safetensors":  # the same tensors and metadata (header key order is arbitrary)
            assert safetensors_content(paths[0]) == safetensors_content(paths[1]), f"export {key} differs"
        else:  # TorchScript/.pt2/ONNX files embed source paths of the install (debug info, stack traces)
            fb.pop("bytes", None), fd.pop("bytes", None)
        if str(rec.get("path", "")).endswith(".onnx"):
            assert onnx_content(paths[0]) == onnx_content(paths[1]), f"export {key}: ONNX differs"
        diffs = differences(fb, fd)
        assert not diffs, f"export {key}: " + "\n".join(diffs[:30])
        assert rec["parity"]["passed"] and dev_rec["parity"]["passed"], rec
    # the deployment bundle's predict.py, run by the bundle's own executable (no Python needed)
    predictions = {}
    for side in ("bundle", "dev"):
        script = sides[side].tmp / "export-final-bundle" / "predict.py"
        assert script.is_file()
        python = sides["bundle"].argv if side == "bundle" else [sys.executable]  # the bundle acts as python
        proc = subprocess.run([*python, str(script), eval_npz, "--json"], capture_output=True, text=True,
                              env=sides[side].env, cwd=sides[side].tmp, timeout=300)
        assert proc.returncode == 0, f"{side}: predict.py → rc {proc.returncode}: {proc.stderr[-3000:]}"
        predictions[side] = json.loads(proc.stdout)
    assert predictions["bundle"]["predictions"] == predictions["dev"]["predictions"]
    assert predictions["bundle"]["n"] == 449


@pytest.fixture(scope="module")
def lm_files(tmp_path_factory) -> dict[str, Path]:
    """A tiny trained Llama folder and two text files cut from its corpus (training, evaluation)."""
    from tests.core import modelfiles as mf

    d = tmp_path_factory.mktemp("lm")
    model = mf.hf_llama(d / "llama", layers=4, train_steps=80)
    paragraphs = (d / "llama-corpus.txt").read_text(encoding="utf-8").split("\n\n")
    cut = int(len(paragraphs) * 0.8)
    (d / "train.txt").write_text("\n\n".join(paragraphs[:cut]), encoding="utf-8")
    (d / "eval.txt").write_text("\n\n".join(paragraphs[cut:]), encoding="utf-8")
    return {"model": model, "train": d / "train.txt", "eval": d / "eval.txt"}


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("name", list(LM_TEXT_PIPELINES))
def test_bundle_lm_pipeline_figures_equal_dev(sides, bundle, lm_files, name):
    if not (bundle / "_internal" / "transformers").is_dir():
        pytest.skip("bundle built without transformers (SLIMLINE_BUNDLE_HF=1 bundles it)")
    records = {}
    for side in ("bundle", "dev"):
        ws = sides[side].tmp / f"ws-{name}"
        sides[side].run("run", str(LM_TEXT_PIPELINES[name]), str(lm_files["model"]), "--data", str(lm_files["eval"]),
                        "--train-data", str(lm_files["train"]), "--workspace", str(ws), "--threads", "1")
        (run_dir,) = (ws / "runs").iterdir()
        records[side] = _record(run_dir)
    assert records["bundle"]["status"] == records["dev"]["status"] == "done", records["bundle"].get("error")
    fb, _ = model_figures(records["bundle"])
    fd, _ = model_figures(records["dev"])
    diffs = differences(fb, fd)
    assert not diffs, f"{name}: {len(diffs)} figures differ:\n" + "\n".join(diffs[:40])


def test_every_export_format_is_exercised():
    """A new export format must be added to EXPORTS or LM_EXPORTS (and so run from the bundle)."""
    from slimline.core.export.records import FORMATS

    covered = {fmt for _, fmt in EXPORTS} | set(LM_EXPORTS)
    assert set(FORMATS) | {"bundle"} <= covered, f"formats not exported from the bundle: " \
                                                 f"{sorted(set(FORMATS) - covered)} (add them to tests/installer/)"


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_bundle_exports_language_models_like_dev(sides, tmp_path_factory):
    """onnx-genai (builder as a child of the bundle's executable), logits and the LM bundle, figures as dev's."""
    from tests.core import modelfiles as mf

    root = tmp_path_factory.mktemp("lm")
    llama = mf.hf_llama(root / "llama", train_steps=40)
    corpus = root / "llama-corpus.txt"
    records: dict[str, dict[str, Any]] = {"bundle": {}, "dev": {}}
    for side in ("bundle", "dev"):
        for fmt in LM_EXPORTS:
            out = sides[side].tmp / f"lm-export-{fmt}"
            proc = sides[side].run("export", str(llama), "--format", fmt, "--data", str(corpus), "--out", str(out),
                                   "--name", "tiny", "--json", timeout=900)
            records[side][fmt] = json.loads(proc.stdout)
    for fmt in LM_EXPORTS:
        rec, dev_rec = records["bundle"][fmt], records["dev"][fmt]
        if "model_export" in rec:
            assert rec["predict_check"]["script"] == "chat.py" == dev_rec["predict_check"]["script"]
            rec, dev_rec = rec["model_export"], dev_rec["model_export"]
        assert rec["parity"]["passed"] and dev_rec["parity"]["passed"] and rec["parity"]["kind"] == "lm"
        fb, fd = figures(rec["parity"]), figures(dev_rec["parity"])
        fb.pop("dataset", None), fd.pop("dataset", None)
        diffs = differences(fb, fd)
        assert not diffs, f"LM export {fmt}: " + "\n".join(diffs[:30])
    # the bundle's chat.py, run by the bundle's own executable (it acts as python), prints the same tokens
    tokens = {}
    for side in ("bundle", "dev"):
        script = sides[side].tmp / "lm-export-bundle" / "chat.py"
        python = sides["bundle"].argv if side == "bundle" else [sys.executable]
        proc = subprocess.run([*python, str(script), "--prompt-ids", "1,60,61,62", "--max-new", "6", "--json",
                               "--threads", "1"], capture_output=True, text=True, env=sides[side].env,
                              cwd=sides[side].tmp, timeout=300)
        assert proc.returncode == 0, f"{side}: chat.py → rc {proc.returncode}: {proc.stderr[-3000:]}"
        tokens[side] = json.loads(proc.stdout)["tokens"]
    assert tokens["bundle"] == tokens["dev"] and tokens["dev"]


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_bundle_bench_inspect_report(runs, sides):
    model = str(DEMO / "digits_cnn.safetensors")
    out = {}
    for side in ("bundle", "dev"):
        s = sides[side]
        ins = s.run("inspect", model, "--json")
        bench = s.run("bench", model, "--data", str(DEMO / "digits_eval.npz"), "--runs", "3", "--warmup", "1",
                      "--threads", "1", "--json")
        html = s.tmp / "report.html"
        s.run("report", str(runs["demo"][side]), "--no-stats", "--out", str(html))
        assert html.is_file() and html.stat().st_size > 10_000
        out[side] = (figures(json.loads(ins.stdout)), figures(json.loads(bench.stdout)))
    for i, what in enumerate(("inspect", "bench")):
        diffs = differences(out["bundle"][i], out["dev"][i])
        assert not diffs, f"{what}: " + "\n".join(diffs[:30])


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_bundle_sweep_and_torchrun_like_dev(sides):
    """`slimline sweep` on the local engine, each variant distilled data-parallel by torchrun (2 processes,
    gloo) started from the bundle's own executable; the figures equal the development install's."""
    out = {}
    for side in ("bundle", "dev"):
        s = sides[side]
        proc = s.run("sweep", str(SWEEP_PIPELINE), str(DEMO / "digits_cnn.safetensors"),
                     "--data", str(DEMO / "digits_eval.npz"), "--train-data", str(DEMO / "digits_train.npz"),
                     "--grid", "s1.pruning_ratio=0.25,0.5", "--workers", "1", "--threads", "1",
                     "--workspace", str(s.tmp / "ws-sweep"), "--json", timeout=1800)
        doc = json.loads(proc.stdout)
        assert [v["status"] for v in doc["variants"]] == ["done", "done"], doc["variants"]
        out[side] = [figures({k: v for k, v in var.items() if k not in ("p50_ms", "wall_s", "worker", "run_id")})
                     for var in doc["variants"]]
        runs = [json.loads((s.tmp / "ws-sweep" / "runs" / v["run_id"] / "run.json").read_text())
                for v in doc["variants"]]
        assert all(r["results"][2]["metrics"]["processes"] == 2.0 for r in runs)  # s2 really ran on 2 ranks
    for b, d in zip(out["bundle"], out["dev"]):
        diffs = differences(b, d)
        assert not diffs, "\n".join(diffs)
    # the bundle leaves the Ray engine out and says so
    ray = sides["bundle"].run("sweep", "--demo", "--grid", "s1.pruning_ratio=0.25", "--engine", "ray", check=False)
    assert ray.returncode == 2 and "not part of this desktop bundle" in ray.stderr, ray.stderr[-2000:]
    check = json.loads(sides["bundle"].run("selfcheck", "--json", timeout=600).stdout)
    assert "ray" in check["optional_missing"]
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_bundle_sensitivity_and_search(sides):
    """`sensitivity` and `search` (child-process jobs) from the bundle give the dev install's ranking and path."""
    model, data = str(DEMO / "digits_cnn.safetensors"), str(DEMO / "digits_eval.npz")
    common = ["--data", data, "--step", "prune", "--levels", "0.7", "--rows", "64", "--threads", "1", "--json"]
    out: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for side in ("bundle", "dev"):
        s = sides[side]
        ws = str(s.tmp / "ws-sensitivity")
        sens = json.loads(s.run("sensitivity", model, *common, "--top-k", "2", "--workspace", ws).stdout)
        proc = s.run("search", model, *common, "--top-k", "1", "--max-candidates", "3", "--workspace", ws,
                     check=False)
        assert proc.returncode in (0, 3), f"{side}: search → rc {proc.returncode}: {proc.stderr[-3000:]}"
        found = json.loads(proc.stdout)
        assert found["candidates"] and found["verdict"]
        out[side] = (figures({k: v for k, v in sens.items() if k not in ("model", "step_input", "notes")}),
                     figures({"candidates": [{k: c[k] for k in ("label", "settings", "metric", "within_budget")}
                                             for c in found["candidates"]], "reachable": found["reachable"]}))
    for i, what in enumerate(("sensitivity", "search")):
        diffs = differences(out["bundle"][i], out["dev"][i])
        assert not diffs, f"{what}: " + "\n".join(diffs[:30])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_plugin_and_subcommand_is_exercised(sides):
    """A new plugin or subcommand must be added to this test (and run from the bundle) when it arrives."""
    pl = sides["bundle"].run("plugins", "--json")
    found = {p["id"]: p for p in json.loads(pl.stdout)}
    assert not [p for p in found.values() if "error" in p]
    dev = {p["id"] for p in json.loads(sides["dev"].run("plugins", "--json").stdout)}
    assert set(found) == dev
    used: set[str] = set()
    for pipe in [*PIPELINES.values(), *LM_TEXT_PIPELINES.values(), SWEEP_PIPELINE]:
        doc = json.loads(((DEMO / "demo_pipeline.json") if pipe is None else pipe).read_text(encoding="utf-8"))
        used |= {s["plugin"] for s in doc["steps"]}
    assert dev <= used, f"plugins no bundle pipeline uses: {sorted(dev - used)} (add them to tests/installer/)"
    from slimline.core.cli import command_names
    from slimline.gui.launcher import GUI

    commands = set(command_names((GUI,)))
    assert commands <= COVERED_COMMANDS, f"subcommands not run from the bundle: {sorted(commands - COVERED_COMMANDS)}"


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_bundle_runs_cli_headless(bundle, tmp_path):
    exe = bundle / "slimline"
    assert exe.is_file() and os.access(exe, os.X_OK)
    assert (bundle / "slimline.desktop").is_file() and (bundle / "slimline.png").is_file()
    env = _headless_env(tmp_path)

    def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=timeout,
                              cwd=tmp_path)

    v = run("--version")
    assert v.returncode == 0 and v.stdout.strip() == "slimline 0.1.0", v.stderr
    ins = run("inspect", str(DEMO / "digits_cnn.safetensors"), "--limit", "3")
    assert ins.returncode == 0, ins.stderr
    assert "767,722" in ins.stdout or "767722" in ins.stdout
    # torch.export-based ONNX exporter: needs onnxscript's sources inside the bundle
    exp = run("export", str(DEMO / "digits_cnn.safetensors"), "--format", "onnx", "--out", str(tmp_path / "onnx"),
              "--json", timeout=600)
    assert exp.returncode == 0, exp.stderr[-3000:]
    rec = json.loads(exp.stdout)
    assert rec["parity"]["passed"] and rec["parity"]["input_kind"] == "random"
    # python-compatible front: `slimline -c` runs code with the bundled packages
    c = run("-c", "import onnxruntime.quantization.shape_inference, sys; print(sys.argv[1:])", "x")
    assert c.returncode == 0 and c.stdout.strip() == "['x']", c.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_bundle_starts_gui_offscreen(bundle, tmp_path):
    env = {**_headless_env(tmp_path), "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.Popen([str(bundle / "slimline"), "--demo"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=tmp_path)
    try:
        time.sleep(25)
        alive = proc.poll() is None
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert alive, f"the GUI exited early (rc {proc.returncode}): {err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]


def _timed(argv: list[str], env: dict[str, str], cwd: Path, repeat: int = 3) -> float:
    """Median wall time of a command that must succeed (the first run warms the file cache)."""
    times = []
    for _ in range(repeat + 1):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
        times.append(time.perf_counter() - t0)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return sorted(times[1:])[len(times[1:]) // 2]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_startup_times(sides):
    """Start-up of the CLI and of the GUI to a shown window, bundle vs development install (printed)."""
    rows = []
    for label, args, extra in (("slimline --version", ["--version"], {}),
                               ("slimline plugins", ["plugins"], {}),
                               ("GUI to a shown window", [], {"QT_QPA_PLATFORM": "offscreen",
                                                              "SLIMLINE_EXIT_AFTER_SHOW": "1"})):
        t = {s: _timed([*sides[s].argv, *args], {**sides[s].env, **extra}, sides[s].tmp) for s in ("bundle", "dev")}
        rows.append(f"| {label} | {t['bundle']:.2f} s | {t['dev']:.2f} s |")
        assert t["bundle"] < 60
    print("\n| start-up (median of 3, warm cache) | bundle | dev install |\n|---|---:|---:|\n" + "\n".join(rows))
