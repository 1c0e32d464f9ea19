"""The shared run loop: pre-process, quantize, verify, retry safer, measure, explain.

Each concrete step only says how to quantize once (``_quantize``) and which safer
settings exist; the loop guarantees that no model below the budget is passed on,
that bigger/slower results are flagged with a reason, and that nothing half-written
is left behind (intermediates live in a temp folder, the output is written atomically).
"""
from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from slimline.core.errors import StepFailed
from slimline.core.fsutil import atomic_path
from slimline.core.handle import ModelHandle
from slimline.core.plugin import Plugin, Problem, StepContext, StepOutput
from slimline.plugins.quantize import arithmetic, evaluate, prep
from slimline.plugins.quantize.params import GuardrailParams


@dataclass(frozen=True)
class Attempt:
    """One set of quantizer settings. ``why`` says what changed from the previous attempt."""

    per_channel: bool
    reduce_range: bool
    op_types: tuple[str, ...]
    exclude: tuple[str, ...]
    why: str = "requested settings"
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def describe(self) -> str:
        parts = [f"per_channel={self.per_channel}", f"reduce_range={self.reduce_range}"]
        if self.op_types:
            parts.append("op_types=" + ",".join(self.op_types))
        if self.exclude:
            parts.append(f"excluded {len(self.exclude)} node(s): " + ", ".join(self.exclude[:6])
                         + (" …" if len(self.exclude) > 6 else ""))
        return "; ".join(parts)


