"""open_model on real files of every supported format, and the loaders behind it."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import modelfiles as mf
import numpy as np
import pytest

from slimline.core.errors import ModelLoadError, UntrustedFileError
from slimline.core.models import (
    detect_format,
    load_eager_module,
    load_onnx,
    load_torch_runnable,
    open_model,
    to_slimline_archive,
)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("zoo")
    return {
        "onnx_torch": mf.onnx_from_torch(d / "cnn.onnx"),
        "onnx_old": mf.onnx_old_opset9(d / "old.onnx"),
        "onnx_if": mf.onnx_with_if(d / "if.onnx"),
        "onnx_ext": mf.onnx_external(d / "ext"),
        "ts": mf.torchscript(d / "model.ts"),
        "pt2": mf.pt2(d / "model.pt2"),
        "sd": mf.state_dict_pt(d / "sd.pt"),
        "pickle": mf.pickled_module(d / "full.pt"),
        "pickle_custom": mf.pickled_module(d / "custom.pth", custom=True),
        "st": mf.plain_safetensors(d / "weights.safetensors"),
        "archive": mf.slimline_archive(d / "archive.safetensors"),
    }


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    return mf.hf_folder(tmp_path_factory.mktemp("hf") / "tiny-bert")


# ----------------------------------------------------------------------------- ONNX

def test_onnx_from_torch_exporter(zoo):
    h = open_model(zoo["onnx_torch"])
    assert (h.format, h.family, h.opset) == ("onnx", "onnx", 13)
    assert [i.name for i in h.inputs] == ["image"] and h.inputs[0].shape == ["batch", 1, 6, 6]
    assert h.outputs[0].name == "logits" and h.outputs[0].dtype == "float32"
    assert h.dim_defaults == {"batch": 1}
    assert h.param_count == 4 * 9 + 4 + 144 * 5 + 5
    assert h.producer.startswith("pytorch") and h.bytes_on_disk == zoo["onnx_torch"].stat().st_size
    assert h.capabilities.run and h.capabilities.compress
    assert h.with_dims(batch=8).dim_defaults["batch"] == 8


def test_onnx_old_opset_initializers_as_inputs_are_not_inputs(zoo):
    h = open_model(zoo["onnx_old"])
    assert h.opset == 9 and h.producer == "handmade"
    assert [i.name for i in h.inputs] == ["x"], "initializers listed as graph inputs are weights, not inputs"
    assert h.inputs[0].shape == ["N", 4] and h.dim_defaults == {"N": 1}
    assert h.meta["initializers_as_inputs"] == 2 and h.param_count == 25


def test_onnx_if_subgraph_weights_counted(zoo):
    h = open_model(zoo["onnx_if"])
    assert h.meta["has_subgraphs"] and h.param_count == 4 * 3 * 2  # the scalar threshold "zero" is not a weight
    assert h.meta["weights_by_place"] == {"initializers": 0, "constant_nodes": 0, "subgraphs": 24}
    assert h.inputs[0].shape == [2, 4]


def test_onnx_external_data_listed_and_loaded(zoo):
    h = open_model(zoo["onnx_ext"])
    assert [Path(f).name for f in h.files] == ["ext.onnx", "weights.data"]
    assert h.bytes_on_disk == sum(Path(f).stat().st_size for f in h.files)
    model = load_onnx(h)
    from onnx import numpy_helper

    assert all(numpy_helper.to_array(t).size for t in model.graph.initializer)
    lazy = load_onnx(h.path, load_external=False)
    assert any(t.external_data for t in lazy.graph.initializer)


def test_onnx_external_runs_in_onnxruntime(zoo):
    import onnxruntime as ort

    model = load_onnx(open_model(zoo["onnx_ext"]))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"image": np.ones((3, 1, 6, 6), np.float32)})[0]
    assert out.shape == (3, 5)


def test_load_onnx_refuses_non_onnx_handle(zoo):
    with pytest.raises(ModelLoadError, match="not ONNX"):
        load_onnx(open_model(zoo["archive"]))


def test_onnx_detected_by_content_not_extension(zoo, tmp_path):
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(zoo["onnx_torch"].read_bytes())
    assert detect_format(renamed) == "onnx"
    assert open_model(renamed).format == "onnx"


# ----------------------------------------------------------------------------- torch formats

def test_torchscript_opens_runs_but_is_not_editable(zoo):
    import torch

    h = open_model(zoo["ts"])
    assert (h.format, h.family) == ("torchscript", "torch")
    assert h.capabilities.run and not h.capabilities.compress
    assert "not edited" in h.capabilities.reason and "input shape must be given" in h.capabilities.reason
    assert h.inputs == [] and h.param_count == 4 * 8 + 8 + 8 * 3 + 3
    m = load_torch_runnable(h)
    assert m(torch.ones(2, 4)).shape == (2, 3)
    with pytest.raises(ModelLoadError, match="not edited"):
        load_eager_module(h)


def test_pt2_refused_without_trust_but_weights_listed(zoo):
    with pytest.raises(UntrustedFileError) as ei:
        open_model(zoo["pt2"])
    err = ei.value
    assert "unpickles" in err.message and "--trust" in err.hint and str(zoo["pt2"]) == err.subject
    listing = err.handle
    assert listing.family == "weights" and not listing.trusted and listing.param_count == 67
    assert listing.inputs[0].shape == [2, 4]
    from slimline.core.stats import compute_stats

    rows = {r.name: r for r in compute_stats(listing)}
    sd = mf.tiny_seq().state_dict()
    assert rows["0.weight"].max == pytest.approx(float(sd["0.weight"].max()))


def test_pt2_opens_with_trust(zoo):
    import torch

    h = open_model(zoo["pt2"], trust=True)
    assert (h.format, h.family, h.trusted) == ("torch_export", "torch", True)
    assert not h.capabilities.compress
    out = load_torch_runnable(h)(torch.ones(2, 4))
    assert torch.allclose(out, mf.tiny_seq()(torch.ones(2, 4)), atol=1e-6)
    with pytest.raises(ModelLoadError, match="cannot be edited"):
        load_eager_module(h)


def test_state_dict_is_weights_only(zoo):
    h = open_model(zoo["sd"])
    assert (h.format, h.family) == ("state_dict", "weights")
    assert not h.capabilities.run and not h.capabilities.compress
    assert h.capabilities.reason.startswith("weights only: inspect yes")
    assert h.param_count == 67
    with pytest.raises(ModelLoadError, match="weights only"):
        load_torch_runnable(h)


def test_nested_checkpoint_unwrapped(tmp_path):
    import torch

    p = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": mf.tiny_seq().state_dict(), "lr": 0.1}, p)
    h = open_model(p)
    assert h.format == "state_dict" and h.param_count == 67


def test_plain_safetensors_weights_only(zoo):
    h = open_model(zoo["st"])
    assert (h.format, h.family, h.param_count) == ("safetensors", "weights", 67)
    assert not h.capabilities.run


def test_slimline_archive(zoo):
    import torch

    h = open_model(zoo["archive"])
    assert (h.format, h.family) == ("slimline_torch", "torch")
    assert h.inputs[0].name == "x" and h.param_count == 67
    m = load_eager_module(h)
    assert torch.allclose(m(torch.ones(1, 4)), mf.tiny_seq()(torch.ones(1, 4)))


def test_pickled_module_refused_without_trust(zoo):
    with pytest.raises(UntrustedFileError) as ei:
        open_model(zoo["pickle"])
    e = ei.value
    assert "runs code from the file" in e.message and "torch.nn.modules" in e.message
    assert "--trust" in e.hint and "GUI" in e.hint


def test_pickled_module_loads_with_trust_and_converts(zoo, tmp_path):
    import torch

    h = open_model(zoo["pickle"], trust=True)
    assert (h.format, h.family, h.param_count) == ("pickle_module", "torch", 67)
    assert "input shape must be given" in h.capabilities.reason
    m = load_eager_module(h)
    assert torch.allclose(m(torch.ones(1, 4)), mf.tiny_seq()(torch.ones(1, 4)))
    out = to_slimline_archive(h, tmp_path / "conv.safetensors")
    assert out.format == "slimline_torch"
    from slimline.core.torchmodel import load_torch_module

    assert torch.allclose(load_torch_module(out)(torch.ones(1, 4)), m(torch.ones(1, 4)))


def test_custom_pickled_module_trusted_but_not_convertible(zoo, tmp_path):
    h = open_model(zoo["pickle_custom"], trust=True)
    assert h.meta["class"].endswith("TinyNet")
    with pytest.raises(ModelLoadError, match="custom forward code"):
        to_slimline_archive(h, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("kind", ["torch_zip", "raw_pickle"])
def test_malicious_pickle_refused_and_canary_not_created(tmp_path, kind):
    import torch

    canary = tmp_path / "canary.txt"
    evil = tmp_path / ("evil.pt" if kind == "torch_zip" else "evil.pkl.bin")
    if kind == "torch_zip":
        torch.save({"weight": torch.ones(2), "payload": mf.Canary(str(canary))}, evil)
    else:
        evil.write_bytes(pickle.dumps(mf.Canary(str(canary)), protocol=4))
    assert not canary.exists()
    with pytest.raises(UntrustedFileError) as ei:
        open_model(evil)
    assert "builtins.open" in ei.value.message or "io.open" in ei.value.message
    assert not canary.exists(), "unpickling code from an untrusted file ran"


def test_open_model_does_not_import_heavy_modules_for_safetensors(zoo):
    code = ("import sys; from slimline.core.models import open_model; from slimline.core.stats import "
            f"layer_inventory; h = open_model({str(zoo['st'])!r}); layer_inventory(h); "
            "print(sorted(m for m in ('torch','onnx','transformers','onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- Hugging Face

def test_hf_folder_opens(hf_dir):
    h = open_model(hf_dir)
    assert (h.format, h.family) == ("hf", "torch")
    assert [(i.name, i.dtype, i.shape) for i in h.inputs] == [
        ("input_ids", "int64", ["batch", "sequence"]), ("attention_mask", "int64", ["batch", "sequence"])]
    assert h.dim_defaults == {"batch": 1, "sequence": 64}  # max_position_embeddings < 128
    assert h.outputs[0].shape == ["batch", 3]
    assert h.meta["auto_class"] == "AutoModelForSequenceClassification"
    names = {Path(f).name for f in h.files}
    assert {"config.json", "model.safetensors"} <= names
    assert h.bytes_on_disk == sum(Path(f).stat().st_size for f in h.files)
    import transformers

    ref = transformers.AutoModelForSequenceClassification.from_pretrained(str(hf_dir))
    assert h.param_count == sum(p.numel() for p in ref.parameters())


def test_hf_eager_and_archive_roundtrip(hf_dir, tmp_path):
    import torch

    h = open_model(hf_dir)
    m = load_eager_module(h)
    ids = torch.randint(0, 99, (2, 10))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        ref = m(input_ids=ids, attention_mask=mask).logits
    arch = to_slimline_archive(h, tmp_path / "bert.safetensors")
    assert arch.format == "slimline_torch" and arch.inputs == h.inputs and arch.meta["arch_kind"] == "hf"
    m2 = load_torch_runnable(open_model(arch.path))
    with torch.no_grad():
        got = m2(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(ref, got, atol=1e-5)


def test_hf_without_transformers_still_inspects(hf_dir):
    code = ("import sys; sys.modules['transformers'] = None; "
            "import importlib.util as u; "
            "u.find_spec = (lambda f: (lambda n, *a, **k: None if n == 'transformers' else f(n, *a, **k)))"
            "(u.find_spec); "
            "from slimline.core.models import open_model; from slimline.core.stats import layer_inventory; "
            f"h = open_model({str(hf_dir)!r}); print(h.capabilities.run, len(layer_inventory(h)) > 10); "
            "print(h.capabilities.reason)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    first, reason = out.stdout.strip().splitlines()
    assert first == "False True" and "slimline[hf]" in reason


def test_onnx_opset_below_7_is_inspect_only(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)])
    model.ir_version = 3
    onnx.save(model, str(tmp_path / "ancient.onnx"))
    h = open_model(tmp_path / "ancient.onnx")
    assert h.opset == 6 and not h.capabilities.run and "version_converter" in h.capabilities.reason


def test_hf_sharded_folder(hf_dir, tmp_path):
    import transformers

    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(hf_dir))
    sharded = tmp_path / "sharded"
    model.save_pretrained(str(sharded), max_shard_size="30KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    h = open_model(sharded)
    shards = [f for f in h.files if f.endswith(".safetensors")]
    assert len(shards) > 1 and h.param_count == open_model(hf_dir).param_count
    from slimline.core.stats import layer_inventory

    assert len(layer_inventory(h)) == len(layer_inventory(open_model(hf_dir)))


def test_untrusted_pt2_listing_cannot_be_run(zoo):
    with pytest.raises(UntrustedFileError) as ei:
        open_model(zoo["pt2"])
    with pytest.raises(UntrustedFileError, match="unpickles"):
        load_torch_runnable(ei.value.handle)
