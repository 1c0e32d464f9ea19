"""Dataset loaders, checks against model inputs, random data and bundles."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slimline.core.data import DataBundle, Dataset, check_dataset, load_dataset, random_dataset, resize_bilinear
from slimline.core.errors import DataError
from slimline.core.handle import ModelHandle, TensorSpec


def handle(inputs: list[TensorSpec], **kw) -> ModelHandle:
    dims = {d: 1 for s in inputs for d in s.shape if isinstance(d, str)}
    return ModelHandle(path=kw.pop("path", "/nonexistent/m.onnx"), format=kw.pop("format", "onnx"),
                       family=kw.pop("family", "onnx"), inputs=inputs,
                       dim_defaults={**dims, **kw.pop("dims", {})}, **kw)


IMG = handle([TensorSpec(name="input", dtype="float32", shape=["batch", 1, 4, 4])])
VEC = handle([TensorSpec(name="x", dtype="float32", shape=["batch", 3])])
TWO = handle([TensorSpec(name="ids", dtype="int64", shape=["batch", "seq"]),
              TensorSpec(name="mask", dtype="int64", shape=["batch", "seq"])], dims={"seq": 5})


# --------------------------------------------------------------------- Dataset basics

def make_ds(n: int = 10, labelled: bool = True) -> Dataset:
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    return Dataset(name="t", source="t.npz", inputs={"x": x},
                   labels=np.arange(n) % 3 if labelled else None)


def test_batches_cover_all_rows_in_order():
    ds = make_ds(10)
    batches = list(ds.batches(4))
    assert [len(b[0]["x"]) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[0]["x"] for b in batches]), ds.inputs["x"])
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), ds.labels)
    with pytest.raises(DataError):
        list(ds.batches(0))


def test_take_split_describe():
    ds = make_ds(10)
    assert len(ds.take(3)) == 3 and len(ds.take(100)) == 10
    a, b = ds.split(0.3, seed=1)
    a2, b2 = ds.split(0.3, seed=1)
    assert len(a) == 3 and len(b) == 7
    np.testing.assert_array_equal(a.inputs["x"], a2.inputs["x"])  # deterministic
    rows = {tuple(r) for r in np.concatenate([a.inputs["x"], b.inputs["x"]])}
    assert len(rows) == 10  # disjoint and complete
    assert not np.array_equal(ds.split(0.3, seed=2)[0].inputs["x"], a.inputs["x"])
    assert ds.describe() == "t (n=10, labelled)"
    assert "unlabelled" in make_ds(4, labelled=False).describe()
    with pytest.raises(DataError):
        ds.split(1.5)


def test_row_count_mismatch_is_refused():
    with pytest.raises(DataError, match="rows"):
        Dataset(name="t", source="t", inputs={"x": np.zeros((3, 2))}, labels=np.zeros(4))


# --------------------------------------------------------------------- npz

def test_npz_by_input_name_with_labels(tmp_path: Path):
    p = tmp_path / "d.npz"
    np.savez(p, input=np.random.rand(5, 1, 4, 4), labels=np.array([0, 1, 2, 1, 0]))
    ds = load_dataset(p, IMG)
    assert ds.inputs["input"].dtype == np.float32  # float64 converted silently
    assert ds.labels.dtype == np.int64 and len(ds) == 5
    assert ds.describe() == "d.npz (n=5, labelled)"


def test_npz_single_array_any_name(tmp_path: Path):
    p = tmp_path / "d.npz"
    np.savez(p, images=np.zeros((2, 1, 4, 4), np.float32))
    ds = load_dataset(p, IMG)
    assert list(ds.inputs) == ["input"] and ds.labels is None


def test_npz_missing_input_names_it(tmp_path: Path):
    p = tmp_path / "d.npz"
    np.savez(p, ids=np.zeros((2, 5), np.int64))
    with pytest.raises(DataError) as exc:
        load_dataset(p, TWO)
    assert "mask" in exc.value.message and str(p) in exc.value.subject


def test_npz_object_arrays_are_not_unpickled(tmp_path: Path):
    p = tmp_path / "d.npz"
    np.savez(p, input=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError, match="unpickling"):
        load_dataset(p)


def test_npz_wrong_shape_and_dtype(tmp_path: Path):
    p = tmp_path / "d.npz"
    np.savez(p, input=np.zeros((2, 1, 5, 4), np.float32))
    with pytest.raises(DataError) as exc:
        load_dataset(p, IMG)
    assert "'input'" in exc.value.message and "[2, 1, 5, 4]" in exc.value.message
    p2 = tmp_path / "f.npz"
    np.savez(p2, ids=np.zeros((2, 5), np.float32), mask=np.ones((2, 5), np.int64))
    with pytest.raises(DataError, match="'ids' expects dtype int64, got float32"):
        load_dataset(p2, TWO)


# --------------------------------------------------------------------- check_dataset

def test_check_dataset_rules():
    ds = Dataset(name="d", source="d", inputs={"ids": np.zeros((2, 7), np.int32),
                                               "mask": np.ones((2, 7), np.int64)})
    check_dataset(ds, TWO)  # dynamic seq dim matches anything; int32→int64 allowed
    assert ds.inputs["ids"].dtype == np.int64
    bad = Dataset(name="d", source="d", inputs={"ids": np.zeros((2, 7, 1), np.int64),
                                                "mask": np.ones((2, 7), np.int64)})
    with pytest.raises(DataError, match="rank"):
        check_dataset(bad, TWO)
    missing = Dataset(name="d", source="d", inputs={"ids": np.zeros((2, 7), np.int64)})
    with pytest.raises(DataError, match="'mask' is missing"):
        check_dataset(missing, TWO)
    # batch dim free, static dims checked
    check_dataset(Dataset(name="d", source="d", inputs={"x": np.zeros((9, 3))}), VEC)
    with pytest.raises(DataError, match="dim 1: 3"):
        check_dataset(Dataset(name="d", source="d", inputs={"x": np.zeros((9, 4), np.float32)}), VEC)


# --------------------------------------------------------------------- random

def test_random_dataset_shapes_kinds_and_ranges():
    ds = random_dataset(TWO, 4, seed=3)
    assert ds.kind == "random" and ds.labels is None and "RANDOM" in ds.describe()
    assert ds.inputs["ids"].shape == (4, 5) and ds.inputs["ids"].dtype == np.int64
    assert ds.inputs["ids"].min() >= 0 and ds.inputs["ids"].max() < 100
    assert (ds.inputs["mask"] == 1).all()
    np.testing.assert_array_equal(random_dataset(TWO, 4, seed=3).inputs["ids"], ds.inputs["ids"])
    ds2 = random_dataset(TWO, 2, batch_dims={"seq": 9})
    assert ds2.inputs["ids"].shape == (2, 9)
    f = random_dataset(IMG, 3)
    assert f.inputs["input"].shape == (3, 1, 4, 4) and f.inputs["input"].dtype == np.float32


# --------------------------------------------------------------------- CSV

def test_csv_header_label_and_reshape(tmp_path: Path):
    p = tmp_path / "d.csv"
    p.write_text("a,b,label,c,d\n" + "\n".join(f"{i},{i+1},{i % 2},{i+2},{i+3}" for i in range(6)) + "\n")
    m = handle([TensorSpec(name="x", dtype="float32", shape=["batch", 1, 2, 2])])
    ds = load_dataset(p, m)
    assert ds.inputs["x"].shape == (6, 1, 2, 2) and ds.inputs["x"].dtype == np.float32
    np.testing.assert_array_equal(ds.inputs["x"][2].ravel(), [2, 3, 4, 5])
    np.testing.assert_array_equal(ds.labels, [0, 1, 0, 1, 0, 1])


def test_csv_named_label_column_no_model(tmp_path: Path):
    p = tmp_path / "d.csv"
    p.write_text("f1,f2,y\n1.5,2,1\n3,4,0\n")
    ds = load_dataset(p, label_column="y")
    assert ds.inputs["input"].shape == (2, 2) and list(ds.labels) == [1, 0]
    with pytest.raises(DataError, match="no column named 'z'"):
        load_dataset(p, label_column="z")


def test_csv_headerless_and_errors(tmp_path: Path):
    p = tmp_path / "d.csv"
    p.write_text("1,2,3\n4,5,6\n")
    ds = load_dataset(p, VEC)
    assert ds.inputs["x"].shape == (2, 3) and ds.labels is None
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n4,oops,6\n")
    with pytest.raises(DataError) as exc:
        load_dataset(bad, VEC)
    assert "'oops'" in exc.value.message and "row 3" in exc.value.message and "column b" in exc.value.message
    wrong = tmp_path / "w.csv"
    wrong.write_text("1,2,3,4\n")
    with pytest.raises(DataError, match="'x'"):
        load_dataset(wrong, VEC)


# --------------------------------------------------------------------- images

def _pgm_p5(path: Path, img: np.ndarray) -> None:
    h, w = img.shape
    path.write_bytes(f"P5\n# comment\n{w} {h}\n255\n".encode() + img.astype(np.uint8).tobytes())


def _pgm_p2(path: Path, img: np.ndarray) -> None:
    h, w = img.shape
    path.write_text(f"P2\n{w} {h}\n15\n" + " ".join(str(int(v)) for v in img.ravel()) + "\n")


def _ppm_p6(path: Path, img: np.ndarray) -> None:
    h, w, _ = img.shape
    path.write_bytes(f"P6 {w} {h} 255\n".encode() + img.astype(np.uint8).tobytes())


def test_image_folder_netpbm_and_npy(tmp_path: Path):
    root = tmp_path / "imgs"
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    a = np.arange(16).reshape(4, 4) * 10
    _pgm_p5(root / "cat" / "a.pgm", a)
    _pgm_p2(root / "cat" / "b.pgm", np.full((4, 4), 15))
    np.save(root / "dog" / "c.npy", np.full((4, 4), 0.25, np.float32))
    _ppm_p6(root / "dog" / "d.ppm", np.stack([a, a, a], axis=-1))  # RGB → grayscale for a 1-channel model
    (root / "dog" / "notes.txt").write_text("ignored")
    ds = load_dataset(root, IMG)
    assert ds.inputs["input"].shape == (4, 1, 4, 4)
    assert list(ds.labels) == [0, 0, 1, 1] and ds.meta["classes"] == ["cat", "dog"]
    np.testing.assert_allclose(ds.inputs["input"][0, 0], a / 255.0, rtol=1e-6)
    np.testing.assert_allclose(ds.inputs["input"][1], 1.0)  # P2 with maxval 15
    np.testing.assert_allclose(ds.inputs["input"][2], 0.25)
    np.testing.assert_allclose(ds.inputs["input"][3, 0], a / 255.0, rtol=1e-5)
    assert ds.meta["skipped_files"] == 1


def test_image_folder_resize_rgb_normalise_nhwc(tmp_path: Path):
    root = tmp_path / "imgs"
    (root / "x").mkdir(parents=True)
    _ppm_p6(root / "x" / "a.ppm", np.full((6, 8, 3), 255))
    ds = load_dataset(root, size=(3, 4), grayscale=False, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5],
                      layout="NHWC")
    assert ds.inputs["input"].shape == (1, 3, 4, 3)
    np.testing.assert_allclose(ds.inputs["input"], 1.0)
    m = handle([TensorSpec(name="pix", dtype="float32", shape=["batch", 3, 2, 2])])
    ds2 = load_dataset(root, m)  # size and channels taken from the model
    assert ds2.inputs["pix"].shape == (1, 3, 2, 2)


def test_image_folder_errors(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_dataset(tmp_path / "empty")
    root = tmp_path / "mixed"
    (root / "a").mkdir(parents=True)
    np.save(root / "a" / "1.npy", np.zeros((4, 4), np.float32))
    np.save(root / "a" / "2.npy", np.zeros((5, 4), np.float32))
    with pytest.raises(DataError, match="size"):
        load_dataset(root)


def test_png_needs_pillow_or_decodes(tmp_path: Path):
    root = tmp_path / "png"
    (root / "a").mkdir(parents=True)
    try:
        from PIL import Image
    except ImportError:
        (root / "a" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n")
        with pytest.raises(DataError) as exc:
            load_dataset(root)
        assert "Pillow" in exc.value.message and ".npy" in exc.value.hint
    else:
        Image.fromarray(np.full((4, 4), 51, np.uint8)).save(root / "a" / "x.png")
        ds = load_dataset(root, IMG)
        np.testing.assert_allclose(ds.inputs["input"], 0.2, rtol=1e-6)


def test_resize_bilinear_constant_and_identity():
    img = np.random.rand(5, 7).astype(np.float32)
    np.testing.assert_array_equal(resize_bilinear(img, (5, 7)), img)
    np.testing.assert_allclose(resize_bilinear(np.full((5, 7, 3), 0.3, np.float32), (2, 9)), 0.3, rtol=1e-6)
    up = resize_bilinear(np.array([[0.0, 1.0]], np.float32), (1, 4))
    np.testing.assert_allclose(up, [[0.0, 0.25, 0.75, 1.0]])


# --------------------------------------------------------------------- text

def _tiny_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "hello": 2, "world": 3, "slim": 4, "line": 5}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(folder)


def test_text_tokenised_with_model_tokenizer(tmp_path: Path):
    folder = tmp_path / "hf_model"
    folder.mkdir()
    _tiny_tokenizer(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    m = handle([TensorSpec(name="input_ids", dtype="int64", shape=["batch", "sequence"]),
                TensorSpec(name="attention_mask", dtype="int64", shape=["batch", "sequence"])],
               path=str(folder), format="hf", family="torch", dims={"sequence": 4})
    p = tmp_path / "s.txt"
    p.write_text("hello world\n\nslim line hello world again\nfoo\n")
    ds = load_dataset(p, m)
    assert len(ds) == 3 and ds.labels is None
    np.testing.assert_array_equal(ds.inputs["input_ids"], [[2, 3, 0, 0], [4, 5, 2, 3], [1, 0, 0, 0]])
    np.testing.assert_array_equal(ds.inputs["attention_mask"], [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    lab = tmp_path / "l.txt"
    lab.write_text("1\thello\n0\tworld line\n")
    ds2 = load_dataset(lab, m, label_separator="\t", max_length=3)
    assert list(ds2.labels) == [1, 0] and ds2.inputs["input_ids"].shape == (2, 3)


def test_text_without_tokenizer_is_a_clear_error(tmp_path: Path):
    folder = tmp_path / "no_tok"
    folder.mkdir()
    m = handle([TensorSpec(name="input_ids", dtype="int64", shape=["batch", "sequence"])],
               path=str(folder), format="hf", family="torch", dims={"sequence": 4})
    p = tmp_path / "s.txt"
    p.write_text("hello\n")
    with pytest.raises(DataError) as exc:
        load_dataset(p, m)
    assert "tokenizer" in exc.value.message and "tokenizer" in exc.value.hint
    with pytest.raises(DataError, match="needs the model"):
        load_dataset(p)


def test_unknown_and_missing_files(tmp_path: Path):
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "nope.npz")
    (tmp_path / "x.bin").write_bytes(b"1")
    with pytest.raises(DataError, match="unknown dataset type"):
        load_dataset(tmp_path / "x.bin")


# --------------------------------------------------------------------- bundle

def test_bundle_from_dataset_holds_out_eval():
    ds = make_ds(50)
    b = DataBundle.from_dataset(ds)
    assert len(b.eval) == 10 and len(b.train) == 40 and len(b.calibration) == 40
    ev = {tuple(r) for r in b.eval.inputs["x"]}
    assert not ev & {tuple(r) for r in b.train.inputs["x"]}  # never score on training rows
    small = DataBundle.from_dataset(make_ds(4))
    assert len(small.eval) == 4 and small.notes
    rnd = DataBundle.from_dataset(random_dataset(VEC, 8))
    assert rnd.eval is None and rnd.train is None and rnd.calibration.kind == "random"


def test_bundle_from_paths(tmp_path: Path):
    ev, tr = tmp_path / "ev.npz", tmp_path / "tr.npz"
    np.savez(ev, x=np.zeros((6, 3), np.float32), labels=np.zeros(6, np.int64))
    np.savez(tr, x=np.ones((300, 3), np.float32), labels=np.zeros(300, np.int64))
    b = DataBundle.from_paths(eval=ev, train=tr, model=VEC)
    assert len(b.eval) == 6 and len(b.train) == 300 and len(b.calibration) == 128
    only_eval = DataBundle.from_paths(eval=ev, model=VEC)
    assert len(only_eval.eval) == 6 and only_eval.train is None
    only_train = DataBundle.from_paths(train=tr, model=VEC)
    assert len(only_train.eval) == 60 and len(only_train.train) == 240
    assert DataBundle.from_paths().eval is None