class QuantizeBase(Plugin):
    """Common machinery for the ONNX quantize steps (not registered itself)."""

    category: ClassVar = "quantize"
    input_formats: ClassVar = ("onnx",)
    output_format: ClassVar = "onnx"
    # Ops considered "core" when retrying with fewer op types.
    core_ops: ClassVar[tuple[str, ...]] = ("MatMul", "Gemm", "Conv")
    # The parameter that leaves layers in float (slimline.core.sensitivity: click-to-exclude, the search).
    exclusion_field: ClassVar[str] = "nodes_to_exclude"
    supports_per_channel: ClassVar[bool] = True
    optimize_first: ClassVar[bool] = True
    # Opset the pre-processing upgrades to (per-channel QDQ needs 13); FP16 needs no upgrade.
    min_opset: ClassVar[int] = prep.MIN_OPSET

    # --- hooks -------------------------------------------------------------------------------
    def _first_attempt(self, params: Any, model_ops: dict[str, int]) -> Attempt:
        raise NotImplementedError

    def _quantize(self, src: Path, dst: Path, attempt: Attempt, params: Any, ctx: StepContext) -> None:
        raise NotImplementedError

    def _explain(self, params: Any, attempt: Attempt, q_ops: dict[str, int], size_ratio: float,
                 latency_ratio: float, flags: dict[str, bool]) -> list[str]:
        return []

    def _table(self, float_model: Any, q_model: Any) -> list[dict[str, Any]]:
        return arithmetic.int8_table(float_model, q_model)

    def _prepare_data(self, params: Any, ctx: StepContext) -> None:
        """Validate data needs before any work (static quantization overrides)."""

    # --- shared helpers ----------------------------------------------------------------------
    def _load_graph(self, model: ModelHandle) -> Any:
        import onnx

        return onnx.load(model.path, load_external_data=False)

    def _op_problems(self, model: ModelHandle, wanted: tuple[str, ...], what: str) -> list[Problem]:
        problems = self.check_format(model)
        if problems:
            return problems
        try:
            ops = prep.count_ops(self._load_graph(model))
        except Exception as exc:  # noqa: BLE001
            return [Problem(f"cannot read the ONNX graph: {exc}", fix="re-export the model")]
        already = quantized_ops(ops)
        if already:  # quantizing int8 again gains nothing and old int8 exports fail in pre-processing
            n_int8 = int8_tensor_count(self._load_graph(model))
            problems.append(Problem(
                f"the model is already quantized ({n_int8} int8 tensors; "
                + ", ".join(f"{n} {op}" for op, n in sorted(already.items(), key=lambda x: -x[1])[:4]) + ")",
                fix="quantize the float model instead, or remove this step"))
            return problems
        if wanted and not any(op in ops for op in wanted):
            return problems + [Problem(
                f"no {'/'.join(wanted)} nodes to {what} (the graph has {', '.join(sorted(ops)[:8])})",
                field="op_types", fix="choose op types present in the model")]
        return problems

    @staticmethod
    def _exclusions(graph: Any, params: GuardrailParams) -> tuple[str, ...]:
        names = list(params.nodes_to_exclude)
        if params.op_types_to_exclude:
            names += [n.name for n in graph.node if n.op_type in params.op_types_to_exclude and n.name]
        return tuple(dict.fromkeys(names))

    def _next_attempt(self, prev: Attempt, prep_path: Path, q_path: Path, evalset: evaluate.EvalSet,
                      round_no: int, ctx: StepContext) -> Attempt | None:
        """Safer settings after a failed attempt, or None when nothing safer is left."""
        if self.supports_per_channel and (not prev.per_channel or prev.reduce_range):
            return replace(prev, per_channel=True, reduce_range=False,
                           why="per-channel scales on, full 8-bit range (outliers no longer set one scale for all)")
        core = tuple(op for op in prev.op_types if op in self.core_ops)
        if prev.op_types and core and core != prev.op_types:
            return replace(prev, op_types=core, why=f"fewer op types: only {', '.join(core)}")
        import onnx

        graph = onnx.load(str(prep_path)).graph
        inits = {i.name for i in graph.initializer}
        cands = [(n.name, n.output[0], [i for i in n.input if i and i not in inits])
                 for n in graph.node
                 if n.name and n.output and (not prev.op_types or n.op_type in prev.op_types)
                 and n.name not in prev.exclude]
        if not cands:
            return None
        ranked = evaluate.node_errors(prep_path, q_path, evalset, cands, cancel=ctx.cancel)
        ranked = [r for r in ranked if r[1] > 0]
        if not ranked:
            return None
        # Never exclude every candidate: a "quantized" model with nothing quantized is a failure, not a pass.
        k = min(len(ranked), 2 ** max(0, round_no), len(cands) - 1)
        if k <= 0:
            return None
        worst = ranked[:k]
        detail = ", ".join(f"{n} (+{e:.3f} rel. error)" for n, e in worst)
        return replace(prev, exclude=prev.exclude + tuple(n for n, _ in worst),
                       why=f"left in float the node(s) adding the most output error: {detail}")

    # --- the run loop ------------------------------------------------------------------------
    def nothing_quantized_hint(self, model_ops: Any) -> str:
        """Why a step changed nothing and what to do instead: conv nets go to static INT8 (dynamic INT8 of a
        Conv is ConvInteger, slower than float on CPU), anything else to FP16."""
        ops = set(model_ops)
        if "Conv" in ops and self.id != "builtin.quantize_static":
            return ("this is a conv net: use Quantize: static INT8 (QDQ) with calibration data (dynamic INT8 "
                    "leaves Conv in float, and quantizing Conv dynamically runs as slow ConvInteger), or FP16")
        return ("the model may already be quantized, or its layers are not in op_types — check the op types, "
                "try Quantize: FP16, or remove this step")

    def run(self, model: ModelHandle, params: Any, ctx: StepContext) -> StepOutput:

        ctx.cancel.raise_if_cancelled()
        problems = [p for p in self.check(model, params) if p.severity == "error"]
        if problems:
            raise StepFailed(str(problems[0]), subject=self.id, hint=problems[0].fix or "fix the step's settings")
        self._prepare_data(params, ctx)
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".quantize-", dir=ctx.work_dir))
        try:
            return self._run(model, params, ctx, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _run(self, model: ModelHandle, params: Any, ctx: StepContext, tmp: Path) -> StepOutput:
        import onnx

        notes: list[str] = []
        warnings: list[str] = []
        ctx.progress(0.02, "pre-processing")
        prep_path, prep_notes = prep.preprocess(model.path, tmp / "prep.onnx", optimize=self.optimize_first,
                                                gemm_rewrite=self._gemm_rewrite(params), min_opset=self.min_opset)
        notes += prep_notes
        ctx.cancel.raise_if_cancelled()
        prep_model = onnx.load(str(prep_path))
        model_ops = prep.count_ops(prep_model)
        missing = [n for n in params.nodes_to_exclude if n not in {x.name for x in prep_model.graph.node}]
        if missing:
            warnings.append(f"nodes_to_exclude: {len(missing)} name(s) not found after pre-processing "
                            f"(fused or renamed): {', '.join(missing[:5])}")

        ref_sess = evaluate.make_session(model.path, ctx.threads)
        out_names = [o.name for o in ref_sess.get_outputs()]
        evalset = evaluate.build_eval_set(ctx.data, ref_sess, model.dim_defaults, params.eval_samples, ctx.seed)
        if evalset.kind == "random":
            notes.append("fidelity measured on RANDOM inputs (no evaluation data given): a smoke check, not accuracy")
        ctx.progress(0.1, f"reference outputs on {evalset.describe()}")
        ref_out = evaluate.run_all(ref_sess, evalset, ctx.cancel)
        del ref_sess
        settings = getattr(ctx, "evaluation", None)
        budgets = getattr(settings, "budgets", None)
        guess = evaluate.guess_task(model, ctx.source_model, ref_out, evalset, getattr(settings, "task", None))
        notes.append(f"task: {guess.task} ({guess.reason}); the budget test uses its metric")

        def verdict(f: evaluate.Fidelity) -> tuple[bool, str]:
            return f.verdict(params.min_cosine, params.min_top1_agreement, budgets)

        first_attempt = self._first_attempt(params, model_ops)
        excluded = first_attempt.exclude + self._exclusions(prep_model.graph, params)
        attempt: Attempt | None = replace(first_attempt, exclude=tuple(dict.fromkeys(excluded)))
        history: list[tuple[Attempt, evaluate.Fidelity]] = []
        q_path = tmp / "q.onnx"
        fid: evaluate.Fidelity | None = None
        n = 0
        while attempt is not None and n < params.max_attempts:
            n += 1
            ctx.cancel.raise_if_cancelled()
            frac = 0.15 + 0.6 * (n - 1) / params.max_attempts
            ctx.progress(frac, f"attempt {n}: {attempt.why}")
            q_path = tmp / f"q{n}.onnx"
            try:
                self._quantize(prep_path, q_path, attempt, params, ctx)
            except StepFailed:
                raise
            except Exception as exc:  # noqa: BLE001 - library errors become a step failure with context
                from slimline.core.errors import Cancelled

                if isinstance(exc, Cancelled):
                    raise
                from slimline.core.runtime import clean_runtime_message

                detail, node = clean_runtime_message(exc)
                where = f" at node '{node}'" if node else ""
                raise StepFailed(f"{self.title} failed on attempt {n} ({attempt.describe()}){where}: {detail}",
                                 subject=self.id,
                                 hint="exclude the failing node/op type (nodes_to_exclude / op_types_to_exclude) "
                                      "or try another mode") from exc
            ctx.cancel.raise_if_cancelled()
            try:
                checker_problem = _checker_problem(onnx, q_path)
                q_sess = evaluate.make_session(q_path, ctx.threads)
            except Exception as exc:  # noqa: BLE001
                raise StepFailed(f"the quantized model does not load: {exc}", subject=self.id,
                                 hint="exclude the op types named in the message, or try another mode") from exc
            if checker_problem:  # onnxruntime runs it: e.g. its own ops in the default domain (genai builder graphs)
                ctx.log(f"onnx.checker objects ({checker_problem}), but onnxruntime loads and runs the model")
            q_out = evaluate.run_all(q_sess, evalset, ctx.cancel)
            del q_sess
            fid = evaluate.fidelity(out_names, ref_out, q_out, evalset.labels, guess.task, evalset)
            history.append((attempt, fid))
            ctx.log(f"attempt {n} ({attempt.describe()}): {fid.summary()}")
            if verdict(fid)[0]:
                break
            if n >= params.max_attempts:
                attempt = None
                break
            ctx.progress(frac + 0.3 / params.max_attempts, "below budget: looking for safer settings")
            attempt = self._next_attempt(attempt, prep_path, q_path, evalset, len(
                [h for h in history if h[0].why.startswith("left in float")]), ctx)

        for i, (a, f) in enumerate(history, 1):
            said = "accepted" if (i == len(history) and verdict(f)[0]) else "below budget"
            notes.append(f"attempt {i} — {a.why} [{a.describe()}]: {f.summary()} → {said}")
        assert fid is not None
        passed, budget = verdict(fid)
        if not passed:
            raise StepFailed(
                f"quantized model below budget after {len(history)} attempt(s): {fid.summary()} "
                f"(budget {budget}, on {evalset.describe()}); the model was not passed on",
                subject=self.id,
                hint="raise max_attempts, exclude sensitive layers (nodes_to_exclude), use per-channel / "
                     "another calibration method, or try FP16")
        if len(history) > 1:
            warnings.append(f"the requested settings missed the budget; passed on attempt {len(history)}: "
                            f"{history[-1][0].why}")

        # --- measure and explain ------------------------------------------------------------
        ctx.progress(0.8, "measuring size and latency")
        q_model = onnx.load(str(q_path))
        q_ops = prep.count_ops(q_model)
        f32_before, f32_after = _float32_elements(prep_model), _float32_elements(q_model)
        if f32_before == 0 or f32_after >= 0.99 * f32_before:
            raise StepFailed(
                f"nothing was quantized: {f32_after:,} of {f32_before:,} float32 weight values are still float32 "
                f"(op types tried: {', '.join(history[-1][0].op_types) or 'all'}; the graph has "
                f"{', '.join(sorted(model_ops)[:10])})", subject=self.id,
                hint=self.nothing_quantized_hint(model_ops))
        in_bytes = _bytes_on_disk(model)
        out_bytes = q_path.stat().st_size
        size_ratio = out_bytes / max(in_bytes, 1)
        first = evalset.first()
        t_in, t_out = evaluate.compare_latency(Path(model.path), q_path, first, threads=ctx.threads,
                                               runs=params.latency_runs,
                                               input_kind="random" if evalset.kind == "random" else "dataset",
                                               cancel=ctx.cancel)
        latency_ratio = t_out.p50_ms / max(t_in.p50_ms, 1e-9)
        flags = evaluate.cpu_int8_flags()
        notes.append(f"size {in_bytes / 1e6:.3f} MB → {out_bytes / 1e6:.3f} MB ({size_ratio:.3f}×)")
        notes.append(
            f"latency batch {t_in.batch}, {t_in.threads} thread(s), {t_in.warmup} warm-up + {t_in.runs} runs "
            f"({t_in.input_kind} input): p50 {t_in.p50_ms:.3f} → {t_out.p50_ms:.3f} ms ({latency_ratio:.2f}×), "
            f"p90 {t_in.p90_ms:.3f} → {t_out.p90_ms:.3f} ms")
        notes.append(f"fidelity on {evalset.describe()}: {fid.summary()}")
        if fid.top1_before is not None and fid.top1_after is not None:
            notes.append(f"top-1 accuracy on {evalset.describe()}: {fid.top1_before:.4f} → {fid.top1_after:.4f}")
        explain = self._explain(params, history[-1][0], q_ops, size_ratio, latency_ratio, flags)
        if size_ratio > 1.0:
            warnings.append(f"BIGGER: the output is {size_ratio:.2f}× the input size. " + " ".join(
                e for e in explain if "size" in e.lower() or "fp32" in e.lower()))
        if latency_ratio > 1.03:
            warnings.append(f"SLOWER: p50 latency {latency_ratio:.2f}× the input at batch {t_in.batch}, "
                            f"{t_in.threads} thread(s). " + " ".join(e for e in explain if "size" not in e.lower()))
        elif explain:
            notes += [e for e in explain if e.startswith("note:")]

        table = self._table(prep_model, q_model)
        if table:
            notes.append(arithmetic.SCHEME_NOTE)
            notes += arithmetic.summarise(table)

        ctx.progress(0.95, "writing model")
        ctx.cancel.raise_if_cancelled()
        out = ctx.output_path("model.onnx")
        with atomic_path(out) as tmp_out:
            shutil.copyfile(q_path, tmp_out)
        from slimline.core.lm.genai import copy_companions, genai_folder_of

        if genai_folder_of(model.path) is not None:  # an onnxruntime-genai folder stays one (config, tokenizer)
            copied = copy_companions(model.path, out.parent, onnx_name=out.name)
            notes.append(f"kept beside the output: {', '.join(copied)}")
        handle = _output_handle(out, model)
        metrics: dict[str, float] = {
            "size_ratio": size_ratio, "latency_ratio": latency_ratio, "mean_cosine": fid.mean_cosine,
            "min_cosine": fid.min_cosine, "max_abs_error": fid.max_abs_error, "attempts": float(len(history)),
            "eval_rows": float(fid.n), "latency_p50_ms_before": t_in.p50_ms, "latency_p50_ms_after": t_out.p50_ms,
            "latency_threads": float(t_in.threads), "bytes_before": float(in_bytes), "bytes_after": float(out_bytes),
        }
        if fid.top1_agreement is not None:
            metrics["top1_agreement"] = fid.top1_agreement
        if fid.task_fidelity is not None:
            metrics[f"{guess.task}: {fid.task_fidelity.metric}"] = fid.task_fidelity.value
        if fid.top1_before is not None and fid.top1_after is not None:
            metrics["top1_before"] = fid.top1_before
            metrics["top1_after"] = fid.top1_after
        ctx.progress(1.0, "done")
        return StepOutput(model=handle, metrics=metrics, notes=notes, warnings=warnings,
                          tables={"quantization": table, "attempts": [
                              {"attempt": i, "change": a.why, "settings": a.describe(), "mean_cosine": f.mean_cosine,
                               "min_cosine": f.min_cosine, "top1_agreement": f.top1_agreement,
                               "max_abs_error": f.max_abs_error}
                              for i, (a, f) in enumerate(history, 1)]})

    def _gemm_rewrite(self, params: Any) -> bool:
        return False

    # --- layer by layer: sensitivity analysis and budgeted search (slimline.core.sensitivity) ----------
    def prepare_graph(self, model: ModelHandle, params: Any, dst: Path) -> tuple[Path, list[str]]:
        """The pre-processed graph this step quantizes: its node names are the ones ``nodes_to_exclude`` takes."""
        return prep.preprocess(model.path, dst, optimize=self.optimize_first, gemm_rewrite=self._gemm_rewrite(params),
                               min_opset=self.min_opset)

    def weight_nodes(self, prep_path: Path, params: Any) -> list[tuple[str, str, str]]:
        """(node name, op type, weight initializer) of each node with a float weight that the step would quantize."""
        import onnx

        model = onnx.load(str(prep_path), load_external_data=False)
        graph = model.graph
        ops = set(self._first_attempt(params, prep.count_ops(model)).op_types)
        floats = {i.name for i in graph.initializer if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
                  and len(i.dims) >= 2}
        out = []
        for n in graph.node:
            weight = next((i for i in n.input if i in floats), None)
            if n.name and weight and (not ops or n.op_type in ops):
                out.append((n.name, n.op_type, weight))
        return out

    def layerwise(self, model: ModelHandle, params: Any, ctx: StepContext) -> Any:
        """This step layer by layer (slimline.core.sensitivity.protocol.Layerwise): one node quantized or kept."""
        from slimline.plugins.quantize.layerwise import QuantizeLayerwise

        return QuantizeLayerwise(self, model, params, ctx)

    def quantize_once(self, prep_path: Path, dst: Path, params: Any, ctx: StepContext,
                      exclude: tuple[str, ...] = ()) -> Attempt:
        """Quantize the pre-processed graph once with the step's own settings plus ``exclude``.

        No guardrail, no retries, no timing: a sensitivity probe or a search candidate must be exactly
        the settings asked for; judging it is the caller's job (with the same task metrics).
        """
        import onnx

        model = onnx.load(str(prep_path), load_external_data=False)
        first = self._first_attempt(params, prep.count_ops(model))
        excluded = tuple(dict.fromkeys((*exclude, *self._exclusions(model.graph, params))))
        attempt = replace(first, exclude=excluded, why="layer-wise settings")
        self._prepare_data(params, ctx)
        self._quantize(prep_path, dst, attempt, params, ctx)
        return attempt


def _float32_elements(model: Any) -> int:
    """float32 weight values in the model (initializers + Constant nodes, subgraphs included)."""
    from onnx import TensorProto

    from slimline.core.models.onnx_files import iter_graphs

    total = 0
    for graph in iter_graphs(model.graph):  # If/Loop/Scan bodies hold the weights of some exports (spox)
        total += sum(int(math.prod(i.dims)) for i in graph.initializer if i.data_type == TensorProto.FLOAT)
        for node in graph.node:
            if node.op_type == "Constant":
                for a in node.attribute:
                    if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                        total += int(math.prod(a.t.dims))
    return total


QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
             "QLinearConv", "QLinearMatMul", "DynamicQuantizeMatMul", "MatMulNBits")


