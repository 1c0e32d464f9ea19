"""Convert to ONNX for causal language models: the genai model builder (KV cache), or a logits-only export.

The builder's folder is what deploys (KV cache, generate API), so it is the default. The
plain torch.onnx export of a logits-only wrapper is the alternative, and the fallback when
the builder does not know the architecture. Either way the ONNX is checked against torch on
token windows (logits) and greedy tokens before it becomes the step's output.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from slimline.core.errors import SlimlineError, StepFailed
from slimline.core.handle import ModelHandle
from slimline.core.plugin import StepContext, StepOutput

SUBJECT = "Convert to ONNX"


def probe_data(ctx: StepContext) -> Any:
    """A text file (cut into perplexity-style windows) or the evaluation rows; None → random token ids."""
    ds = getattr(ctx.data, "eval", None) if ctx.data is not None else None
    if ds is None:
        return None
    src = Path(getattr(ds, "source", "") or "")
    return src if src.suffix.lower() in (".txt", ".text") and src.is_file() else ds


def convert_lm(model: ModelHandle, params: Any, ctx: StepContext, cfg: dict[str, Any]) -> StepOutput:
    """Build (or export) the ONNX LM, verify it against torch, return its handle with the checks as notes."""
    from slimline.core.lm.convert import (
        BuilderUnsupported,
        architecture,
        build_genai_folder,
        export_logits_onnx,
        hf_folder_for,
        tokenizer_folder,
    )
    from slimline.core.lm.genai import GenaiError, genai_available, genai_generator
    from slimline.core.lm.parity import (
        check_lm_parity,
        probe_limits,
        probe_set,
        quantized_kernels,
        session_lm_runner,
        torch_lm_runner,
    )
    from slimline.core.models import load_eager_module, open_model
    from slimline.core.onnx_export import OnnxExportFailed
    from slimline.core.runtime import open_session

    arch = architecture(cfg)
    notes: list[str] = []
    warnings: list[str] = []
    method = params.lm_method
    if method == "genai" and not genai_available():
        raise StepFailed("the onnxruntime-genai model builder is not installed", subject=SUBJECT,
                         hint="pip install 'slimline[llm]', or set lm_method to 'logits' (no KV cache)")
    source_dir = ctx.source_model.path if ctx.source_model is not None else None
    tok_dir = tokenizer_folder(model.path, source_dir)
    ctx.progress(0.02, "loading the torch model")
    module = load_eager_module(model)
    ctx.cancel.raise_if_cancelled()
    out_dir = ctx.work_dir / "onnx"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    t0 = time.perf_counter()
    onnx_path: Path | None = None
    if method == "genai":
        ctx.progress(0.1, f"onnxruntime-genai model builder ({params.lm_precision}, KV cache)")
        try:
            hf_dir = hf_folder_for(model, ctx.work_dir, [tok_dir, source_dir])
            try:
                folder = build_genai_folder(hf_dir, out_dir, params.lm_precision, log=ctx.log, cancel=ctx.cancel,
                                            context_length=params.lm_context_length or None)
            finally:
                if hf_dir != Path(model.path):  # the saved copy of an archive was only the builder's input
                    _remove(hf_dir)
            from slimline.core.lm.genai import context_length_of, genai_onnx_name

            onnx_path = folder / genai_onnx_name(folder)
            served = context_length_of(folder)
            notes.append(f"onnxruntime-genai model builder: {arch} → {params.lm_precision} KV-cache ONNX with "
                         f"genai_config.json and the tokenizer beside it, in {time.perf_counter() - t0:.1f} s")
            notes.append(_context_note(served, cfg, params.lm_context_length))
        except BuilderUnsupported as exc:
            notes.append(f"{exc.message}: exported a logits-only ONNX instead (no KV cache; generation re-runs "
                         "the whole sequence per token)")
            warnings.append(f"{arch}: no KV-cache ONNX (the model builder does not support it); logits-only export")
            method = "logits"
        except GenaiError as exc:
            raise StepFailed(exc.message, subject=SUBJECT,
                             hint="set lm_method to 'logits' for a plain logits export, or report the model") from exc
    if method == "logits":
        ctx.progress(0.1, "torch.onnx export of a logits-only wrapper (use_cache=False)")
        out_dir.mkdir(parents=True, exist_ok=True)
        onnx_path = out_dir / "model.onnx"
        t1 = time.perf_counter()
        try:
            res = export_logits_onnx(module, onnx_path, vocab_size=int(cfg.get("vocab_size") or 2),
                                     opset=params.opset)
        except OnnxExportFailed as exc:
            raise StepFailed(exc.message, hint=exc.hint, subject=SUBJECT) from exc
        if tok_dir is not None:
            from slimline.core.lm.convert import copy_tokenizer

            copy_tokenizer(tok_dir, out_dir)
        notes.append(f"torch.onnx export (torch.export-based, opset {res.opset}) of {arch} returning logits with "
                     f"use_cache=False; batch and sequence dynamic; {time.perf_counter() - t1:.1f} s")
    assert onnx_path is not None
    ctx.cancel.raise_if_cancelled()
    handle = open_model(onnx_path)
    ctx.progress(0.6, "checking the ONNX LM against torch (logits on windows, greedy tokens)")
    try:
        length, new_tokens = probe_limits(handle.meta.get("kv_cache", {}).get("context_length"), params.lm_new_tokens)
        probes = probe_set(probe_data(ctx), tokenizer_dir=tok_dir, vocab_size=int(cfg.get("vocab_size") or 2),
                           windows=params.lm_parity_windows, length=length)
        threads = int(ctx.threads or 0)
        session = open_session(handle, threads=threads)
        generate = genai_generator(onnx_path.parent, threads) if handle.meta.get("kv_cache", {}).get("genai_folder") \
            else None

        precision = params.lm_precision if method == "genai" else "fp32"
        parity = check_lm_parity(torch_lm_runner(module), session_lm_runner(session), probes, precision=precision,
                                 runtime="onnxruntime" + (" + onnxruntime-genai generate" if generate else ""),
                                 source_runtime="torch (eager, no cache)", generate=generate,
                                 new_tokens=new_tokens, cancel=ctx.cancel,
                                 quantized=quantized_kernels(onnx_path))
    except SlimlineError as exc:
        _remove(out_dir)
        from slimline.core.lm.convert import FP16_HINT

        hint = (FP16_HINT.format(fp32="lm_precision fp32") if method == "genai" and params.lm_precision == "fp16"
                else exc.hint or "report the model")
        raise StepFailed(f"the converted LM could not be checked: {exc.message}", subject=SUBJECT, hint=hint) from exc
    notes += parity.notes()
    if not parity.passed:
        _remove(out_dir)
        raise StepFailed("the ONNX LM does not match torch: " + "; ".join(parity.failures), subject=SUBJECT,
                         hint="try the other lm_method (or fp32), and report the model if it persists")
    lg = parity.logits
    metrics = {"parity_max_abs": lg.max_abs_error, "parity_max_rel": lg.max_rel_error,
               "parity_top1_agreement": lg.top1_agreement, "greedy_matched": float(parity.greedy.matched),
               "greedy_tokens": float(parity.greedy.new_tokens)}
    if parity.greedy.decode_tokens_per_s:
        metrics["genai_decode_tokens_per_s"] = parity.greedy.decode_tokens_per_s
    return StepOutput(model=handle, notes=notes, warnings=warnings, metrics=metrics)


def _context_note(served: int | None, cfg: dict[str, Any], asked: int) -> str:
    """The report line saying how many positions the export serves, and why that many."""
    from slimline.core.lm.builder_compat import model_context_length

    own = model_context_length(cfg)
    if not served:
        return "context length: not stated in genai_config.json"
    if asked and served < (own or served + 1):
        return (f"context length: serves at most {served} tokens (prompt + generation; lm_context_length), "
                f"not the model's {own}: rotary tables and KV-cache allocation sized for {served} positions")
    return f"context length: serves at most {served} tokens (the model's max_position_embeddings)"


def _remove(folder: Path) -> None:
    """Nothing half-verified stays behind as if it were the step's output."""
    shutil.rmtree(folder, ignore_errors=True)
