"""Pruning a language model with tied embeddings (SmolLM2-like) keeps the tie: one tensor, no bigger file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.core import modelfiles as mf
from tests.lm.helpers import run_inline

STEPS = [{"id": "s1", "plugin": "builtin.prune_magnitude", "plugin_version": "1", "enabled": True,
          "params": {"sparsity": 0.5}},
         {"id": "s2", "plugin": "builtin.prune_llm", "plugin_version": "1", "enabled": True,
          "params": {"method": "wanda", "sparsity": 0.5, "calibration_windows": 4, "window_length": 32}},
         {"id": "s3", "plugin": "builtin.prune_llm", "plugin_version": "1", "enabled": True,
          "params": {"method": "blocks", "blocks": 1, "calibration_windows": 4, "window_length": 32}}]


@pytest.fixture(scope="module")
def tied_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.set_num_threads(1)
    folder = mf.hf_llama(tmp_path_factory.mktemp("tied") / "llama", vocab=512, hidden=64, tie=True)
    assert json.loads((folder / "config.json").read_text())["tie_word_embeddings"] is True
    return folder


def _tensor_names(path: Path) -> list[str]:
    from safetensors import safe_open

    f = path / "model.safetensors" if path.is_dir() else path
    with safe_open(str(f), framework="numpy") as st:
        return list(st.keys())


def test_pruning_keeps_the_tie_and_the_size(tied_lm: Path, tmp_path: Path) -> None:
    rec = run_inline(tied_lm, tied_lm.parent / "llama-corpus.txt", tmp_path / "ws", STEPS)
    res = {r.step_id: r for r in rec.results}
    size = {k: r.size.bytes_on_disk for k, r in res.items()}
    for sid in ("s1", "s2"):  # zeroed weights: the same tensors, one embedding (metadata adds a few hundred bytes)
        assert size[sid] <= size["original"] + 4096, (sid, size)
        assert not any("bigger" in w for w in res[sid].warnings), res[sid].warnings
    assert size["s3"] < size["original"]
    for sid in ("s1", "s2", "s3"):
        names = _tensor_names(Path(res[sid].model.path))
        heads = [n for n in names if n.endswith(("embed_tokens.weight", "lm_head.weight"))]
        assert len(heads) == 1, (sid, heads)
    s1 = res["s1"]
    assert any("lm_head" in w and "tied" in w for w in s1.warnings)  # said, not silently skipped
    rows = {r["layer"]: r for r in s1.tables["sparsity"]}
    assert rows["lm_head"]["status"] == "skipped"


def test_archive_round_trip_restores_the_tie(tied_lm: Path, tmp_path: Path) -> None:
    import torch

    from slimline.core.models import open_model
    from slimline.core.torchmodel import load_torch_module, read_archive_meta, save_torch_module
    from slimline.plugins._shared import common

    handle = open_model(tied_lm)
    module = common.load_module(handle)
    assert module.lm_head.weight is module.model.embed_tokens.weight
    out = save_torch_module(module, tmp_path / "m.safetensors", inputs=handle.inputs, outputs=handle.outputs,
                            base={"kind": "hf", "config": module.config.to_dict(),
                                  "auto_class": "AutoModelForCausalLM"})
    meta: Any = read_archive_meta(out.path)
    assert meta["tied"] == {"lm_head.weight": "model.embed_tokens.weight"}
    back = load_torch_module(out)
    assert back.lm_head.weight is back.model.embed_tokens.weight
    ids = torch.tensor([[1, 5, 9, 14]])
    with torch.no_grad():
        assert torch.equal(back(input_ids=ids).logits, module(input_ids=ids).logits)


def test_plain_module_with_a_shared_weight_stores_it_once(tmp_path: Path) -> None:
    import torch

    from slimline.core.handle import TensorSpec
    from slimline.core.torchmodel import load_torch_module, save_torch_module

    emb = torch.nn.Embedding(50, 8)
    head = torch.nn.Linear(8, 50, bias=False)
    head.weight = emb.weight
    model = torch.nn.Sequential(emb, head)
    out = save_torch_module(model, tmp_path / "seq.safetensors",
                            inputs=[TensorSpec(name="x", shape=[1, 4], dtype="int64")])
    assert _tensor_names(Path(out.path)) == ["0.weight"]
    back = load_torch_module(out)
    assert back[1].weight is back[0].weight
    x = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(back(x), model(x))
