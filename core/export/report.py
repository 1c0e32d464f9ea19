"""Self-contained HTML report of a run: summary, pipeline, per-step measurements with
spread, before/after layer statistics, warnings and export records.

Charts are inline SVG generated here (svg.py); there is no JavaScript and nothing
is fetched, so the file opens offline and can be mailed or archived as is.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any

from slimline.core.export import svg
from slimline.core.fsutil import atomic_write_text
from slimline.core.handle import ModelHandle
from slimline.core.lm import html as lm_html
from slimline.core.metrics import SizeReport
from slimline.core.render import fidelity_cell, fmt_bytes
from slimline.core.results import RunRecord, StepResult, as_run

EXPORTS_FILE = "exports.json"
TOP_LAYERS = 12


# --------------------------------------------------------------------------- export records


def load_export_records(run_dir: str | Path) -> list[dict[str, Any]]:
    p = Path(run_dir) / EXPORTS_FILE
    if not p.is_file():
        return []
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return data if isinstance(data, list) else []


def append_export_record(run_dir: str | Path, record: dict[str, Any]) -> None:
    """Keep a list of exports beside run.json (run.json itself belongs to the run history)."""
    records = load_export_records(run_dir) + [record]
    atomic_write_text(Path(run_dir) / EXPORTS_FILE, json.dumps(records, indent=1, default=str))


# --------------------------------------------------------------------------- numbers


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval for an accuracy of ``p`` on ``n`` samples."""
    if n <= 0:
        return (0.0, 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _h(x: Any) -> str:
    return escape("" if x is None else str(x))


def _num(v: Any, spec: str = ".3g") -> str:
    return "–" if v is None else format(v, spec)


# --------------------------------------------------------------------------- layer statistics


def layer_stats(model: ModelHandle | None) -> tuple[list[dict[str, Any]] | None, str]:
    """compute_stats rows of a model (as dicts), or (None, reason)."""
    if model is None:
        return None, "no model recorded"
    try:
        if not Path(model.path).exists():
            return None, f"{model.path} is no longer on disk"
        from slimline.core.stats import compute_stats

        return [r.model_dump() for r in compute_stats(model)], ""
    except Exception as exc:  # the report still shows everything else
        return None, f"statistics unavailable: {type(exc).__name__}: {str(exc)[:200]}"


def _dtype_bytes(rows: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in rows:
        out[r.get("dtype") or "?"] = out.get(r.get("dtype") or "?", 0.0) + float(r.get("bytes") or 0)
    return out


def _layer_table(rows: list[dict[str, Any]]) -> str:
    top = sorted(rows, key=lambda r: r.get("params") or 0, reverse=True)[:TOP_LAYERS]
    head = ["tensor", "op", "shape", "dtype", "params", "bytes", "min", "max", "std", "sparsity", "outliers",
            "nan/inf"]
    body = []
    for r in top:
        body.append([_h(r["name"]), _h(r.get("op_type")), _h("×".join(str(d) for d in r.get("shape", []))),
                     _h(r.get("dtype")), f"{r.get('params', 0):,}", fmt_bytes(r.get("bytes")),
                     _num(r.get("min")), _num(r.get("max")), _num(r.get("std")),
                     "–" if r.get("sparsity") is None else f"{r['sparsity'] * 100:.1f}%",
                     "–" if r.get("outlier_frac") is None else f"{r['outlier_frac'] * 100:.2f}%",
                     f"{r.get('nan_count', '–')}/{r.get('inf_count', '–')}"])
    return _table(head, body, numeric_from=4)


def _table(head: list[str], body: list[list[str]], numeric_from: int = 1, numeric_to: int = 10**6) -> str:
    def cls(i: int) -> str:
        return "num" if numeric_from <= i < numeric_to else ""

    th = "".join(f"<th class='{cls(i)}'>{_h(c)}</th>" for i, c in enumerate(head))
    rows = "".join("<tr>" + "".join(f"<td class='{cls(i)}'>{c}</td>" for i, c in enumerate(r)) + "</tr>"
                   for r in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{rows}</tbody></table>"


# --------------------------------------------------------------------------- sections


def _model_box(title: str, m: ModelHandle | None, size: SizeReport | None) -> str:
    if m is None:
        return f"<div class='box'><h3>{_h(title)}</h3><p class='muted'>not available</p></div>"
    io = "".join(f"<li>{kind} <code>{_h(s.name)}</code> {_h(s.dtype)} {_h(list(s.shape))}</li>"
                 for kind, specs in (("input", m.inputs), ("output", m.outputs)) for s in specs)
    params = size.param_count if size is not None else m.param_count
    on_disk = size.bytes_on_disk if size is not None else m.bytes_on_disk
    return (f"<div class='box'><h3>{_h(title)}</h3><p><code>{_h(Path(m.path).name)}</code> — "
            f"{_h(m.format)} ({_h(m.family)})</p>"
            f"<p>{params or 0:,} parameters, {fmt_bytes(on_disk)} on disk, "
            f"{fmt_bytes(size.zip_bytes if size is not None else None)} zip-compressed</p><ul>{io}</ul></div>")


def _headline(results: list[StepResult]) -> str:
    if len(results) < 2:
        return ""
    a, b = results[0], results[-1]
    tiles = []
    sa, sb = a.size.bytes_on_disk, b.size.bytes_on_disk
    if sa and sb:
        tiles.append(("size", f"{sb / sa:.2f}×", f"{fmt_bytes(sa)} → {fmt_bytes(sb)}"))
    for batch, rep in (b.latency or {}).items():
        before = (a.latency or {}).get(batch)
        if before:
            tiles.append((f"p50 latency, batch {batch}", f"{rep.p50_ms / before.p50_ms:.2f}×",
                          f"{before.p50_ms:.3f} → {rep.p50_ms:.3f} ms"))
    aa, ab = a.accuracy, b.accuracy
    if aa and ab:
        tiles.append(("top-1", f"{(ab.top1 - aa.top1) * 100:+.2f} pt",
                      f"{aa.top1:.4f} → {ab.top1:.4f} (n={ab.n})"))
    tiles += lm_html.headline_tiles(results)
    fb = b.fidelity
    if fb is not None and fb.task and fb.value is not None:
        tiles.append((f"{fb.metric} vs original", fidelity_cell(fb), f"task {fb.task} "
                      f"({fb.input_kind} inputs)"))
    elif fb is not None:
        tiles.append(("cosine vs original", f"{fb.mean_cosine:.4f}", f"top-1 agreement "
                      f"{_num(fb.top1_agreement, '.4f')} ({_h(fb.input_kind)} inputs)"))
    return "<div class='tiles'>" + "".join(
        f"<div class='tile'><div class='k'>{_h(k)}</div><div class='v'>{_h(v)}</div><div class='s'>{_h(s)}</div>"
        "</div>" for k, v, s in tiles) + "</div>"


def _pipeline_section(record: RunRecord) -> str:
    pipe = record.pipeline
    body = [[_h(s.get("id")), _h(s.get("plugin")), "yes" if s.get("enabled", True) else "no",
             f"<code>{_h(json.dumps(s.get('params', {})))}</code>"] for s in pipe.get("steps", [])]
    ev = pipe.get("evaluation") or {}
    data = record.data
    extra = (f"<p class='muted'>evaluation data: <code>{_h(data.eval or ev.get('data') or 'none')}</code>; "
             f"training data: <code>{_h(data.train or ev.get('train_data') or 'none')}</code>; budgets: "
             f"<code>{_h(json.dumps(ev.get('budgets', {})))}</code></p>")
    return (f"<h2>Pipeline: {_h(pipe.get('name'))}</h2>" + _table(["step", "plugin", "enabled", "parameters"], body, 9)
            + extra)


def _results_section(results: list[StepResult]) -> str:
    if lm_html.is_lm_run(results):  # perplexity, agreement, KL, decode tok/s, prefill, memory
        return lm_html.results_section(results)
    batches = list((results[0].latency or {}).keys()) if results else []
    head = ["step", "size", "zip", "params"] + [f"p50 / p90 ms b{b}" for b in batches] + \
        ["top-1 (95% CI)", _fidelity_head(results), "flags", "time"]
    body = []
    for r in results:
        size, lat, acc, fid = r.size, r.latency or {}, r.accuracy, r.fidelity
        cells = [f"<b>{_h(r.step_id)}</b> {_h(r.title)}" + (" <span class='tag'>cached</span>" if r.cached else ""),
                 fmt_bytes(size.bytes_on_disk), fmt_bytes(size.zip_bytes), f"{size.param_count or 0:,}"]
        for b in batches:
            rep = lat.get(b)
            cells.append(f"{rep.p50_ms:.3f} / {rep.p90_ms:.3f}" if rep else "–")
        if acc:
            lo, hi = wilson(acc.top1, acc.n)
            cells.append(f"{acc.top1:.4f} ({lo:.3f}–{hi:.3f})")
        else:
            cells.append("–")
        cells.append(_h(fidelity_cell(fid)) if fid is not None and fid.task else
                     _num(fid.mean_cosine if fid else None, ".4f"))
        cells.append("".join(f"<span class='flag'>{_h(f)}</span>" for f in r.flags) or "<span class='ok'>ok</span>")
        cells.append(f"{r.duration_s:.1f}s")
        body.append(cells)
    first = results[0].fidelity if results else None
    why = (f"<p class='muted'>task: <b>{_h(first.task)}</b> ({_h(first.task_reason)}); fidelity = "
           f"{_h(first.metric)} vs the original on {_h(first.dataset)}</p>") if first is not None and first.task else ""
    return "<h2>Results per step</h2>" + why + _table(head, body)


def _fidelity_head(results: list[StepResult]) -> str:
    """"cosine" for records from before tasks; else the task's headline metric."""
    first = results[0].fidelity if results else None
    return f"fidelity: {first.metric}" if first is not None and first.task and first.metric else "cosine"


def _charts(results: list[StepResult]) -> str:
    labels = [f"{r.step_id}: {r.title}" for r in results]
    sizes = [r.size for r in results]
    parts = [svg.hbar_chart(labels, [("on disk", [s.bytes_on_disk / 1e6 for s in sizes]),
                                     ("zip-compressed", [s.zip_bytes / 1e6 if s.zip_bytes is not None
                                                         else None for s in sizes])],
                            unit="MB", title="Size")]
    parts += lm_html.charts(results)
    batches = list((results[0].latency or {}).keys()) if results else []
    for b in batches:
        reps = [(r.latency or {}).get(b) for r in results]
        kinds = {rep.input_kind for rep in reps if rep}
        parts.append(svg.hbar_chart(labels, [(f"p50 (whisker: min … p90), batch {b}",
                                              [rep.p50_ms if rep else None for rep in reps])],
                                    errors=[[(rep.min_ms, rep.p90_ms) if rep else None for rep in reps]],
                                    unit="ms", title=f"Latency, batch {b} ({', '.join(sorted(kinds))} inputs)"))
    accs = [r.accuracy for r in results]
    if any(accs):
        lows = [a.top1 for a in accs if a]
        vmin = max(0.0, math.floor(min(wilson(a.top1, a.n)[0] for a in accs if a) * 10) / 10 - 0.0)
        vmin = min(vmin, min(lows)) if lows else 0.0
        parts.append(svg.hbar_chart(labels, [("top-1", [a.top1 if a else None for a in accs])],
                                    errors=[[wilson(a.top1, a.n) if a else None for a in accs]],
                                    title="Top-1 accuracy with 95% Wilson interval", vmin=vmin, vmax=1.0,
                                    value_fmt=lambda v: f"{v:.4f}"))
    return "<h2>Charts</h2><div class='charts'>" + "".join(f"<figure>{p}</figure>" for p in parts) + "</div>"


def _warnings(results: list[StepResult], record: RunRecord) -> str:
    items = [f"<li><b>{_h(r.step_id)}</b> {_h(w)}</li>" for r in results for w in r.warnings]
    notes = [f"<li><b>{_h(r.step_id)}</b> {_h(n)}</li>" for r in results for n in r.notes]
    err = record.error
    if err:
        items.insert(0, f"<li class='err'><b>{_h(err.step_id or err.subject)}</b> "
                        f"{_h(err.message)} — {_h(err.hint)}</li>")
    out = "<h2>Warnings and flags</h2>" + (f"<ul class='warn'>{''.join(items)}</ul>" if items
                                           else "<p class='ok'>No warnings.</p>")
    if notes:
        out += f"<details><summary>Step notes ({len(notes)})</summary><ul>{''.join(notes)}</ul></details>"
    return out


def _layers_section(before: tuple[list | None, str], after: tuple[list | None, str], same: bool) -> str:
    out = ["<h2>Per-layer statistics, before and after</h2>"]
    rows_b, why_b = before
    rows_a, why_a = after
    stacks = []
    for label, rows in (("original", rows_b), ("final", rows_a)):
        if rows:
            stacks.append((label, {k: v / 1e6 for k, v in _dtype_bytes(rows).items()}))
    if stacks:
        out.append(svg.stacked_bar(stacks, title="Weight bytes by dtype", unit="MB"))
    for title, rows, why in (("Original model", rows_b, why_b), ("Final model", rows_a, why_a)):
        if title == "Final model" and same:
            out.append("<p class='muted'>The final model is the original (no step changed it).</p>")
            continue
        if not rows:
            out.append(f"<h3>{title}</h3><p class='muted'>{_h(why)}</p>")
            continue
        total = sum(r.get("params") or 0 for r in rows)
        zeros = sum((r.get("sparsity") or 0) * (r.get("params") or 0) for r in rows)
        nonfinite = sum((r.get("nan_count") or 0) + (r.get("inf_count") or 0) for r in rows)
        out.append(f"<h3>{title}: {len(rows)} weight tensors, {total:,} values, "
                   f"{zeros / max(total, 1) * 100:.1f}% zeros, {nonfinite} NaN/Inf</h3>"
                   f"<p class='muted'>The {min(TOP_LAYERS, len(rows))} largest tensors "
                   f"(outliers: |w − mean| &gt; 6 std).</p>" + _layer_table(rows))
    return "".join(out)


def _exports_section(exports: list[dict[str, Any]]) -> str:
    if not exports:
        return ("<h2>Exports</h2><p class='muted'>No exports recorded for this run "
                "(<code>slimline export RUN --format …</code> adds them).</p>")
    body = []
    for e in exports:
        rec = e.get("model_export", e)
        p = rec.get("parity") or {}
        if p.get("kind") == "weights":
            par = f"{p.get('n')} tensors bit-exact"
        elif p.get("kind") == "lm":  # a language model: logits on token windows + greedy tokens
            g = p.get("greedy") or {}
            par = (f"{p.get('precision')}, {p.get('runtime')}: logits max abs {p.get('max_abs_error', 0):.3g} "
                   f"(≤ {p.get('max_abs_allowed', 0):.3g}), next-token agr. {_num(p.get('top1_agreement'), '.4f')} "
                   f"on {p.get('dataset')}{'' if p.get('input_kind') == 'dataset' else ' (RANDOM)'}; greedy "
                   f"{g.get('matched')}/{g.get('new_tokens')} tokens as the source")
        elif p:
            par = (f"{p.get('precision')}, {p.get('runtime')}: max abs {p.get('max_abs_error', 0):.3g} "
                   f"(≤ {p.get('max_abs_allowed', 0):.3g}), cos {_num(p.get('mean_cosine'), '.6f')}, "
                   f"top-1 agr. {_num(p.get('top1_agreement'), '.4f')} on {p.get('n')} "
                   f"{'rows' if p.get('input_kind') == 'dataset' else 'RANDOM rows'}")
        else:
            par = "–"
        where = e.get("bundle_dir") or rec.get("path")
        kind = "bundle" if "bundle_dir" in e else rec.get("format")
        step = (rec.get("source") or {}).get("step_id") or "–"
        body.append([_h(kind), _h(step), f"<code class='path'>{_h(where)}</code>",
                     fmt_bytes(e.get("bytes", rec.get("bytes"))),
                     f"<code>{_h((rec.get('sha256') or '')[:16])}…</code>", _h(par)])
    return "<h2>Exports</h2>" + _table(["format", "step", "path", "size", "sha256", "parity"], body, 3, 4)


def _environment(record: RunRecord, results: list[StepResult]) -> str:
    env = record.environment
    lat = next(iter((results[0].latency or {}).values()), None) if results else None
    method = ""
    if lat:
        method = (f"<p>Latency: {lat.runs} timed runs after {lat.warmup} warm-up runs, {lat.threads} "
                  f"thread{'s' if lat.threads != 1 else ''}, {_h(lat.provider)} on {_h(lat.device_name)}, "
                  f"{_h(lat.input_kind)} inputs. Bars are p50; whiskers run from the fastest run to p90.</p>")
    vers = ", ".join(f"{_h(k)} {_h(v)}" for k, v in (env.get("versions") or {}).items())
    method += lm_html.method_line(results)
    return (f"<h2>Where and how this was measured</h2>{method}<p>{_h(env.get('cpu'))}, "
            f"{_h(env.get('cores_usable') or env.get('cores_logical'))} usable cores, {_h(env.get('os'))}, "
            f"Python {_h(env.get('python'))}; {vers}.</p><p class='muted'>Accuracy intervals are 95% Wilson "
            "score intervals for the number of evaluated samples.</p>")


def _search_html(search: Any) -> str:
    if search is None:
        return ""
    from slimline.core.export.report_search import search_section

    return search_section(search)


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1180px;color:#1d1d1f;
 padding:0 20px;line-height:1.4}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:14px;margin:14px 0 6px}.muted{color:#666}code{font-size:12px;background:#f3f3f5;padding:1px 4px;
 border-radius:3px;word-break:break-all}
table{border-collapse:collapse;font-size:12.5px;width:100%;margin:6px 0}th,td{padding:4px 8px;
 border-bottom:1px solid #eee;text-align:left;vertical-align:top}th{background:#f7f7f9;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.boxes{display:flex;gap:16px}.box{flex:1;border:1px solid #e3e3e6;border-radius:8px;padding:8px 14px}
.box ul{margin:4px 0;padding-left:18px;font-size:13px}
.tiles{display:flex;gap:12px;margin:14px 0;flex-wrap:wrap}.tile{border:1px solid #e3e3e6;border-radius:8px;
 padding:8px 14px;min-width:170px}.tile .k{font-size:12px;color:#666}.tile .v{font-size:22px;font-weight:600}
.tile .s{font-size:12px;color:#444}
.flag{background:#fde8e8;color:#9b1c1c;border-radius:3px;padding:0 5px;margin-right:4px;font-size:11.5px}
.tag{background:#eef;color:#335;border-radius:3px;padding:0 4px;font-size:11px}.ok{color:#2f7a3c}
ul.warn li{margin:2px 0}li.err{color:#9b1c1c}.charts{display:grid;grid-template-columns:1fr 1fr;gap:8px 24px}
code.path{word-break:normal;overflow-wrap:anywhere;min-width:260px;display:inline-block}
figure{margin:6px 0;min-width:0}svg{max-width:100%;height:auto}
"""


def write_report(run_record: RunRecord | dict[str, Any], path: str | Path, *,
                 exports: list[dict[str, Any]] | None = None, stats: bool = True,
                 progress: Callable[[float, str], None] | None = None, search: Any = None) -> Path:
    """Write the HTML report for ``run_record`` to ``path`` (atomically); returns the path.

    ``search``: the run's SearchResult (report_search.load_search) for a budgeted search run.
    """
    from slimline.core import __version__

    def step(f: float, m: str) -> None:
        if progress is not None:
            progress(f, m)

    run_record = as_run(run_record)  # a dict is a run.json read by the caller
    results = run_record.results
    original = run_record.model or (results[0].model if results else None)
    final = run_record.final_model or (results[-1].model if results else None)
    same = bool(original and final and original.path == final.path)
    before: tuple[list | None, str] = (None, "skipped (--no-stats)")
    after: tuple[list | None, str] = (None, "skipped (--no-stats)")
    if stats:
        step(0.1, "layer statistics of the original model")
        before = layer_stats(original)
        step(0.5, "layer statistics of the final model")
        after = before if same else layer_stats(final)
    step(0.8, "writing HTML")
    pipe = run_record.pipeline
    status = run_record.status
    body = [
        f"<h1>Slimline run {_h(run_record.run_id)}</h1>",
        f"<p class='muted'>{_h(pipe.get('name'))} — status <b>{_h(status)}</b>, created "
        f"{_h(run_record.created)}; report written {time.strftime('%Y-%m-%d %H:%M')} by Slimline "
        f"{_h(__version__)}.</p>",
        _headline(results),
        "<div class='boxes'>" + _model_box("Original model", original, results[0].size if results else None)
        + _model_box("Final model", final, results[-1].size if results else None) + "</div>",
        _pipeline_section(run_record),
        _results_section(results) if results else "<p>No results.</p>",
        _charts(results) if results else "",
        lm_html.generations_section(results),
        _search_html(search),
        _warnings(results, run_record),
        _layers_section(before, after, same),
        _exports_section(exports or []),
        _environment(run_record, results),
    ]
    html = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>Slimline report {_h(run_record.run_id)}</title><style>{CSS}{lm_html.CSS}</style></head><body>"
            + "".join(body) + "</body></html>\n")
    out = Path(path)
    atomic_write_text(out, html)
    step(1.0, "done")
    return out
