"""A corpus of broken, hostile and unsupported inputs: each gives one clear ModelLoadError, writes nothing."""
from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import modelfiles as mf
import numpy as np
import pytest

from slimline.core.errors import ModelLoadError, UntrustedFileError
from slimline.core.models import load_onnx, open_model


def _random(ext: str, seed: int, prefix: bytes = b"\xde\xad\xbe\xef") -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        p = d / f"random{ext}"
        p.write_bytes(prefix + np.random.default_rng(seed).bytes(4096))
        return p
    return make


def _truncate(builder: Callable[[Path], Path], name: str, keep: float = 0.5) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        src = builder(d / f"full_{name}")
        data = src.read_bytes()
        src.unlink()
        p = d / name
        p.write_bytes(data[: int(len(data) * keep)])
        return p
    return make


def _empty_onnx(d: Path) -> Path:
    p = d / "empty.onnx"
    p.write_bytes(b"")
    return p


def _empty_dir(d: Path) -> Path:
    p = d / "nothing"
    p.mkdir()
    return p


def _folder_without_config(d: Path) -> Path:
    p = d / "noconfig"
    p.mkdir()
    (p / "readme.md").write_text("weights are elsewhere")
    (p / "model.onnx").write_bytes(b"x")
    return p


def _hf_without_weights(d: Path) -> Path:
    p = d / "hf_noweights"
    p.mkdir()
    (p / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return p


def _hf_bad_config(d: Path) -> Path:
    p = d / "hf_badconfig"
    p.mkdir()
    (p / "config.json").write_text("{not json")
    mf.plain_safetensors(p / "model.safetensors")
    return p


def _external(location: str) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        path = mf.onnx_external(d / "model_dir")
        (d / "outside.data").write_bytes((path.parent / "weights.data").read_bytes())
        mf.set_external_location(path, location)
        return path
    return make


def _external_symlink(d: Path) -> Path:
    path = mf.onnx_external(d / "model_dir")
    outside = d / "secret.data"
    (path.parent / "weights.data").rename(outside)
    os.symlink(outside, path.parent / "weights.data")
    return path


def _external_missing(d: Path) -> Path:
    path = mf.onnx_external(d / "model_dir")
    (path.parent / "weights.data").unlink()
    return path


def _external_truncated(d: Path) -> Path:
    path = mf.onnx_external(d / "model_dir")
    data = path.parent / "weights.data"
    data.write_bytes(data.read_bytes()[:100])
    return path


def _text(d: Path) -> Path:
    p = d / "notes.txt"
    p.write_text("this is not a model\n")
    return p


def _h5(d: Path) -> Path:
    p = d / "keras.h5"
    p.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 512)
    return p


def _plain_zip(d: Path) -> Path:
    p = d / "stuff.pt"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("hello.txt", "hi")
    return p


def _onnx_no_graph(d: Path) -> Path:
    import onnx

    p = d / "nograph.onnx"
    p.write_bytes(onnx.ModelProto(ir_version=8).SerializeToString())
    return p


def _safetensors_overflow(d: Path) -> Path:
    p = d / "liar.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}).encode()
    p.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 16)
    return p


def _nonexistent(d: Path) -> Path:
    return d / "does" / "not" / "exist.onnx"


