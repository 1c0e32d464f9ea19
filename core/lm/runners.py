"""Run a language model two ways: logits of whole windows (perplexity) and greedy generation (speed).

One small protocol, :class:`LMRunner`, over the forms an LM takes in a pipeline:

- a torch causal LM (HF folder, Slimline archive of one): logits from one forward pass,
  generation through ``generate`` with its KV cache, prefill and decode timed apart by a
  streamer that notes when each token comes out;
- the genai model builder's folder (KV-cache ONNX + ``genai_config.json``): logits in
  onnxruntime with an empty past, generation through onnxruntime-genai (KV cache);
- a logits-only ONNX (``input_ids`` [+ ``attention_mask``, ``position_ids``] → logits):
  generation re-runs the whole sequence for every new token, and says so (``kv_cache``
  False): its tokens/s is not a deployable figure.

Decode speed is always "new tokens / seconds after the prompt pass", so engines compare
on the same definition. Threads are set here and recorded (torch.set_num_threads, the
onnxruntime session, the genai overlay). Models are loaded fresh and released by
``close()``, never kept in a cache: a run measures many LM variants one after another.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from slimline.core.errors import DataError, ModelLoadError
from slimline.core.handle import ModelHandle
from slimline.core.lm.genai import Generation

NO_KV_CACHE = "no KV cache: the whole sequence is re-run for every new token"
_ID_INPUTS = ("input_ids",)
_FILLABLE = ("attention_mask", "position_ids")


class LMRunner(Protocol):
    """What the LM evaluation needs of a model, whatever runs it."""

    engine: str          # what computes the logits, in words (library, version, form of the model)
    threads: int         # intra-op threads actually used
    kv_cache: bool       # generation reuses past keys/values (False: re-runs the sequence per token)

    def logits(self, ids: np.ndarray) -> np.ndarray:
        """``ids [n, T]`` int64 → float32 logits ``[n, T, V]`` (position t predicts token t+1)."""
        ...

    def generate(self, prompt_ids: list[int], max_new: int) -> Generation:
        """Greedy continuation (stops at EOS), prefill and decode timed apart."""
        ...

    def close(self) -> None:
        """Release the model (its memory)."""
        ...


# --------------------------------------------------------------------------- generation without a cache


def generate_by_rerun(logits_last: Callable[[list[int]], np.ndarray], prompt_ids: list[int], max_new: int,
                      eos: set[int], *, threads: int, engine: str, max_len: int | None = None) -> Generation:
    """Greedy decoding by running the whole sequence for every token (no KV cache).

    The first pass over the prompt is the prefill; every later pass counts as decode.
    """
    seq = list(map(int, prompt_ids))
    tokens: list[int] = []
    t0 = time.perf_counter()
    t_first = t0
    while len(tokens) < max_new and (max_len is None or len(seq) < max_len):
        nxt = int(np.argmax(logits_last(seq)))
        if not tokens:
            t_first = time.perf_counter()
        tokens.append(nxt)
        seq.append(nxt)
        if nxt in eos:
            break
    t_end = time.perf_counter()
    return Generation(prompt_tokens=len(prompt_ids), tokens=tokens, prefill_ms=(t_first - t0) * 1000.0,
                      decode_tokens_per_s=len(tokens) / max(t_end - t_first, 1e-9), threads=threads,
                      engine=f"{engine} — {NO_KV_CACHE}")


# --------------------------------------------------------------------------- torch


class _Clock:
    """A ``generate`` streamer that only notes the time each batch of tokens comes out."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: Any) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