def quantized_ops(ops: dict[str, int]) -> dict[str, int]:
    """The quantized-kernel op types among ``ops`` (QDQ pairs, integer matmuls/convs, QLinear*, DynamicQuantize*)."""
    return {op: n for op, n in ops.items()
            if n and (op in QUANT_OPS or op.startswith(("QLinear", "DynamicQuantize", "QGemm", "QAttention")))}


def int8_tensor_count(model: Any) -> int:
    """int8/uint8 initializers in the model, subgraphs included."""
    from onnx import TensorProto

    from slimline.core.models.onnx_files import iter_graphs

    kinds = (TensorProto.INT8, TensorProto.UINT8)
    return sum(1 for g in iter_graphs(model.graph) for i in g.initializer if i.data_type in kinds)


def _bytes_on_disk(model: ModelHandle) -> int:
    files = model.files or [model.path]
    total = sum(Path(f).stat().st_size for f in files if Path(f).is_file())
    return total or int(model.bytes_on_disk)


def _output_handle(path: Path, src: ModelHandle) -> ModelHandle:
    """Handle for the written model: open_model when available, else a copy of the input's specs."""
    try:
        from slimline.core.models import open_model
    except ImportError:
        open_model = None  # type: ignore[assignment]
    if open_model is not None:
        try:
            out = open_model(path)
        except Exception:  # noqa: BLE001 - fall back to a handle built from what we know
            pass
        else:  # the dims the user set (--dim) hold for the quantized model too: same inputs, same meaning
            kept = {k: v for k, v in src.dim_defaults.items() if k in out.dim_defaults}
            return out.with_dims(**kept) if kept else out
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    params = sum(int(math.prod(i.dims)) if i.dims else 1 for i in m.graph.initializer)
    return ModelHandle(path=str(path), format="onnx", family="onnx", files=[str(path)], inputs=list(src.inputs),
                       outputs=list(src.outputs), dim_defaults=dict(src.dim_defaults), param_count=params,
                       bytes_on_disk=path.stat().st_size, producer=m.producer_name,
                       opset=prep.default_opset(m) or None)


def _checker_problem(onnx: Any, path: Any) -> str:
    """onnx.checker's objection in one line ("" when none).

    The model builder of onnxruntime-genai writes onnxruntime's own ops (SimplifiedLayerNormalization,
    SkipSimplifiedLayerNormalization) in the default domain, which the checker does not know although
    onnxruntime runs them; so the checker's verdict is reported, and loading in onnxruntime decides.
    """
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # noqa: BLE001 - any checker objection is reported, not fatal by itself
        return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return ""