# (id, builder, substring the message must contain, substring the subject must end with)
CASES = [
    ("random.onnx", _random(".onnx", 1, b""), "not a valid ONNX file", "random.onnx"),
    ("random.pt", _random(".pt", 2), "not a valid .pt model", "random.pt"),
    ("random.pth", _random(".pth", 3), "not a valid .pth model", "random.pth"),
    ("random.pt2", _random(".pt2", 4), "not a valid .pt2 model", "random.pt2"),
    ("random.safetensors", _random(".safetensors", 5), "not a valid .safetensors model", "random.safetensors"),
    ("random.bin", _random(".bin", 6), "not a valid .bin model", "random.bin"),
    ("random.ts", _random(".ts", 7), "not a valid .ts model", "random.ts"),
    ("empty file", _empty_onnx, "empty (0 bytes)", "empty.onnx"),
    ("truncated onnx", _truncate(lambda p: mf.onnx_from_torch(p.with_suffix(".onnx")), "cut.onnx"),
     "not a valid ONNX file", "cut.onnx"),
    ("truncated safetensors", _truncate(mf.plain_safetensors, "cut.safetensors", 0.9), "truncated",
     "cut.safetensors"),
    ("truncated torchscript", _truncate(mf.torchscript, "cut.ts"), "truncated or corrupt", "cut.ts"),
    ("truncated state_dict", _truncate(mf.state_dict_pt, "cut.pt", 0.7), "truncated or corrupt", "cut.pt"),
    ("truncated pt2", _truncate(mf.pt2, "cut.pt2", 0.6), "truncated or corrupt", "cut.pt2"),
    ("empty folder", _empty_dir, "folder is empty", "nothing"),
    ("folder without config.json", _folder_without_config, "no config.json", "noconfig"),
    ("hf folder without weights", _hf_without_weights, "no weights", "hf_noweights"),
    ("hf folder with broken config", _hf_bad_config, "not valid JSON", "config.json"),
    ("external data ../", _external("../outside.data"), "outside the model's folder", "ext.onnx"),
    ("external data absolute", lambda d: _external(str(d / "outside.data"))(d), "absolute path", "ext.onnx"),
    ("external data symlink escape", _external_symlink, "leads outside the model's folder", "ext.onnx"),
    ("external data missing", _external_missing, "is missing", "ext.onnx"),
    ("external data truncated", _external_truncated, "truncated", "ext.onnx"),
    ("text file", _text, "text file, not a model", "notes.txt"),
    ("keras h5", _h5, "HDF5", "keras.h5"),
    ("zip that is no torch archive", _plain_zip, "not a PyTorch", "stuff.pt"),
    ("onnx without graph", _onnx_no_graph, "no ONNX graph", "nograph.onnx"),
    ("safetensors beyond end", _safetensors_overflow, "truncated", "liar.safetensors"),
    ("nonexistent path", _nonexistent, "no such file", "exist.onnx"),
]


def _snapshot(root: Path) -> dict[str, int]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            out[str(p)] = p.lstat().st_mtime_ns
    return out


@pytest.mark.parametrize("case_id,builder,needle,subject_end", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_error(tmp_path, case_id, builder, needle, subject_end):
    target = builder(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(ModelLoadError) as ei:
        open_model(target)
    err = ei.value
    assert not isinstance(err, UntrustedFileError)
    assert needle in err.message, f"{case_id}: {err}"
    assert err.subject.endswith(subject_end), err.subject
    assert err.hint, "every error says what to do next"
    assert err.__cause__ is None or isinstance(err.__cause__, ModelLoadError)
    assert _snapshot(tmp_path) == before, "opening a bad file must not write anything"


def test_corpus_is_big_enough():
    assert len(CASES) >= 15


@pytest.mark.parametrize("location,needle", [("../outside.data", "outside"), ("/etc/passwd", "absolute path")])
def test_load_onnx_applies_the_same_external_data_rules(tmp_path, location, needle):
    path = _external(location)(tmp_path)
    with pytest.raises(ModelLoadError, match=needle):
        load_onnx(path)
    with pytest.raises(ModelLoadError, match=needle):
        load_onnx(path, load_external=False)


def test_external_data_in_subfolder_is_allowed(tmp_path):
    path = mf.onnx_external(tmp_path / "m")
    (path.parent / "sub").mkdir()
    (path.parent / "weights.data").rename(path.parent / "sub" / "weights.data")
    mf.set_external_location(path, "sub/weights.data")
    h = open_model(path)
    assert [Path(f).name for f in h.files] == ["ext.onnx", "weights.data"]