class TorchLMRunner:
    """A torch causal LM; HF models generate with their KV cache, other modules by re-running."""

    kv_cache: bool

    def __init__(self, module: Any, *, threads: int, device: str = "cpu", eos: set[int] | None = None,
                 pad_id: int | None = None) -> None:
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        self.device = torch.device(device)
        self.module = module.to(self.device) if hasattr(module, "to") else module
        self.eos = set(eos or ())
        self.pad_id = pad_id
        self.hf = hasattr(module, "generate") and hasattr(module, "config")
        self.kv_cache = self.hf
        dtype = next((p.dtype for p in module.parameters()), None) if hasattr(module, "parameters") else None
        dname = str(dtype).replace("torch.", "") if dtype is not None else "?"
        self.version = torch.__version__.split("+")[0]
        self.engine = f"torch {self.version} ({type(module).__name__}, {dname}, {self.device.type})"

    def _forward(self, ids: Any) -> Any:
        import torch

        with torch.inference_mode():
            if self.hf:
                out = self.module(input_ids=ids, use_cache=False)
                return out.logits
            out = self.module(ids)
            if isinstance(out, torch.Tensor):
                return out
            if hasattr(out, "logits"):
                return out.logits
            if isinstance(out, (list, tuple)) and out and isinstance(out[0], torch.Tensor):
                return out[0]
            raise DataError(f"the model returned {type(out).__name__}, not logits", subject="outputs")

    def logits(self, ids: np.ndarray) -> np.ndarray:
        import torch

        if torch.get_num_threads() != self.threads:  # torch threads are process-wide
            torch.set_num_threads(self.threads)
        t = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)).to(self.device)
        out = self._forward(t)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return out.detach().float().cpu().numpy()

    def generate(self, prompt_ids: list[int], max_new: int) -> Generation:
        import torch

        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        if not self.hf:
            return generate_by_rerun(lambda seq: self.logits(np.asarray([seq]))[0, -1], prompt_ids, max_new,
                                     self.eos, threads=self.threads, engine=self.engine)
        from transformers import GenerationConfig

        eos = sorted(self.eos) or None
        cfg = GenerationConfig(max_new_tokens=int(max_new), do_sample=False, num_beams=1, use_cache=True,
                               eos_token_id=eos, pad_token_id=self.pad_id if self.pad_id is not None
                               else (eos[0] if eos else 0))
        ids = torch.tensor([list(map(int, prompt_ids))], dtype=torch.int64, device=self.device)
        clock = _Clock()
        with torch.inference_mode():
            out = self.module.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=cfg,
                                       streamer=clock)
        tokens = [int(x) for x in out[0, ids.shape[1]:].tolist()]
        # times[0]: the prompt handed over; times[1]: the first new token (prompt pass done); times[-1]: the last
        t = clock.times
        prefill = (t[1] - t[0]) if len(t) >= 2 else 0.0
        decode_s = (t[-1] - t[1]) if len(t) >= 3 else 0.0
        return Generation(prompt_tokens=len(prompt_ids), tokens=tokens, prefill_ms=prefill * 1000.0,
                          decode_tokens_per_s=len(tokens) / decode_s if decode_s > 0 else 0.0,
                          threads=self.threads, engine=f"torch {self.version} generate (KV cache)")

    def close(self) -> None:
        self.module = None


# --------------------------------------------------------------------------- onnxruntime


def _ort_version() -> str:
    import onnxruntime as ort

    return str(ort.__version__)


