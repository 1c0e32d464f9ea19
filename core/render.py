"""Plain-text and JSON rendering for the CLI (tables, progress, result files)."""
from __future__ import annotations

import json
import math
import shutil
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from slimline.core.fsutil import atomic_write_text
from slimline.core.handle import ModelHandle
from slimline.core.results import (
    LogEvent,
    MetricEvent,
    ProgressEvent,
    RunRecord,
    StepResultEvent,
    StepStartedEvent,
    as_event,
    as_run,
)


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def fmt_zip(size: Any) -> str:
    """Compressed bytes; '≈' when estimated from samples of a big file (SizeReport.zip_sampled_bytes)."""
    text = fmt_bytes(size.zip_bytes)
    return f"≈{text}" if size.zip_bytes is not None and size.zip_sampled_bytes else text


def fmt_count(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


def table(headers: list[str], rows: Iterable[list[Any]], align: str | None = None) -> str:
    rows = [[("-" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    align = align or ("l" + "r" * (len(headers) - 1))
    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align))
    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def _shape(spec: Any) -> str:
    return "[" + ", ".join(str(d) for d in spec.shape) + "]"


def handle_summary(h: ModelHandle) -> str:
    lines = [f"model     {h.path}", f"format    {h.format} (family {h.family})"]
    if h.producer or h.opset:
        lines.append(f"producer  {h.producer or '-'}   opset {h.opset if h.opset is not None else '-'}")
    lines.append(f"params    {h.param_count:,}   on disk {fmt_bytes(h.bytes_on_disk)} in {len(h.files) or 1} file(s)")
    for kind, specs in (("input", h.inputs), ("output", h.outputs)):
        for s in specs:
            lines.append(f"{kind:<9} {s.name}: {s.dtype} {_shape(s)}")
    if h.dim_defaults:
        lines.append("dims      " + ", ".join(f"{k}={v}" for k, v in h.dim_defaults.items())
                     + "   (dynamic; change with --dim NAME=VALUE)")
    if h.meta.get("left_out"):
        lines.append(f"checkpoint model weights from {h.meta.get('state_key')!r}; left out: "
                     + ", ".join(str(k) for k in h.meta["left_out"]) + " (not model weights)")
    if h.meta.get("memory"):
        lines.append(f"memory    {h.meta['memory']} to load and run one window (estimate)")
    caps = h.capabilities
    if not (caps.run and caps.compress) and caps.reason:
        lines.append(f"note      {caps.reason}")
    for note in h.notes:
        lines.append(textwrap.fill(note, width=120, initial_indent="note      ", subsequent_indent=" " * 10,
                                   break_on_hyphens=False))
    return "\n".join(lines)


def _row_dict(r: Any) -> dict[str, Any]:
    return r.model_dump() if hasattr(r, "model_dump") else dict(r.__dict__)


def _num(v: Any, spec: str = ".3g", scale: float = 1.0, suffix: str = "") -> str:
    """A statistic for the table; '-' where there is none (e.g. a tensor with no finite value)."""
    if v is None:
        return "-"
    try:
        return f"{float(v) * scale:{spec}}{suffix}"
    except (TypeError, ValueError):
        return str(v)


def _json_safe(obj: Any) -> Any:
    """±inf/NaN as strings: ``json.dumps`` would write the invalid tokens Infinity/NaN."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _constants(h: ModelHandle) -> list[dict[str, Any]]:
    """Scalars and shape/index tensors of the model (not weights), as dicts; [] when it has none."""
    if not h.meta.get("other_tensors"):
        return []
    from slimline.core.stats import constant_inventory

    return [_row_dict(r) for r in constant_inventory(h)]


def _places(h: ModelHandle) -> str:
    places = h.meta.get("weights_by_place") or {}
    if not (places.get("constant_nodes") or places.get("subgraphs")):
        return ""
    return (f"weights   {fmt_count(places.get('initializers', 0))} in initializers, "
            f"{fmt_count(places.get('constant_nodes', 0))} in Constant nodes, "
            f"{fmt_count(places.get('subgraphs', 0))} inside If/Loop/Scan subgraphs")


def print_inspect(h: ModelHandle, rows: list[Any] | None, *, as_json: bool, limit: int,
                  out: TextIO | None = None, expand: bool = False) -> None:
    """Summary, weight table and other tensors; repeated blocks print as one row each unless ``expand``."""
    from slimline.core.layer_groups import group_blocks

    out = out or sys.stdout
    dicts = [_row_dict(r) for r in rows or []]
    constants = _constants(h)
    groups = group_blocks(dicts)
    if as_json:
        doc = {"model": h.model_dump(mode="json"), "layers": dicts, "constants": constants,
               "groups": [{**g.model_dump(exclude={"names"}), "title": g.title} for g in groups]}
        print(json.dumps(_json_safe(doc), indent=1, default=str, allow_nan=False), file=out)
        return
    print(handle_summary(h), file=out)
    if places := _places(h):
        print(places, file=out)
    if dicts:
        _print_weights(dicts, limit, out, [] if expand else groups)
    if constants:
        _print_constants(constants, limit, out)


def _grouped(dicts: list[dict[str, Any]], groups: list[Any]) -> list[dict[str, Any]]:
    """Rows with each group's tensors replaced by one summary row where its first tensor stood."""
    from slimline.core.layer_groups import group_of, group_row

    where = group_of(groups)
    shown: list[dict[str, Any]] = []
    done: set[int] = set()
    for d in dicts:
        g = where.get(str(d.get("name")))
        if g is None:
            shown.append(d)
        elif g not in done:
            done.add(g)
            shown.append(group_row(groups[g], dicts).model_dump())
    return shown


def _print_weights(dicts: list[dict[str, Any]], limit: int, out: TextIO, groups: list[Any] | None = None) -> None:
    groups = groups or []
    dicts_all = dicts
    in_groups = sum(len(g.names) for g in groups)
    head = f"\n{len(dicts)} weight tensors"
    if groups:
        head += (f", {in_groups} of them in {len(groups)} group{'s' if len(groups) > 1 else ''} of repeated blocks "
                 f"({'; '.join(f'{g.title}: {g.describe()}' for g in groups)}; --expand lists every tensor)")
        dicts = _grouped(dicts, groups)
    print(head + (f" (first {limit} rows)" if len(dicts) > limit else ""), file=out)
    has_stats = any(d.get("nan_count") is not None for d in dicts)
    has_where = any(d.get("location") not in (None, "", "initializer") for d in dicts)
    headers = ["name", "op", "shape", "dtype", "params"] + (["location"] if has_where else [])
    n_left = len(headers)
    if has_stats:
        headers += ["min", "max", "mean", "std", "sparsity", "outliers", "nan/inf"]
    body = []
    for d in dicts[:limit]:
        row = [d.get("name"), d.get("op_type"), "x".join(str(x) for x in d.get("shape", [])),
               d.get("dtype"), fmt_count(d.get("params"))]
        if has_where:
            row.append(d.get("location") or "initializer")
        if has_stats:
            row += [_num(d.get("min")), _num(d.get("max")), _num(d.get("mean")), _num(d.get("std")),
                    _num(d.get("sparsity"), ".1f", 100, "%"), _num(d.get("outlier_frac"), ".2f", 100, "%"),
                    f"{_num(d.get('nan_count'), 'd')}/{_num(d.get('inf_count'), 'd')}"]
        body.append(row)
    print(table(headers, body, "l" * n_left + "r" * (len(headers) - n_left)), file=out)
    for g in groups:
        first = {str(d.get("name")): d for d in dicts_all if str(d.get("name")).startswith(
            f"{g.prefix}.{g.indices[0]}." if g.prefix else f"{g.indices[0]}.")}
        parts = [f"{name.split('.', len(g.prefix.split('.')) + 1 if g.prefix else 1)[-1]} "
                 f"{'x'.join(str(x) for x in d.get('shape', []))}" for name, d in first.items()]
        print(textwrap.fill(f"each block of {g.title} ({g.describe()}, {fmt_count(g.params)} params): "
                            f"{', '.join(parts)}", width=120, subsequent_indent="    "), file=out)


def _print_constants(constants: list[dict[str, Any]], limit: int, out: TextIO) -> None:
    scalars = sum(1 for c in constants if c.get("kind") == "scalar")
    print(f"\n{len(constants)} other tensors, not weights ({scalars} scalars, {len(constants) - scalars} "
          "shape/index tensors): not counted as parameters" + (f" (first {limit})" if len(constants) > limit else ""),
          file=out)
    body = [[c.get("name"), c.get("kind"), "x".join(str(x) for x in c.get("shape", [])) or "scalar",
             c.get("dtype"), c.get("value") if c.get("value") is not None else "-", c.get("location") or "-"]
            for c in constants[:limit]]
    print(table(["name", "kind", "shape", "dtype", "value", "location"], body, "llllrl"), file=out)


def print_bench(h: ModelHandle, size: Any, lat: list[Any], acc: Any, env: dict[str, Any], *,
                as_json: bool, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    if as_json:
        print(json.dumps({"model": h.model_dump(mode="json"), "size": size.model_dump(),
                          "latency": [x.model_dump() for x in lat],
                          "accuracy": acc.model_dump() if acc else None, "environment": env},
                         indent=1, default=str), file=out)
        return
    print(handle_summary(h), file=out)
    print(f"\nsize: {fmt_bytes(size.bytes_on_disk)} on disk, {fmt_bytes(size.zip_bytes)} zip-compressed, "
          f"{size.param_count:,} parameters", file=out)
    rows = [[r.batch, f"{r.p50_ms:.3f}", f"{r.p90_ms:.3f}", f"{r.min_ms:.3f}", f"{r.max_ms:.3f}",
             f"{r.spread * 100:.1f}%", r.runs, r.warmup, r.threads, r.provider, r.input_kind] for r in lat]
    print("\nlatency (ms, timed runs after warm-up)", file=out)
    print(table(["batch", "p50", "p90", "min", "max", "spread", "runs", "warmup", "threads", "runtime", "inputs"],
                rows), file=out)
    if any(r.input_kind == "random" for r in lat):
        print("inputs: random (latency only; give --data for real inputs and accuracy)", file=out)
    if acc is not None:
        print(f"\naccuracy: top-1 {acc.top1:.4f} on {acc.dataset} (n={acc.n})", file=out)
    print(f"\nmachine: {env.get('cpu', '?')}, {env.get('cores', '?')} cores", file=out)


def fidelity_header(record: RunRecord) -> str:
    """"cosine" for records from before tasks; else "fidelity" (the metric is named in the task line)."""
    first = record.results[0].fidelity if record.results else None
    return "fidelity" if first is not None and first.task else "cosine"


def fidelity_cell(fid: Any) -> str:
    """The task's headline fidelity value (mean cosine in records from before tasks)."""
    if fid is None:
        return "-"
    if not fid.task or fid.value is None:
        return f"{fid.mean_cosine:.4f}"
    v = float(fid.value)
    return f"{v:.4f}" if v == 0 or abs(v) >= 1e-3 or v != v else f"{v:.2e}"


def result_rows(record: RunRecord | dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    record = as_run(record)
    results = record.results
    if any(r.lm is not None for r in results):  # a language model on text: perplexity and generation columns
        from slimline.core.lm.render import lm_rows

        return lm_rows(results)
    batches = list((results[0].latency or {}).keys()) if results else []
    headers = ["step", "size", "zip", "params"] + [f"p50 b{b} ms" for b in batches] + \
              [f"p90 b{b}" for b in batches[:1]] + ["top-1", fidelity_header(record), "flags"]
    rows = []
    base = results[0] if results else None
    for r in results:
        size = r.size
        lat = r.latency or {}
        ratio = ""
        if base is not None and r is not base and base.size.bytes_on_disk:
            ratio = f" ({size.bytes_on_disk / base.size.bytes_on_disk:.2f}×)"
        row = [f"{r.step_id}: {r.title}" + (" [cached]" if r.cached else ""),
               fmt_bytes(size.bytes_on_disk) + ratio, fmt_zip(size), fmt_count(size.param_count)]
        for b in batches:
            rep = lat.get(b)
            base_rep = (base.latency or {}).get(b) if base is not None else None
            cell = f"{rep.p50_ms:.3f}" if rep else "-"
            if rep and rep.vs_input is not None:  # vs the step's input, timed interleaved: one machine state
                r_in = rep.vs_input.ratio
                cell += f" ({r_in:.2f}×" if r_in >= 0.1 else f" ({r_in:.2g}×"
                cell += f"{'?' if rep.vs_input.noisy else ''} vs in)"
            elif rep and base_rep and r is not base and not (rep.noisy or base_rep.noisy):
                cell += f" ({rep.p50_ms / base_rep.p50_ms:.2f}×)"
            row.append(cell)
        for b in batches[:1]:
            rep = lat.get(b)
            row.append(f"{rep.p90_ms:.3f}" if rep else "-")
        row.append(f"{r.accuracy.top1:.4f}" if r.accuracy else "-")
        row.append(fidelity_cell(r.fidelity))
        row.append(",".join(f.upper() if f == "noisy" else f for f in r.flags) or "ok")
        rows.append(row)
    return headers, rows


def print_run(record: RunRecord | dict[str, Any], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    record = as_run(record)
    headers, rows = result_rows(record)
    print(f"\nrun {record.run_id} — {record.status}", file=out)
    print(table(headers, rows), file=out)
    results = record.results
    lm_lines: list[str] = []
    if any(r.lm is not None for r in results):
        from slimline.core.lm.render import lm_footer

        lm_lines = lm_footer(results)
    if lm_lines:
        print("\n".join([*lm_lines, f"machine: {record.environment.get('cpu', '?')}"]), file=out)
    elif results:
        r0 = results[0]
        lat = next(iter((r0.latency or {}).values()), None)
        acc, fid = r0.accuracy, r0.fidelity
        parts = []
        if lat:
            parts.append(f"latency: {lat.runs} timed runs after {lat.warmup} warm-up, "
                         f"{lat.threads} threads, {lat.provider}, inputs {lat.input_kind}")
        if acc:
            parts.append(f"top-1 on {acc.dataset} (n={acc.n})")
        elif fid and not fid.task:
            parts.append(f"cosine vs original on {fid.dataset} ({fid.input_kind} inputs"
                         f"{' — smoke check only' if fid.input_kind == 'random' else ''})")
        if fid and fid.task:
            parts.insert(0, f"task: {fid.task} ({fid.task_reason}); fidelity = {fid.metric} vs original on "
                            f"{fid.dataset} ({fid.input_kind} inputs"
                            f"{' — smoke check only' if fid.input_kind == 'random' else ''})")
        parts.append(f"machine: {record.environment.get('cpu', '?')}")
        if lat and lat.measured_at:
            loads = "→".join(f"{x:.1f}" for x in (lat.load_avg, lat.load_avg_after) if x is not None) or "?"
            others = f", other processes busy on {lat.others_busy_cores:.1f} cores" \
                if lat.others_busy_cores is not None else ""
            parts.append(f"timing conditions (original): load {loads} on {lat.cores} cores{others}; steps are timed "
                         "interleaved with their input ('× vs in'; '?' and NOISY: too noisy to conclude)")
        print("\n".join(parts), file=out)
    for r in results:
        for w in r.warnings:
            print(f"warning [{r.step_id}]: {w}", file=out)
    err = record.error
    if err:
        print(f"error [{err.step_id or err.subject}]: {err.message}", file=out)


def write_run_outputs(record: RunRecord | dict[str, Any], out_dir: Path) -> None:
    """Copy the final model and write results.json + results.md (atomically)."""
    record = as_run(record)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = record.final_model or record.results[-1].model
    from slimline.core.lm.genai import companion_paths

    # a genai LM folder runs only with its config and tokenizer beside the ONNX
    for src in [*map(Path, final.files or [final.path]), *companion_paths(final.path)]:
        if src.is_file():
            from slimline.core.fsutil import atomic_path

            with atomic_path(out_dir / src.name) as tmp:
                shutil.copyfile(src, tmp)
    atomic_write_text(out_dir / "results.json", json.dumps(record.to_dict(), indent=1, default=str))
    headers, rows = result_rows(record)
    md = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    md += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    atomic_write_text(out_dir / "results.md", f"# Run {record.run_id}\n\n" + "\n".join(md) + "\n")


class ProgressPrinter:
    """One-line progress bar on a terminal; plain lines when not a TTY (CI logs)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last_line = ""

    def handle(self, ev: Any) -> None:
        """Show one job event (typed, or its dict form from Job.poll)."""
        ev = as_event(ev)
        if isinstance(ev, ProgressEvent) and self.tty:
            pct = int(ev.overall * 100)
            bar = "#" * (pct // 4) + "." * (25 - pct // 4)
            line = f"\r[{bar}] {pct:3d}% {ev.step_id}: {ev.message[:60]}"
            self.stream.write(line.ljust(110))
            self.stream.flush()
        elif isinstance(ev, StepStartedEvent):
            self._newline()
            print(f"[{ev.index}/{ev.total - 1}] {ev.step_id}: {ev.title}", file=self.stream)
        elif isinstance(ev, StepResultEvent):
            r = ev.result
            flags = ",".join(r.flags) or "ok"
            self._newline()
            print(f"    done in {r.duration_s:.1f}s ({flags}){' [cached]' if r.cached else ''}", file=self.stream)
        elif isinstance(ev, LogEvent) and not self.tty:
            print(f"    {ev.message}", file=self.stream)
        elif isinstance(ev, MetricEvent) and ev.kind == "validation":
            p = ev.payload
            self._newline()
            print(f"    epoch {p.get('epoch')}: validation accuracy {p.get('accuracy', 0):.4f}", file=self.stream)

    def _newline(self) -> None:
        if self.tty:
            self.stream.write("\r" + " " * 110 + "\r")

    def close(self) -> None:
        self._newline()
        self.stream.flush()
