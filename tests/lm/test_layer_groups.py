"""Repeated blocks are grouped from tensor names: decoder layers yes, Sequential indices and odd blocks no;
a group's summary row pools statistics exactly as if all its values were one tensor."""
from __future__ import annotations

import numpy as np

from slimline.core.layer_groups import group_blocks, group_of, group_row, split_block
from slimline.core.stats import LayerRow, tensor_stats


def _rows(names: list[str]) -> list[LayerRow]:
    return [LayerRow(name=n, params=10, bytes=40) for n in names]


def test_decoder_blocks_group_with_prefix_and_range() -> None:
    names = ["model.embed_tokens.weight"]
    for i in range(30):
        names += [f"model.layers.{i}.self_attn.q_proj.weight", f"model.layers.{i}.mlp.up_proj.weight",
                  f"model.layers.{i}.mlp.experts.3.w1"]   # nested numbering stays inside the block
    names.append("model.norm.weight")
    (g,) = group_blocks(_rows(names))
    assert g.prefix == "model.layers" and g.indices == list(range(30)) and g.title == "model.layers.0 … 29"
    assert g.members == ["mlp.experts.3.w1", "mlp.up_proj.weight", "self_attn.q_proj.weight"]
    assert g.describe() == "30 blocks × 3 tensors" and g.params == 900 and len(g.names) == 90
    assert split_block("model.layers.12.mlp.experts.3.w1") == ("model.layers", 12, "mlp.experts.3.w1")
    assert group_of([g])["model.layers.7.mlp.up_proj.weight"] == 0 and "model.norm.weight" not in group_of([g])


def test_what_does_not_group() -> None:
    seq = ["0.weight", "0.bias", "3.weight", "3.bias", "6.weight", "6.bias"]   # Sequential: indices not consecutive
    assert group_blocks(_rows(seq)) == []
    single = [f"blocks.{i}.weight" for i in range(5)]                          # one tensor per index: plain layers
    assert group_blocks(_rows(single)) == []
    one = ["h.0.attn.weight", "h.0.mlp.weight"]                                # a single block
    assert group_blocks(_rows(one)) == []


def test_a_block_with_other_tensors_starts_a_new_run() -> None:
    names = ["layer1.0.conv1.weight", "layer1.0.conv2.weight", "layer1.0.downsample.0.weight"]
    for i in (1, 2, 3):
        names += [f"layer1.{i}.conv1.weight", f"layer1.{i}.conv2.weight"]
    names += ["layer2.0.conv1.weight", "layer2.0.conv2.weight", "layer2.1.conv1.weight", "layer2.1.conv2.weight"]
    groups = group_blocks(_rows(names))
    assert [g.title for g in groups] == ["layer1.1 … 3", "layer2.0 … 1"]


def test_group_row_pools_statistics_exactly() -> None:
    rng = np.random.default_rng(0)
    arrays = {f"h.{i}.{m}": rng.normal(0.1 * i, 1 + i, size=(8 + i, 5)).astype(np.float32)
              for i in range(3) for m in ("a.weight", "b.weight")}
    arrays["h.1.a.weight"][0, :3] = 0.0
    rows = [LayerRow(name=n, dtype="float32", shape=list(a.shape), params=a.size, bytes=4 * a.size,
                     **tensor_stats(a)) for n, a in arrays.items()]
    (g,) = group_blocks(rows)
    got = group_row(g, rows)
    every = np.concatenate([a.ravel() for a in arrays.values()]).astype(np.float64)
    assert got.name == "h.0 … 2" and got.op_type == "3 blocks × 2 tensors" and got.dtype == "float32"
    assert got.params == every.size and got.bytes == 4 * every.size
    assert got.min == every.min() and got.max == every.max()
    np.testing.assert_allclose([got.mean, got.std, got.mean_abs, got.sparsity],
                               [every.mean(), every.std(), np.abs(every).mean(), (every == 0).mean()], rtol=1e-5)
    pending = [r.model_copy(update={"std": None}) if r.name == "h.2.b.weight" else r for r in rows]
    assert group_row(g, pending).std is None and group_row(g, pending).params == every.size