class OnnxLogitsRunner:
    """A logits-only ONNX in onnxruntime; generation re-runs the sequence (no KV cache).

    A fixed sequence length is padded on the right (a causal model's earlier positions
    never see the padding); a fixed batch is fed in chunks of that size.
    """

    kv_cache = False

    def __init__(self, path: str | Path, *, threads: int, device: str = "cpu", eos: set[int] | None = None,
                 pad_id: int = 0) -> None:
        from slimline.core.runtime import ort_inference_session, resolve_threads

        self.path = Path(path)
        self.threads = resolve_threads(threads)
        self.session: Any = ort_inference_session(self.path, threads=self.threads, device=device)
        self.eos = set(eos or ())
        self.pad_id = pad_id
        inputs = {i.name: i for i in self.session.get_inputs()}
        if "input_ids" not in inputs:
            raise ModelLoadError(f"the ONNX has no 'input_ids' input (it takes {sorted(inputs)})",
                                 subject=str(self.path), hint="export the language model with input_ids → logits")
        other = [n for n in inputs if n not in _ID_INPUTS + _FILLABLE]
        if other:
            raise ModelLoadError(f"the ONNX also needs {other}; Slimline feeds input_ids, attention_mask and "
                                 "position_ids to a language model", subject=str(self.path),
                                 hint="export it without a KV cache (logits only), or with the genai model builder")
        self.inputs = list(inputs)
        shape = list(inputs["input_ids"].shape or [])
        self.fixed_batch = shape[0] if len(shape) > 0 and isinstance(shape[0], int) and shape[0] > 0 else None
        self.fixed_seq = shape[1] if len(shape) > 1 and isinstance(shape[1], int) and shape[1] > 0 else None
        self.max_len = self.fixed_seq
        outs = [o.name for o in self.session.get_outputs()]
        self.output = "logits" if "logits" in outs else outs[0]
        self.engine = f"onnxruntime {_ort_version()} ({self.path.name}, logits only)"

    def _run(self, ids: np.ndarray) -> np.ndarray:
        n, t = ids.shape
        feeds: dict[str, np.ndarray] = {"input_ids": ids.astype(np.int64)}
        if "attention_mask" in self.inputs:
            feeds["attention_mask"] = np.ones((n, t), dtype=np.int64)
        if "position_ids" in self.inputs:
            feeds["position_ids"] = np.broadcast_to(np.arange(t, dtype=np.int64), (n, t)).copy()
        return np.asarray(self.session.run([self.output], feeds)[0])

    def logits(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        n, t = ids.shape
        if self.fixed_seq is not None:
            if t > self.fixed_seq:
                raise DataError(f"the ONNX takes sequences of exactly {self.fixed_seq} tokens; a window has {t}",
                                subject=str(self.path),
                                hint=f"set evaluation.lm.window_length to at most {self.fixed_seq - 1}, or export "
                                     "the model with a dynamic sequence length")
            ids = np.concatenate([ids, np.full((n, self.fixed_seq - t), self.pad_id, dtype=np.int64)], axis=1)
        step = self.fixed_batch or n
        parts = []
        for s in range(0, n, step):
            chunk = ids[s:s + step]
            if self.fixed_batch and len(chunk) < self.fixed_batch:
                fill = np.repeat(chunk[-1:], self.fixed_batch - len(chunk), axis=0)
                parts.append(self._run(np.concatenate([chunk, fill]))[: len(chunk)])
            else:
                parts.append(self._run(chunk))
        out = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if out.ndim != 3:
            raise DataError(f"output '{self.output}' has shape {list(out.shape)}, not [batch, sequence, vocabulary]",
                            subject=str(self.path), hint="this ONNX does not return next-token logits")
        return out[:, :t].astype(np.float32, copy=False)

    def generate(self, prompt_ids: list[int], max_new: int) -> Generation:
        return generate_by_rerun(lambda seq: self.logits(np.asarray([seq]))[0, -1], prompt_ids, max_new, self.eos,
                                 threads=self.threads, engine=f"onnxruntime {_ort_version()}", max_len=self.max_len)

    def close(self) -> None:
        self.session = None


class GenaiRunner:
    """The genai model builder's folder: logits in onnxruntime (empty past), generation via the generate API."""

    def __init__(self, path: str | Path, folder: Path, *, threads: int, eos: set[int] | None = None) -> None:
        from slimline.core.lm.genai import genai_available, genai_onnx_name, head_size_of, sliding_window_of
        from slimline.core.runtime import resolve_threads

        self.path = Path(path) if Path(path).is_file() else folder / genai_onnx_name(folder)
        self.folder = folder
        self.threads = resolve_threads(threads)
        self.eos = set(eos or ())
        self.head_size = head_size_of(folder)
        self.sliding_window = sliding_window_of(folder)
        self.session: Any = None
        self.model: Any = None
        self.notes: list[str] = []
        configured = genai_onnx_name(folder)
        self.kv_cache = genai_available() and configured == self.path.name
        if not genai_available():
            self.notes.append("onnxruntime-genai is not installed: generation re-runs the sequence per token")
        elif configured != self.path.name:
            self.notes.append(f"genai_config.json names {configured}, not {self.path.name}: generation re-runs "
                              "the sequence per token instead of using the generate API")
        self.engine = f"onnxruntime {_ort_version()} ({self.path.name}, KV-cache ONNX run with an empty past)"

    def _open(self) -> Any:
        if self.session is None:
            from slimline.core.runtime import ort_inference_session

            self.session = ort_inference_session(self.path, threads=self.threads)
            self._inputs = self.session.get_inputs()
        return self.session

    def logits(self, ids: np.ndarray) -> np.ndarray:
        from slimline.core.lm.genai import empty_past_feeds

        sess = self._open()
        feeds = empty_past_feeds(self._inputs, np.asarray(ids, dtype=np.int64), self.head_size,
                                 self.sliding_window)
        return np.asarray(sess.run(["logits"], feeds)[0]).astype(np.float32, copy=False)

    def generate(self, prompt_ids: list[int], max_new: int) -> Generation:
        if not self.kv_cache:
            return generate_by_rerun(lambda seq: self.logits(np.asarray([seq]))[0, -1], prompt_ids, max_new,
                                     self.eos, threads=self.threads, engine=f"onnxruntime {_ort_version()}")
        from slimline.core.lm.genai import genai_generate, genai_model

        if self.model is None:
            self.session = None  # the generate API loads its own copy of the weights: never hold both
            self.model = genai_model(self.folder, self.threads)
        return genai_generate(self.model, prompt_ids, max_new, threads=self.threads)

    def close(self) -> None:
        self.session = None
        self.model = None


# --------------------------------------------------------------------------- choosing


def has_kv_inputs(path: str | Path) -> bool:
    """Whether an ONNX decoder takes past keys/values (read from the graph's inputs, no weights loaded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(i.name.startswith("past_") for i in model.graph.input)


def open_runner(handle: ModelHandle, *, threads: int = 0, device: str = "cpu", eos: set[int] | None = None,
                pad_id: int | None = None) -> LMRunner:
    """The runner for ``handle``: genai folder, logits-only ONNX, or torch."""
    from slimline.core.lm.genai import genai_folder_of

    if handle.family == "onnx" or handle.format == "onnx":
        folder = genai_folder_of(handle.path)
        if folder is not None or has_kv_inputs(handle.path):
            if folder is None:
                raise ModelLoadError("this ONNX takes past keys/values but has no genai_config.json beside it",
                                     subject=handle.path, hint="keep the genai model builder's folder together "
                                                               "(model.onnx, genai_config.json, tokenizer files)")
            return GenaiRunner(handle.path, folder, threads=threads, eos=eos)
        return OnnxLogitsRunner(handle.path, threads=threads, device=device, eos=eos, pad_id=pad_id or 0)
    if handle.family == "torch":
        from slimline.core.models import load_torch_runnable

        module = load_torch_runnable(handle)
        if hasattr(module, "eval"):
            module.eval()
        return TorchLMRunner(module, threads=threads, device=device, eos=eos, pad_id=pad_id)
    raise ModelLoadError(f"a {handle.format} model holds weights only and cannot run", subject=handle.path,
                         hint="open the language model as a Hugging Face folder or an ONNX file")


__all__ = ["NO_KV_CACHE", "GenaiRunner", "LMRunner", "OnnxLogitsRunner", "TorchLMRunner", "generate_by_rerun",
           "has_kv_inputs", "open_runner"]
