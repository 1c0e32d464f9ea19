"""Tiny real model files of every supported format, built on the fly for the model/stats tests."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


def _torch():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return torch


class TinyNet(torch.nn.Module):
    """Custom forward code: pickles of it need trust and do not convert to a spec tree."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return torch.relu(self.fc(x)) * 2


def tiny_seq():
    torch = _torch()
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()


def tiny_cnn():
    torch = _torch()
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 5)).eval()


def onnx_from_torch(path: Path, opset: int = 13) -> Path:
    torch = _torch()
    torch.onnx.export(tiny_cnn(), (torch.randn(2, 1, 6, 6),), str(path), input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=opset, dynamo=False)
    return path


def onnx_old_opset9(path: Path) -> Path:
    """Hand-built opset-9 graph whose initializers are also listed as graph inputs (old exporters)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((5, 4)).astype(np.float32), "fc.weight")
    b = numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "fc.bias")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])
    as_inputs = [helper.make_tensor_value_info("fc.weight", TensorProto.FLOAT, [5, 4]),
                 helper.make_tensor_value_info("fc.bias", TensorProto.FLOAT, [5])]
    node = helper.make_node("Gemm", ["x", "fc.weight", "fc.bias"], ["g"], name="fc", transB=1)
    relu = helper.make_node("Relu", ["g"], ["y"], name="act")
    graph = helper.make_graph([node, relu], "old", [x] + as_inputs, [y], initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], producer_name="handmade")
    model.ir_version = 4
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def onnx_with_if(path: Path) -> Path:
    """An If node whose branches hold their own initializers (subgraph weights)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    w_then = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "then.w")
    w_else = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "else.w")
    out_t = helper.make_tensor_value_info("t_out", TensorProto.FLOAT, None)
    out_e = helper.make_tensor_value_info("e_out", TensorProto.FLOAT, None)
    then_g = helper.make_graph([helper.make_node("MatMul", ["x", "then.w"], ["t_out"], name="then_mm")],
                               "then", [], [out_t], initializer=[w_then])
    else_g = helper.make_graph([helper.make_node("MatMul", ["x", "else.w"], ["e_out"], name="else_mm")],
                               "else", [], [out_e], initializer=[w_else])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0, name="sum"),
             helper.make_node("Greater", ["s", "zero"], ["cond"], name="gt"),
             helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g, name="branch")]
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    graph = helper.make_graph(nodes, "ifgraph", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], initializer=[zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="handmade")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def onnx_external(folder: Path, location: str = "weights.data") -> Path:
    """A MatMul/Conv model whose weights live in an external data file next to it."""
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    src = onnx_from_torch(folder / "tmp_src.onnx")
    model = onnx.load(str(src))
    src.unlink()
    path = folder / "ext.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0)
    return path


def set_external_location(path: Path, location: str) -> None:
    """Rewrite every external-data location in a saved model (to build hostile files)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    path.write_bytes(model.SerializeToString())


def torchscript(path: Path) -> Path:
    torch = _torch()
    torch.jit.save(torch.jit.trace(tiny_seq(), torch.randn(2, 4)), str(path))
    return path


def pt2(path: Path) -> Path:
    torch = _torch()
    torch.export.save(torch.export.export(tiny_seq(), (torch.randn(2, 4),)), str(path))
    return path


def state_dict_pt(path: Path) -> Path:
    torch = _torch()
    torch.save(tiny_seq().state_dict(), str(path))
    return path


def pickled_module(path: Path, custom: bool = False) -> Path:
    torch = _torch()
    torch.save(TinyNet() if custom else tiny_seq(), str(path))
    return path


def plain_safetensors(path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tiny_seq().state_dict().items()}, str(path))
    return path


def slimline_archive(path: Path) -> Path:
    from slimline.core.handle import TensorSpec
    from slimline.core.torchmodel import save_torch_module

    save_torch_module(tiny_seq(), path, inputs=[TensorSpec(name="x", shape=["batch", 4])],
                      outputs=[TensorSpec(name="y", shape=["batch", 3])])
    return path


def hf_folder(folder: Path) -> Path:
    """Random-weight tiny BERT classifier saved with save_pretrained (no downloads)."""
    _torch()
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                     vocab_size=99, max_position_embeddings=64, num_labels=3)
    BertForSequenceClassification(cfg).eval().save_pretrained(str(folder))
    return folder


class Canary:
    """Unpickling this creates ``self.path`` — proof that code from the file ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


