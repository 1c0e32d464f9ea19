"""The corpus's HF folder opens as the model it is, and the real datasets load as Slimline datasets for real models.

Expected figures come from the files (config.json, safetensors header, the photos' pixels), not from Slimline.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from .fetch import ENTRIES, cut_sentences, dataset_path, model_path, verified
from .manifest import DATASETS, RealDataset

MINILM = ENTRIES["minilm-l6-v2"]
PHOTOS = ENTRIES["skimage-photos"]
SENTENCES = ENTRIES["pydoc-sentences"]


def _safetensors_params(path: Path) -> int:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return sum(int(np.prod(v["shape"])) for k, v in header.items()
               if k != "__metadata__" and v["dtype"] in ("F32", "F16", "BF16"))


@pytest.mark.real("minilm-l6-v2")
def test_minilm_folder_opens_as_the_bert_it_is() -> None:
    from slimline.core.models import open_model

    folder = model_path(MINILM)
    cfg = json.loads((folder / "config.json").read_text())
    assert (cfg["model_type"], cfg["hidden_size"], cfg["num_hidden_layers"]) == ("bert", 384, 6)
    handle = open_model(folder)
    expected = _safetensors_params(folder / "model.safetensors")
    assert 22_500_000 < expected < 22_900_000, expected  # all-MiniLM-L6-v2 is ~22.7M parameters
    assert handle.param_count == expected
    assert [s.name for s in handle.inputs][:2] == ["input_ids", "attention_mask"]
    assert handle.outputs[0].shape[-1] == 384


@pytest.mark.real("minilm-l6-v2", "pydoc-sentences")
def test_sentences_load_as_a_text_dataset_for_minilm() -> None:
    from slimline.core.data import load_dataset
    from slimline.core.models import open_model

    path = dataset_path(SENTENCES)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 512 and all(ln.strip() for ln in lines)
    assert len(set(lines)) == len(lines)
    ds = load_dataset(path, open_model(model_path(MINILM)), max_length=128)
    ids, mask = ds.inputs["input_ids"], ds.inputs["attention_mask"]
    assert ids.shape == mask.shape == (len(lines), 128)
    assert (ids[:, 0] == 101).all(), "every row starts with [CLS] (id 101 in the BERT uncased vocabulary)"
    lengths = mask.sum(1)
    assert 8 <= np.median(lengths) <= 64 and lengths.min() >= 8, "real sentences of 6-60 words"


@pytest.mark.real("pydoc-sentences")
def test_sentence_cut_is_deterministic() -> None:
    import sysconfig

    source = Path(sysconfig.get_paths()["stdlib"]) / SENTENCES.prefix
    assert cut_sentences(source) == dataset_path(SENTENCES).read_text(encoding="utf-8").splitlines()


@pytest.mark.real("nudenet-320n", "skimage-photos")
def test_photos_load_as_an_image_dataset_for_a_detector() -> None:
    from slimline.core.data import load_dataset
    from slimline.core.models import open_model

    folder = dataset_path(PHOTOS)
    files = sorted(p.name for p in folder.iterdir())
    assert files == sorted(m.path for m in PHOTOS.members)
    # core's image-folder loader reads class subfolders: the flat folder is the one class "photos"
    ds = load_dataset(folder.parent, open_model(model_path(ENTRIES["nudenet-320n"])), size=(320, 320))
    x = next(iter(ds.inputs.values()))
    assert x.shape == (len(files), 3, 320, 320) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    per_image_std = x.reshape(len(x), -1).std(1)
    assert (per_image_std > 0.02).all(), "real photos, not blank frames"


@pytest.mark.parametrize("ds", [pytest.param(d, id=d.id, marks=pytest.mark.real(d.id)) for d in DATASETS])
def test_dataset_cache_verifies(ds: RealDataset) -> None:
    assert verified(ds)
    assert dataset_path(ds).exists()


@pytest.mark.real("minilm-l6-v2")
def test_a_changed_folder_member_fails_verification(tmp_path: Path) -> None:
    import shutil

    src = model_path(MINILM)
    dst = model_path(MINILM, tmp_path)
    shutil.copytree(src, dst)
    assert verified(MINILM, tmp_path)
    cfg = dst / "config.json"
    cfg.write_bytes(cfg.read_bytes().replace(b'"hidden_size": 384', b'"hidden_size": 385'))
    assert not verified(MINILM, tmp_path)
    (dst / "config.json").unlink()
    assert not verified(MINILM, tmp_path)
