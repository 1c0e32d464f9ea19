"""LLM pruning step: Wanda / SparseGPT / magnitude (unstructured or 2:4), decoder blocks, heads and channels.

What each method does to size and speed, said in every result:
- unstructured and N:M zero weights inside dense tensors: the file keeps its size and dense
  kernels run as fast (as slow) as before; only the compressed size drops (2:4 runs faster
  only on hardware with sparse tensor cores, which this step does not target);
- blocks and heads/channels are removed physically: fewer parameters, a smaller file and
  fewer FLOPs per token, measured by the run after this step.
Calibration text: the run's training (or calibration) text file, cut into token windows.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from slimline.core.errors import StepFailed
from slimline.core.handle import ModelHandle
from slimline.core.plugin import Plugin, PluginParams, Problem, StepContext, StepOutput
from slimline.plugins._shared import common, lm
from slimline.plugins._shared.layers import layer_patterns

UNSTRUCTURED = ("wanda", "sparsegpt", "magnitude")
CAL_ROLES = ("calibration", "train", "eval")


class LLMPruneParams(PluginParams):
    method: Literal["wanda", "sparsegpt", "magnitude", "blocks", "heads_channels"] = Field(
        "wanda", description="'wanda': |W|·‖X‖ per output row; 'sparsegpt': OBS weight updates from calibration "
        "activations; 'magnitude': smallest |W| per layer (baseline); 'blocks': remove whole decoder blocks with "
        "the lowest block influence; 'heads_channels': remove attention heads and MLP channels")
    sparsity: float = Field(0.5, ge=0.0, le=0.95, description="Fraction of each decoder Linear's weights to zero "
                            "(unstructured methods, pattern 'unstructured')")
    pattern: Literal["unstructured", "n:m"] = Field(
        "unstructured", description="'n:m': keep n of every m consecutive input weights (2:4 sparse kernels)")
    m: int = Field(4, ge=2, le=32, description="Group length (n:m)")
    n: int = Field(2, ge=1, le=31, description="Weights kept per group (n:m)")
    block_ratio: float = Field(0.25, gt=0.0, lt=1.0, description="Fraction of decoder blocks to remove, rounded "
                               "down (method 'blocks'; 25 % of 30 = 7)")
    blocks: int = Field(0, ge=0, le=1000, description="Exact number of blocks to remove; 0 = use block_ratio")
    head_ratio: float = Field(0.25, ge=0.0, le=0.9, description="Fraction of attention heads to remove per block "
                              "(method 'heads_channels')")
    head_mode: Literal["query", "kv"] = Field(
        "query", description="Grouped-query attention: 'query' removes query heads within each KV group (KV cache "
        "unchanged); 'kv' removes whole KV groups with their query heads (KV cache shrinks too)")
    mlp_ratio: float = Field(0.25, ge=0.0, le=0.9, description="Fraction of MLP channels to remove per block "
                             "(method 'heads_channels')")
    round_to: int = Field(8, ge=1, le=256, description="Keep MLP channel counts a multiple of this")
    importance: Literal["activation", "magnitude"] = Field(
        "activation", description="Heads/channels ranking: 'activation' = Σ|W_out|·‖X‖ on calibration text, "
        "'magnitude' = Σ|W_out| only")
    calibration_windows: int = Field(32, ge=1, le=4096, description="Calibration windows cut from the text file")
    window_length: int = Field(128, ge=8, le=8192, description="Tokens per calibration window")
    batch_size: int = Field(8, ge=1, le=1024, description="Calibration windows per forward pass")
    sequential: bool = Field(True, description="Feed each block the outputs of the blocks already pruned "
                             "(Wanda/SparseGPT); off = every block sees the original model's activations")
    damp: float = Field(0.01, gt=0.0, le=1.0, description="SparseGPT Hessian damping (fraction of its mean diagonal)")
    skip: list[str] = layer_patterns("Decoder Linear layer names or glob patterns to leave dense "
                                     "(embeddings and the LM head are never pruned)")

    @field_validator("n")
    @classmethod
    def _n_below_m(cls, v: int, info: Any) -> int:
        m = info.data.get("m")
        if m is not None and v >= m:
            raise ValueError(f"n ({v}) must be smaller than m ({m}); 2:4 keeps 2 of every 4")
        return v


class LLMPrune(Plugin):
    """Prune a causal LM with calibration text; honest about what shrinks and what gets faster."""

    id: ClassVar[str] = "builtin.prune_llm"
    version: ClassVar[str] = "1"
    title: ClassVar[str] = "LLM prune (Wanda / SparseGPT / 2:4 / blocks / heads)"
    category: ClassVar[str] = "prune"  # type: ignore[assignment]
    description: ClassVar[str] = (
        "Prunes a causal language model with calibration text. Unstructured or 2:4: Wanda, SparseGPT or magnitude "
        "(the baseline that collapses) zero weights of the decoder Linear layers; the file keeps its size and "
        "dense speed does not change (compressed size drops). Structured: removes whole decoder blocks by block "
        "influence (ShortGPT) or attention heads (GQA-aware) and MLP channels: a smaller, faster model. "
        "Recover with a Distill step on the same text.")
    input_formats: ClassVar[tuple[str, ...]] = ("torch",)  # type: ignore[assignment]
    output_format: ClassVar[str] = "torch"  # type: ignore[assignment]
    Params: ClassVar[type[PluginParams]] = LLMPruneParams

    def check(self, model: ModelHandle, params: PluginParams) -> list[Problem]:
        problems = self.check_format(model)
        if problems:
            return problems
        assert isinstance(params, LLMPruneParams)
        if not lm.is_causal_lm(model):
            return [Problem("this step prunes causal language models (Hugging Face *ForCausalLM folders or their "
                            "Slimline archives)", fix="use builtin.prune_magnitude or builtin.prune_structured for "
                            "other models")]
        cfg = lm.lm_config(model) or {}
        n_layers = int(cfg.get("num_hidden_layers") or cfg.get("n_layer") or 0)
        if params.method == "blocks" and n_layers and _block_count(params, n_layers) >= n_layers:
            problems.append(Problem(f"removing {_block_count(params, n_layers)} of {n_layers} blocks leaves none",
                                    field="blocks", fix="remove fewer blocks"))
        if params.method == "blocks" and n_layers and _block_count(params, n_layers) == 0:
            problems.append(Problem(f"block_ratio {params.block_ratio:g} of {n_layers} blocks rounds down to 0",
                                    field="block_ratio", fix="raise block_ratio or set blocks"))
        if params.method in ("blocks", "heads_channels") and lm.archive_replacements(model):
            problems.append(Problem("this model has replaced (low-rank) layers; structured pruning must come first",
                                    field="method", fix="move the low-rank step after this one"))
        if params.method == "heads_channels" and params.head_ratio == 0 and params.mlp_ratio == 0:
            problems.append(Problem("head_ratio and mlp_ratio are both 0: nothing to remove", field="head_ratio"))
        return problems

    def run(self, model: ModelHandle, params: PluginParams, ctx: StepContext) -> StepOutput:
        import torch

        assert isinstance(params, LLMPruneParams)
        errors = [p for p in self.check(model, params) if p.severity == "error"]
        if errors:
            raise StepFailed(errors[0].message, subject=f"{self.id}.{errors[0].field or 'model'}",
                             hint=errors[0].fix or "change the step's parameters")
        old_threads = torch.get_num_threads()
        if ctx.threads:
            torch.set_num_threads(int(ctx.threads))
        try:
            return self._run(model, params, ctx)
        finally:
            torch.set_num_threads(old_threads)

    def _run(self, model: ModelHandle, p: LLMPruneParams, ctx: StepContext) -> StepOutput:
        import torch

        t0 = time.perf_counter()
        ctx.cancel.raise_if_cancelled()
        needs_text = p.method in ("wanda", "sparsegpt", "blocks") or (
            p.method == "heads_channels" and p.importance == "activation")
        ids, src, warnings, notes = None, None, [], []
        if needs_text:
            win, src = lm.windows(ctx, model, CAL_ROLES, length=p.window_length, count=p.calibration_windows,
                                  what=f"{p.method} calibration")
            ids = win.ids
            notes.append(f"calibration: {win.describe()} (the {src.role} data)")
            if src.overlaps_eval:
                warnings.append("calibrating on the text the evaluation scores (too short to calibrate past it): "
                                "the figures measured after this step are optimistic; pass a separate "
                                "--train-data text file")
            elif src.same_as_eval:
                notes.append("calibration windows start after the text the evaluation scores")
        ctx.progress(0.02, "loading model")
        device = _device(ctx, notes)
        module = lm.load_lm(model).to(device)
        params_before = sum(t.numel() for t in module.parameters())
        check = ctx.cancel.raise_if_cancelled
        tables: dict[str, list[dict[str, Any]]] = {}
        metrics: dict[str, float] = {"params_before": float(params_before)}
        calib = (lambda f, m: ctx.progress(0.05 + 0.75 * f, m))
        with torch.no_grad():
            if p.method in UNSTRUCTURED:
                self._unstructured(module, ids, p, device, check, calib, metrics, tables, notes)
            elif p.method == "blocks":
                self._blocks(module, ids, p, device, check, metrics, tables, notes)
            else:
                self._width(module, ids, p, device, check, metrics, tables, notes, warnings)
        params_after = sum(t.numel() for t in module.parameters())
        metrics.update(params_after=float(params_after), param_ratio=params_after / max(params_before, 1))
        ctx.cancel.raise_if_cancelled()
        ctx.progress(0.85, "saving")
        tok_dir = _tokenizer_dir_or_none(model, ctx)
        probe = ids[:1] if ids is not None else None
        expected = _logits(module, probe, device) if probe is not None else None
        out = lm.save_lm(module, model, ctx, tokenizer_dir=tok_dir, name="pruned",
                         extra_meta={"pruned_with": f"{self.id}:{p.method}"})
        if probe is not None and expected is not None:
            _verify_reload(out, probe, expected)
        self._size(model, out, p, metrics, notes)
        metrics["seconds"] = time.perf_counter() - t0
        ctx.progress(1.0, "done")
        return StepOutput(model=out, metrics=metrics, notes=notes, warnings=warnings, tables=tables)

    # --- methods --------------------------------------------------------------------------
    def _unstructured(self, module: Any, ids: np.ndarray | None, p: LLMPruneParams, device: str, check: Any,
                      progress: Any, metrics: dict[str, float], tables: dict[str, Any], notes: list[str]) -> None:
        from slimline.plugins.prune.llm_sparse import SparseSpec, prune_decoder

        spec = SparseSpec(method=p.method, sparsity=p.sparsity, pattern=p.pattern, n=p.n, m=p.m, skip=p.skip,
                          damp=p.damp, sequential=p.sequential)
        rows, skipped = prune_decoder(module, ids, spec, batch_size=p.batch_size, device=device,
                                      check_cancel=check, progress=progress)
        pruned = [r for r in rows if r.status == "pruned"]
        zeros = sum(r.sparsity * int(np.prod(r.shape)) for r in pruned)
        total = sum(int(np.prod(r.shape)) for r in pruned)
        all_params = sum(t.numel() for t in module.parameters())
        metrics.update(sparsity=zeros / max(total, 1), model_sparsity=zeros / max(all_params, 1),
                       layers_pruned=float(len(pruned)), layers_skipped=float(len(rows) - len(pruned) + len(skipped)))
        how = f"{p.n}:{p.m} pattern" if p.pattern == "n:m" else f"{p.sparsity:.0%} per layer"
        notes.append(f"{p.method}: {metrics['sparsity']:.1%} of the weights of {len(pruned)} decoder Linear layers "
                     f"are zero ({how}; {'sequential, ' if p.sequential and p.method != 'magnitude' else ''}"
                     f"{metrics['model_sparsity']:.1%} of all parameters: embeddings, LM head and norms stay dense).")
        tables["sparsity"] = [{"layer": r.layer, "shape": r.shape, "sparsity": round(r.sparsity, 4),
                               "status": r.status, "reason": r.reason} for r in rows] + [
            {"layer": k, "shape": [], "sparsity": None, "status": "skipped", "reason": v} for k, v in skipped.items()]

    def _blocks(self, module: Any, ids: np.ndarray | None, p: LLMPruneParams, device: str, check: Any,
                metrics: dict[str, float], tables: dict[str, Any], notes: list[str]) -> None:
        from slimline.plugins.prune import llm_calib, llm_struct

        _, blocks = lm.decoder_blocks(module)
        n = len(blocks)
        count = _block_count(p, n)
        assert ids is not None
        infl = llm_calib.block_influence(module, blocks, lm.id_batches(ids, p.batch_size, device), check)
        drop = llm_struct.blocks_to_drop(infl, count)
        llm_struct.remove_blocks(module, drop)
        metrics.update(blocks_before=float(n), blocks_after=float(n - len(drop)), blocks_removed=float(len(drop)))
        notes.append(f"Removed {len(drop)} of {n} decoder blocks with the lowest block influence "
                     f"(1 − cos(block input, output) on the calibration tokens, ShortGPT): "
                     f"{', '.join(str(i) for i in drop)}; config num_hidden_layers = {n - len(drop)}.")
        tables["blocks"] = [{"block": i, "influence": round(float(v), 6), "status": "removed" if i in drop else "kept"}
                            for i, v in enumerate(infl)]

    def _width(self, module: Any, ids: np.ndarray | None, p: LLMPruneParams, device: str, check: Any,
               metrics: dict[str, float], tables: dict[str, Any], notes: list[str], warnings: list[str]) -> None:
        from slimline.plugins.prune import llm_calib, llm_struct

        path, blocks = lm.decoder_blocks(module)
        parts = [llm_struct.llama_parts(b) for b in blocks]
        plan = llm_struct.plan_width(module.config, p.head_ratio, p.mlp_ratio, p.head_mode, p.round_to)
        sq: dict[str, Any] = {}
        if p.importance == "activation":
            assert ids is not None
            lins = {}
            for i, (attn, mlp) in enumerate(parts):
                lins[f"{i}.o"] = attn.o_proj
                lins[f"{i}.down"] = mlp.down_proj
            sq = llm_calib.input_sq_norms(module, blocks, lins, lm.id_batches(ids, p.batch_size, device), check)
        for i, block in enumerate(blocks):
            check()
            llm_struct.prune_block_width(block, plan, p.head_mode, sq.get(f"{i}.o"), sq.get(f"{i}.down"))
        llm_struct.apply_width_config(module.config, plan)
        metrics.update(heads_before=float(plan.heads), heads_after=float(plan.new_heads),
                       kv_heads_before=float(plan.kv_heads), kv_heads_after=float(plan.new_kv_heads),
                       mlp_channels_before=float(plan.channels), mlp_channels_after=float(plan.new_channels))
        notes.append(f"Per block ({len(blocks)} blocks, {p.importance} importance): attention heads "
                     f"{plan.heads} → {plan.new_heads} (KV heads {plan.kv_heads} → {plan.new_kv_heads}, "
                     f"head_mode '{p.head_mode}'), MLP channels {plan.channels} → {plan.new_channels}.")
        if plan.new_heads == plan.heads and p.head_ratio > 0:
            group = plan.heads // plan.kv_heads
            warnings.append(f"head_ratio {p.head_ratio:g} removes no head: with {group} query heads per KV group "
                            "it rounds to 0 per group; raise it or use head_mode 'kv'")
        tables["width"] = [{"part": "attention heads", "before": plan.heads, "after": plan.new_heads},
                           {"part": "KV heads", "before": plan.kv_heads, "after": plan.new_kv_heads},
                           {"part": "MLP channels", "before": plan.channels, "after": plan.new_channels}]
        del path

    # --- report ---------------------------------------------------------------------------
    def _size(self, src: ModelHandle, out: ModelHandle, p: LLMPruneParams, metrics: dict[str, float],
              notes: list[str]) -> None:
        in_files, out_files = _weight_files(src), _weight_files(out)
        b_in, b_out = common.files_bytes(in_files), common.files_bytes(out_files)
        metrics.update(bytes_before=float(b_in), bytes=float(b_out))
        if p.method in UNSTRUCTURED:
            z_in, z_out = _zip_bytes_cached(in_files), common.zip_bytes(out_files)
            metrics.update(zip_bytes_before=float(z_in), zip_bytes=float(z_out))
            notes.append(f"File size unchanged: {b_in:,} → {b_out:,} bytes (zeros are stored densely); "
                         f"zip-compressed (zlib 6) {z_in:,} → {z_out:,} bytes ({z_out / max(z_in, 1):.2f}×).")
            notes.append("Speed does not change: dense CPU/GPU kernels multiply the zeros too"
                         + (" (2:4 is faster only with sparse tensor-core kernels, not used here)."
                            if p.pattern == "n:m" else ".")
                         + " For a smaller, faster model use method 'blocks' or 'heads_channels'.")
        else:
            notes.append(f"Weights {b_in:,} → {b_out:,} bytes ({b_out / max(b_in, 1):.2f}×), parameters "
                         f"{int(metrics['params_before']):,} → {int(metrics['params_after']):,}; the speed-up is "
                         "measured by the run after this step, not estimated.")
        notes.append("Perplexity rises after pruning; add a Distill step on a text file to recover it.")


_ZIP_CACHE: dict[tuple[tuple[str, int, int], ...], int] = {}


def _zip_bytes_cached(files: list[Path]) -> int:
    """Compressed size of the (unchanged) input, computed once per process: it takes ~30 s for 0.5 GB."""
    key = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if key not in _ZIP_CACHE:
        _ZIP_CACHE[key] = common.zip_bytes(files)
    return _ZIP_CACHE[key]


def _block_count(p: LLMPruneParams, n_layers: int) -> int:
    return p.blocks if p.blocks else int(np.floor(p.block_ratio * n_layers + 1e-9))


def _device(ctx: StepContext, notes: list[str]) -> str:
    import torch

    want = str(ctx.device or "cpu")
    if want.startswith("cuda"):
        if torch.cuda.is_available():
            return want
        notes.append("CUDA was asked for but is not available: ran on the CPU")
    return "cpu"


def _tokenizer_dir_or_none(model: ModelHandle, ctx: StepContext) -> Path | None:
    try:
        return lm.tokenizer_folder(model, ctx)
    except StepFailed:
        return None


def _weight_files(h: ModelHandle) -> list[Path]:
    return [f for f in common.model_files(h) if f.suffix in (".safetensors", ".bin")]


def _logits(module: Any, ids: np.ndarray, device: str) -> Any:
    import torch

    with torch.no_grad():
        return module(input_ids=torch.from_numpy(ids).to(device), use_cache=False).logits.float().cpu()


def _verify_reload(out: ModelHandle, ids: np.ndarray, expected: Any) -> None:
    """The saved model must rebuild (from its own config) to the same logits; never pass a broken file."""
    import torch

    reloaded = lm.load_lm(out)
    got = _logits(reloaded, ids, "cpu")
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-3, atol=1e-3):
        diff = float((got - expected).abs().max()) if got.shape == expected.shape else float("nan")
        raise StepFailed(f"the pruned model does not reload to the same logits (max diff {diff:.3g})",
                         subject=out.path, hint="report this model; meanwhile use another method")
