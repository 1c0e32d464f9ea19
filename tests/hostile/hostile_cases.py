"""The case list: what each hostile input is and the outcome it must have."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hostile_corpus as hc
import numpy as np
from hostile_corpus import Case

ML, UT, DE, PE = "ModelLoadError", "UntrustedFileError", "DataError", "PipelineError"


# ----------------------------------------------------------------------------- actions


def open_and_stats(target: Path) -> Any:
    from slimline.core.models import open_model
    from slimline.core.stats import compute_stats, histogram

    h = open_model(target)
    rows = compute_stats(h)
    if rows:
        histogram(h, rows[0].name, bins=16)
    return h, rows


def open_and_run(target: Path) -> Any:
    """Open, then run once on two rows of random inputs in onnxruntime."""
    from slimline.core.data import random_dataset
    from slimline.core.models import open_model
    from slimline.core.runtime import open_session

    h = open_model(target)
    feeds = random_dataset(h, 2).inputs
    return open_session(h, threads=1).run(feeds)


def open_then_load_onnx(target: Path) -> Any:
    from slimline.core.models import load_onnx, open_model

    open_model(target)
    return load_onnx(target)


def stats_of_untrusted_pt2(target: Path) -> Any:
    """The GUI shows an untrusted .pt2's weights from the error's listing handle: read them all."""
    from slimline.core.errors import UntrustedFileError
    from slimline.core.models import open_model
    from slimline.core.stats import compute_stats

    try:
        open_model(target)
    except UntrustedFileError as exc:
        return compute_stats(exc.handle)  # type: ignore[attr-defined]
    raise AssertionError("an untrusted .pt2 must not open")


def random_inputs(target: Path) -> Any:
    from slimline.core.data import random_dataset
    from slimline.core.models import open_model

    return random_dataset(open_model(target), 1)


def load_hf(target: Path) -> Any:
    from slimline.core.models import load_torch_runnable, open_model

    return load_torch_runnable(open_model(target))


def load_pipe(target: Path) -> Any:
    from slimline.core.pipeline import load_pipeline

    return load_pipeline(target)


def load_data(target: Path) -> Any:
    from slimline.core.data import load_dataset
    from slimline.core.models import open_model

    model = target.parent / "model.onnx"
    return load_dataset(target, open_model(model))


def data_case(id: str, model: str, build: Any, needle: str, names: str = "", expect: str = DE,
              verify: Any = None) -> Case:
    def make(d: Path) -> Path:
        hc.model_for_data(d, model)
        return build(d)
    return Case(id, "data", make, expect, needle, names, run=load_data, verify=verify)


# ----------------------------------------------------------------------------- verifications


def nan_inf_counted(res: Any) -> None:
    _, rows = res
    assert rows[0].nan_count == 2 and rows[0].inf_count == 2, rows[0]
    assert np.isfinite(rows[0].mean), "statistics are over the finite values"


def zero_size_ok(res: Any) -> None:
    h, rows = res
    assert rows[0].params == 0 and rows[0].shape == [0, 4] and h.param_count == 0


def opens_or_refuses(res: Any) -> None:
    """Random flips may hit weight bytes only: then the model opens and its numbers are read."""
    h, rows = res
    assert h.format == "onnx" and all(r.params >= 0 for r in rows)


def placeholder_step(pipe: Any) -> None:
    step = pipe.steps[0]
    assert step.enabled is False and "not installed" in step.placeholder_reason
    assert step.params == {"keep": [1, 2, {"x": None}]} and pipe.enabled_steps() == []


def bom_loaded(pipe: Any) -> None:
    assert [s.id for s in pipe.steps] == ["s1"]


def subfolder_symlink_inside_ok(res: Any) -> None:
    h, rows = res
    assert [r.name for r in rows] == ["w"] and rows[0].max == 3.0


# ----------------------------------------------------------------------------- the corpus

CASES: list[Case] = []
add = CASES.append

# --- ONNX protobufs: truncated inside the graph at several points, flipped bytes -------------
for frac in (0.02, 0.25, 0.5, 0.75, 0.98):
    add(Case(f"onnx truncated at {int(frac * 100)}% of the graph", "model", hc.truncated_onnx(frac), ML,
             "not a valid ONNX file"))
add(Case("onnx graph tag with an invalid wire type", "model", hc.onnx_graph_tag_wiretype, ML, "not a valid ONNX"))
add(Case("onnx graph length prefix 2**40", "model", hc.onnx_graph_length_overflow, ML, "not a valid ONNX"))
add(Case("onnx flipped op type (unknown op) refused by the runtime", "model", hc.onnx_renamed_op, ML,
         "onnxruntime cannot load", run=open_and_run))
add(Case("onnx flipped tensor name (dangling input) refused by the runtime", "model", hc.onnx_dangling_input, ML,
         "onnxruntime cannot load", run=open_and_run))
for seed in (1, 2, 3, 4):
    add(Case(f"onnx 12 random byte flips in the graph (seed {seed})", "model", hc.onnx_random_flips(seed),
             "any", "", verify=opens_or_refuses, tags=("fuzz",)))

# --- zip archives with bad members ----------------------------------------------------------------
add(Case("torchscript zip with corrupt data.pkl", "model", hc.ts_corrupt_data_pkl, ML, "could not be loaded"))
add(Case("torchscript zip without data.pkl", "model", hc.ts_missing_data_pkl, ML, "could not be loaded"))
add(Case("torchscript zip with code-running constants.pkl", "model", hc.ts_evil_constants, ML, "could not be loaded"))
# random bytes after a pickle header: the restricted unpickler stops at the first unknown opcode/global;
# either refusal (corrupt, or "would run code") is right as long as nothing is unpickled for real
MLUT = f"{ML}|{UT}"
add(Case("torch.save zip with corrupt data.pkl", "model", hc.torchsave_corrupt_data_pkl, MLUT, ""))
add(Case("torch.save zip whose tensor storage is missing", "model", hc.torchsave_missing_storage, ML, "corrupt"))
add(Case("zip-bomb header: data.pkl declares 4 GiB", "model", hc.zip_forged_sizes, ML, "corrupt"))
add(Case("zip bomb: 256 MiB of zeros deflated in a storage member", "model", hc.zip_real_bomb, ML, "",
         tags=("bomb",)))
add(Case("zip with path-traversal member names", "model", hc.zip_traversal, ML, "corrupt"))
add(Case(".pt2 with broken JSON members", "model", hc.pt2_bad_json, ML, "corrupt or truncated"))
add(Case(".pt2 weight declaring 10^8 values over 16 bytes (listing of an untrusted file)", "model",
         hc.pt2_oob_shape, ML, "reach beyond", run=stats_of_untrusted_pt2))
add(Case(".pt2 weight with a 2**40 storage offset", "model", hc.pt2_oob_offset, ML, "reach beyond",
         run=stats_of_untrusted_pt2))
add(Case(".pt2 weight with a negative stride", "model", hc.pt2_negative_stride, ML, "reach beyond",
         run=stats_of_untrusted_pt2))
add(Case(".pt2 whose weights are code-running pickles", "model", hc.pt2_evil_pickled_weight, UT,
         "will not load it"))

# --- random bytes under every supported extension, steered by magic prefixes ----------------------
for i, (ext, prefix) in enumerate([(".onnx", "pickle"), (".pt", "onnx-tag"), (".pth", "zip"), (".pt2", "eocd"),
                                   (".safetensors", "safetensors-len"), (".bin", "pickle"), (".ts", "zip"),
                                   (".ckpt", "none"), (".jit", "onnx-tag"), (".ckpt", "pickle"),
                                   (".jit", "none"), (".bin", "safetensors-len")]):
    add(Case(f"random bytes {ext} with {prefix} magic", "model", hc.random_bytes(ext, prefix, 100 + i), MLUT, ""))

# --- pickles whose __reduce__ would run code ------------------------------------------------------
for kind, name in [("os.system", "evil.pt"), ("exec", "evil.pth"), ("open", "evil.bin"),
                   ("subprocess", "evil.ckpt"), ("eval", "evil_proto4.pt")]:
    add(Case(f"legacy pickle running {kind} in {Path(name).suffix}", "model",
             hc.legacy_evil(kind, name, protocol=4 if "proto4" in name else 2), UT, "runs code"))
for kind, name in [("os.system", "evil_zip.pt"), ("exec", "evil_zip.pth"), ("open", "evil_zip.bin"),
                   ("subprocess", "evil_zip.ckpt")]:
    add(Case(f"torch zip whose data.pkl runs {kind} ({Path(name).suffix})", "model",
             hc.torchsave_evil_zip(kind, name), UT, "runs code"))
add(Case("protocol-0 (text) pickle calling os.system", "model", hc.text_protocol_pickle, ML, "text file"))

# --- ONNX external data ----------------------------------------------------------------------
add(Case("external data offset not a number", "model", hc.ext("w.data", offset="abc"), ML, "offset"))
add(Case("external data negative offset", "model", hc.ext("w.data", offset="-8"), ML, "truncated"))
add(Case("external data length beyond the file", "model", hc.ext("w.data", length=str(1 << 40)), ML, "truncated"))
add(Case("external data offset beyond the file", "model", hc.ext("w.data", offset="4096"), ML, "truncated"))
add(Case("external data location is a folder", "model", hc.ext_location_is_dir, ML, "missing"))
add(Case("external data ..\\ (Windows separators)", "model", hc.ext("..\\outside.data"), ML, "outside"))
add(Case("external data with an embedded NUL", "model", hc.ext("w.data\x00../../etc/passwd"), ML, "outside"))
add(Case("external data through a symlinked folder leading outside", "model", hc.ext_symlinked_folder, ML,
         "leads outside"))
add(Case("external data is a FIFO (would block reads)", "model", hc.ext_fifo, ML, "missing"))
add(Case("external data of a Constant node escapes the folder", "model", hc.ext_in_constant, ML,
         "outside", run=open_then_load_onnx))
add(Case("external data of a Constant node escapes the folder (runtime)", "model", hc.ext_in_constant, ML,
         "escapes", run=open_and_run))
add(Case("external data of an If-branch initializer is an absolute path", "model", hc.ext_in_subgraph, ML,
         "absolute path"))

# --- NaN/Inf/zero-size/absurd dims ------------------------------------------------------------
add(Case("graph input dim 2**40: random inputs refused", "model", hc.huge_input, DE, "absurdly large",
         names="huge_input.onnx", run=random_inputs))
add(Case("initializer dims [2**40] over 16 bytes", "model", hc.onnx_init("bigdim.onnx", [2 ** 40], raw=b"\0" * 16),
         ML, "declared shape"))
add(Case("initializer dims [2**20, 2**20] with no data", "model", hc.onnx_init("bigdim2.onnx", [2 ** 20, 2 ** 20]),
         ML, "declared shape"))
add(Case("initializer negative dim", "model", hc.onnx_init("negdim.onnx", [-3, 4], raw=b"\0" * 48), ML,
         "negative dimension"))
add(Case("initializer float_data shorter than its dims", "model", hc.onnx_init("few.onnx", [4], floats=[1.0]), ML,
         "declared shape"))
add(Case("initializer raw_data not a multiple of the item size", "model",
         hc.onnx_init("odd.onnx", [4], raw=b"\0" * 15), ML, "declared shape"))
add(Case("zero-size initializer [0, 4] opens with 0 params", "model",
         hc.onnx_init("zero.onnx", [0, 4], x_shape=[0, 4]), None, verify=zero_size_ok))
add(Case("NaN/Inf weights are counted, not propagated", "model",
         hc.onnx_values("naninf.onnx", np.array([np.nan, np.inf, -np.inf, 1.0, np.nan, 2.0], np.float32)),
         None, verify=nan_inf_counted))
add(Case("safetensors shape disagrees with its byte range", "model",
         hc.safetensors_raw("mismatch.safetensors", {"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 16]}}),
         ML, "invalid entry"))
add(Case("safetensors shape [2**40, 2**40]", "model",
         hc.safetensors_raw("huge.safetensors", {"w": {"dtype": "F32", "shape": [2 ** 40, 2 ** 40],
                                                      "data_offsets": [0, 16]}}), ML, "invalid entry"))
add(Case("safetensors negative shape", "model",
         hc.safetensors_raw("neg.safetensors", {"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}),
         ML, "invalid entry"))
add(Case("safetensors unknown dtype F128", "model",
         hc.safetensors_raw("f128.safetensors", {"w": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}),
         ML, "invalid entry"))
add(Case("safetensors header nested 200k deep", "model",
         hc.safetensors_raw("deep.safetensors", None, raw_header=b'{"a":' + b"[" * 200000 + b"]" * 200000 + b"}"),
         ML, "not valid JSON"))

# --- Hugging Face folders with broken config.json ------------------------------------------
add(Case("hf config.json is a JSON list", "model", hc.hf([1, 2, 3], "hf_list"), ML, "model_type", names="config.json"))
add(Case("hf config.json without model_type", "model", hc.hf({"hidden_size": 4}, "hf_notype"), ML, "model_type",
         names="config.json"))
add(Case("hf config.json with invalid UTF-8", "model", hc.hf(b'{"model_type": "bert\xff\xfe"}', "hf_utf8"), ML,
         "not valid JSON", names="config.json"))
add(Case("hf config.json nested 100k deep", "model", hc.hf("[" * 100000 + "]" * 100000, "hf_deep"), ML, "",
         names="hf_deep"))
add(Case("hf max_position_embeddings of the wrong type", "model",
         hc.hf({**hc.BERT_CFG, "max_position_embeddings": "lots"}, "hf_wrongtype"), ML, "lots", names="hf_wrongtype"))
add(Case("hf vocab_size 2**40: loading refused, nothing allocated", "model",
         hc.hf({**hc.BERT_CFG, "vocab_size": 2 ** 40}, "hf_hugevocab"), ML, "do not belong together",
         names="hf_hugevocab", run=load_hf, tags=("transformers",)))
add(Case("hf model_type of the wrong type (a number)", "model",
         hc.hf({**hc.BERT_CFG, "model_type": 123}, "hf_typenum"), ML, "", names="hf_typenum", run=load_hf,
         tags=("transformers",)))
add(Case("hf shard index pointing outside the folder", "model",
         hc.hf(hc.BERT_CFG, "hf_escape", weights="none",
               index={"weight_map": {"a.weight": "../../../etc/passwd"}}), ML, "outside the folder",
         names="index.json"))
add(Case("hf shard index weight_map is a list", "model",
         hc.hf(hc.BERT_CFG, "hf_badindex", weights="none", index={"weight_map": ["x"]}), ML, "", names="hf_badindex"))
add(Case("hf pytorch_model.bin is a code-running pickle", "model",
         hc.hf(hc.BERT_CFG, "hf_evilbin", weights="evil_bin"), UT, "runs code", names="pytorch_model.bin"))

# --- pipeline files --------------------------------------------------------------------------
P = "pipeline"
add(Case("pipeline unknown plugin loads as a disabled placeholder", P,
         hc.pipe_json(hc.with_step("acme.not_installed", {"keep": [1, 2, {"x": None}]})), None,
         run=load_pipe, verify=placeholder_step))
add(Case("pipeline steps is an object", P, hc.pipe_json(hc.pipeline_doc(steps={"s1": {}})), PE, "steps"))
add(Case("pipeline step params is a list", P,
         hc.pipe_json(hc.pipeline_doc(steps=[{"id": "s1", "plugin": "builtin.convert_onnx", "params": [1]}])),
         PE, "step s1.params"))
add(Case("pipeline enabled is not a boolean", P,
         hc.pipe_json(hc.pipeline_doc(steps=[{"id": "s1", "plugin": "builtin.convert_onnx", "enabled": "maybe"}])),
         PE, "step s1.enabled"))
add(Case("pipeline latency runs is text", P, hc.pipe_json(hc.with_latency(runs="many")), PE, "latency.runs"))
add(Case("pipeline latency runs 0", P, hc.pipe_json(hc.with_latency(runs=0)), PE, "latency.runs"))
add(Case("pipeline batch size 0", P, hc.pipe_json(hc.with_latency(batch_sizes=[0])), PE, "batch_sizes"))
add(Case("pipeline batch size 10**9", P, hc.pipe_json(hc.with_latency(batch_sizes=[10 ** 9])), PE, "batch_sizes"))
add(Case("pipeline warmup -1", P, hc.pipe_json(hc.with_latency(warmup=-1)), PE, "latency.warmup"))
add(Case("pipeline threads 10**6", P, hc.pipe_json(hc.with_latency(threads=10 ** 6)), PE, "latency.threads"))
add(Case("pipeline budget min_cosine 2", P,
         hc.pipe_json(hc.pipeline_doc(evaluation={"budgets": {"min_cosine": 2.0}})), PE, "budgets.min_cosine"))
add(Case("pipeline budget NaN", P,
         hc.pipe_bytes(
             json.dumps(hc.pipeline_doc(evaluation={"budgets": {"max_accuracy_drop": float("nan")}})).encode()),
         PE, "max_accuracy_drop"))
add(Case("pipeline unknown evaluation key", P, hc.pipe_json(hc.pipeline_doc(evaluation={"dataz": "x"})), PE, "dataz"))
add(Case("pipeline prune ratio 1.5", P, hc.pipe_json(hc.with_step("builtin.prune_structured", {"pruning_ratio": 1.5})),
         PE, "pruning_ratio"))
add(Case("pipeline convert opset 999", P, hc.pipe_json(hc.with_step("builtin.convert_onnx", {"opset": 999})), PE,
         "opset"))
add(Case("pipeline quantize max_attempts 0", P,
         hc.pipe_json(hc.with_step("builtin.quantize_dynamic", {"max_attempts": 0})), PE, "max_attempts"))
add(Case("pipeline static calibrate_method not a choice", P,
         hc.pipe_json(hc.with_step("builtin.quantize_static", {"calibrate_method": "Magic"})), PE, "calibrate_method"))
add(Case("pipeline distill epochs -1", P, hc.pipe_json(hc.with_step("builtin.distill", {"epochs": -1})), PE, "epochs"))
add(Case("pipeline future schema version 2", P, hc.pipe_json(hc.pipeline_doc(schema_version=2)), PE, "newer Slimline",
         names="schema_version"))
add(Case("pipeline schema version 10**12", P, hc.pipe_json(hc.pipeline_doc(schema_version=10 ** 12)), PE,
         "newer Slimline", names="schema_version"))
add(Case("pipeline schema version 1.5", P, hc.pipe_json(hc.pipeline_doc(schema_version=1.5)), PE, "integer",
         names="schema_version"))
add(Case("pipeline schema version -1", P, hc.pipe_json(hc.pipeline_doc(schema_version=-1)), PE, "migration",
         names="schema_version"))
add(Case("pipeline v0 with steps that are numbers", P,
         hc.pipe_json({"format": "slimline.pipeline", "schema_version": 0, "pipeline": [1, 2]}), PE, "malformed",
         names="steps"))
add(Case("pipeline deeply nested JSON (100k)", P, hc.pipe_bytes(b"[" * 100000 + b"]" * 100000), PE, "nested"))
add(Case("pipeline params nested 300 deep", P,
         hc.pipe_json(hc.with_step("builtin.convert_onnx", {"opset": json.loads("[" * 300 + "]" * 300)})), PE, "opset"))
add(Case("pipeline file of 17 MiB", P, hc.pipe_huge, PE, "MiB"))
add(Case("pipeline file with invalid UTF-8", P, hc.pipe_bytes(b'{"name": "\xff\xfe"}'), PE, "cannot read"))
add(Case("pipeline file is JSON null", P, hc.pipe_bytes(b"null"), PE, "JSON object"))
add(Case("pipeline file with a UTF-8 BOM loads", P,
         hc.pipe_bytes(b"\xef\xbb\xbf" + json.dumps(hc.pipeline_doc()).encode()), None,
         run=load_pipe, verify=bom_loaded))

# --- datasets that do not fit the model -----------------------------------------------------------
rng = np.random.default_rng(0)
add(data_case("npz with wrong array names", "image", hc.npz("wrong_names.npz", a=np.zeros((4, 1, 8, 8), np.float32),
                                                            b=np.zeros((4, 1, 8, 8), np.float32)), "image"))
add(data_case("npz with wrong feature count", "mlp", hc.npz("shape.npz", x=np.zeros((4, 15), np.float32)), "dim 1"))
add(data_case("npz with wrong rank", "image", hc.npz("rank.npz", image=np.zeros((4, 64), np.float32)), "rank"))
add(data_case("npz of strings", "mlp", hc.npz("strings.npz", x=np.array([["a"] * 16] * 3)), "dtype"))
add(data_case("npz of complex numbers", "mlp", hc.npz("complex.npz", x=np.zeros((3, 16), np.complex64)), "dtype"))
add(data_case("npz floats for int64 token ids", "tokens", hc.npz("floats.npz", input_ids=rng.random((3, 8))),
              "int64"))
add(data_case("npz labels are strings", "mlp", hc.npz("strlabels.npz", x=np.zeros((3, 16), np.float32),
                                                      labels=np.array(["a", "b", "c"])), "labels"))
add(data_case("npz labels and inputs disagree on rows", "mlp",
              hc.npz("rows.npz", x=np.zeros((3, 16), np.float32), labels=np.arange(5)), "rows"))
add(data_case("npz object array needing pickle (code-running)", "mlp", hc.npz_pickled_object, "unpickling"))
add(data_case("npy object array needing pickle (code-running)", "mlp", hc.npy_pickled, "not a readable"))
add(data_case("npz header declaring 2**40 rows", "mlp", hc.npz_forged_rows, "not a readable"))
add(data_case("npz truncated", "mlp", hc.npz_truncated, "not a readable"))
add(data_case("csv with text cells", "mlp", hc.text_file("text.csv", "\n".join(
    [",".join(["1"] * 16), ",".join(["1"] * 15 + ["oops"])])), "non-numeric"))
add(data_case("csv empty", "mlp", hc.text_file("empty.csv", ""), "empty"))
add(data_case("csv header only", "mlp", hc.text_file("header.csv", "a,b,c\n"), "no rows"))
add(data_case("csv ragged rows", "mlp", hc.text_file("ragged.csv", "1,2,3\n1,2\n"), "columns"))
add(data_case("csv with the wrong number of columns for the model", "image",
              hc.text_file("cols.csv", "\n".join([",".join(["0.5"] * 63)] * 3)), "feature columns"))
add(data_case("csv with invalid UTF-8", "mlp", hc.text_file("binary.csv", b"\xff\xfe\x00garbage\x80"),
              "not a text CSV"))
add(data_case("image folder of non-images", "image",
              hc.image_folder({"cat/a.png": b"not a png", "dog/b.jpg": b"\xff\xd8\xffgarbage"}), "", names="images"))
add(data_case("image folder with a truncated png", "image",
              hc.image_folder({"cat/a.png": b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0"}), "", names="images"))
add(data_case("flat image folder with a broken image", "image", hc.image_folder({"a.png": b"x"}),
              "cannot decode image"))
add(data_case("image folder for a token model", "tokens",
              hc.image_folder({"cat/a.npy": np.zeros((8, 8), np.float32)}), "", names="images"))
add(data_case("unknown dataset extension", "mlp", hc.text_file("data.parquet", "PAR1"), "unknown dataset type"))
add(data_case("text dataset for a model without a tokenizer", "mlp", hc.text_file("lines.txt", "hello\nworld\n"),
              "tokenizer"))