_WORDS = ("the a cat dog sat on mat ran far near house tree red blue small big quick slow jumps over lazy fox "
          "bird sings song day night sun moon water fire").split()


def _write_tokenizer(folder: Path) -> None:
    """A tiny word-level BERT tokenizer (vocab.txt) saved beside the model (no downloads)."""
    from transformers import BertTokenizerFast

    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_WORDS]) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True).save_pretrained(str(folder))


def hf_bert_encoder(folder: Path) -> Path:
    """Random-weight tiny BERT encoder (AutoModel: last_hidden_state) with its tokenizer."""
    _torch()
    from transformers import BertConfig, BertModel

    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                     vocab_size=5 + len(_WORDS), max_position_embeddings=64)
    folder.mkdir(parents=True, exist_ok=True)
    BertModel(cfg).eval().save_pretrained(str(folder))
    _write_tokenizer(folder)
    return folder


def hf_causal_lm(folder: Path) -> Path:
    """Random-weight tiny GPT-2 causal LM (config architectures GPT2LMHeadModel) with a tokenizer."""
    _torch()
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=5 + len(_WORDS), n_positions=64)
    folder.mkdir(parents=True, exist_ok=True)
    GPT2LMHeadModel(cfg).eval().save_pretrained(str(folder))
    _write_tokenizer(folder)
    return folder


def sentences(path: Path, n: int = 24, seed: int = 0) -> Path:
    """A text file of ``n`` short random sentences from the tiny vocabulary."""
    import random

    rnd = random.Random(seed)
    path.write_text("\n".join(" ".join(rnd.choice(_WORDS) for _ in range(rnd.randint(3, 9))) for _ in range(n))
                    + "\n", encoding="utf-8")
    return path


def lm_corpus(path: Path, modules: tuple[str, ...] = ("json", "argparse", "collections", "pathlib", "textwrap",
                                                       "logging", "subprocess", "functools")) -> Path:
    """Real English text without downloads: the docstrings of a few standard-library modules."""
    import importlib
    import inspect

    parts: list[str] = []
    for name in modules:
        mod = importlib.import_module(name)
        for obj in [mod, *(v for _, v in sorted(vars(mod).items()) if inspect.isclass(v) or inspect.isfunction(v))]:
            doc = inspect.getdoc(obj)
            if doc and doc not in parts:
                parts.append(doc)
    path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return path


def _bpe_tokenizer(folder: Path, corpus: Path, vocab: int, bos: bool) -> Any:
    """A byte-level BPE tokenizer trained on ``corpus``; with ``bos`` it puts <s> before every text (Llama-style)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train([str(corpus)], trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(str(folder))
    return fast


def hf_llama(folder: Path, *, layers: int = 2, hidden: int = 64, vocab: int = 512, bos: bool = True,
             tie: bool = True, train_steps: int = 0, corpus: Path | None = None, seed: int = 0) -> Path:
    """A tiny Llama-family causal LM with a real BPE tokenizer, optionally trained a little on real text.

    ``train_steps`` > 0 fits it briefly to the corpus (next-token loss, ~1 s per 50 steps) so it has
    the peaked, outlier-bearing distributions quantizers meet in real LMs, unlike random weights.
    """
    torch = _torch()
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    corpus = corpus or lm_corpus(folder.parent / f"{folder.name}-corpus.txt")
    tok = _bpe_tokenizer(folder, corpus, vocab, bos)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, tie_word_embeddings=tie, bos_token_id=1, eos_token_id=2,
                      pad_token_id=0)
    model = LlamaForCausalLM(cfg)
    if train_steps:
        ids = torch.tensor(tok(corpus.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"])
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(train_steps):
            starts = torch.randint(0, max(len(ids) - 65, 1), (8,), generator=gen)
            batch = torch.stack([ids[s:s + 64] for s in starts])
            loss = model(input_ids=batch, labels=batch).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval().save_pretrained(str(folder))
    return folder
