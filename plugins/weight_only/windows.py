"""The text the step calibrates and checks on: a text file cut into windows, or the model's own samples.

Calibration windows (sensitivity, GPTQ, the mixed-precision search) and check windows (the final
verdict) are different windows of the same text, so the reported figures are not the ones the
search tuned for. Without text, the input model's own samples (temperature 1) serve: a quantized
copy that lost the model shows a perplexity jump on them too; they are labelled as such.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slimline.core.errors import StepFailed
from slimline.core.lm.onnx_lm import LMSignature, OnnxLM, sampled_windows
from slimline.core.lm.text import TextWindows, load_tokenizer, starts_with_bos
from slimline.plugins._shared import lm

SAMPLED = "(sampled from the input model)"


def text_source(params: Any, ctx: Any) -> lm.TextSource | None:
    """The text file: the step's ``text_file``, else the pipeline's data when it is a text file."""
    if params.text_file:
        p = Path(params.text_file).expanduser()
        if not p.is_file():
            raise StepFailed("text file not found", subject=str(p), hint="give a plain UTF-8 text file")
        ev = getattr(getattr(ctx, "data", None), "eval", None)
        ev_src = getattr(ev, "source", None)
        same = bool(ev_src) and Path(str(ev_src)).resolve() == p.resolve()
        return lm.TextSource(path=p, role="text_file", same_as_eval=same)
    found = lm.text_source(ctx, ("calibration", "train", "eval"))
    if found is not None:
        return found
    ev = getattr(ctx, "evaluation", None)
    for attr, role in (("train_data", "train"), ("data", "eval")):
        src = getattr(ev, attr, None)
        if src and Path(str(src)).suffix.lower() in lm.TEXT_SUFFIXES and Path(str(src)).is_file():
            return lm.TextSource(path=Path(str(src)), role=role, same_as_eval=role == "eval")
    return None


def first_token(folder: Path) -> int:
    """The BOS id from genai_config.json / config.json beside the model (0 when neither says)."""
    for name, path in (("genai_config.json", ("model", "bos_token_id")), ("config.json", ("bos_token_id",))):
        f = folder / name
        if not f.is_file():
            continue
        try:
            value: Any = json.loads(f.read_text(encoding="utf-8"))
            for key in path:
                value = value[key]
            if isinstance(value, list):
                value = value[0]
            return int(value)
        except (KeyError, ValueError, TypeError, IndexError, json.JSONDecodeError):
            continue
    return 0


def split(w: TextWindows, n_cal: int, n_chk: int) -> tuple[TextWindows, TextWindows, list[str]]:
    """First ``n_cal`` windows for calibration, the next ``n_chk`` for the check (fewer when the text is short)."""
    got = w.count
    if got >= n_cal + n_chk:
        return w.take(n_cal), _rows(w, n_cal, n_cal + n_chk), []
    if got == 1:
        return w, w, [f"{w.name} holds one window only: the same window serves calibration and the check"]
    chk = max(1, round(got * n_chk / (n_cal + n_chk)))
    return (w.take(got - chk), _rows(w, got - chk, got),
            [f"{w.name} holds {got} windows: {got - chk} for calibration, {chk} for the check"])


def _rows(w: TextWindows, lo: int, hi: int) -> TextWindows:
    return w.model_copy(update={"ids": w.ids[lo:hi], "scored": w.scored[lo:hi]})


def calibration_and_check(params: Any, ctx: Any, folder: Path, sig: LMSignature, runner: OnnxLM
                          ) -> tuple[TextWindows, TextWindows, list[str]]:
    """(calibration windows, check windows, notes) for this run."""
    n_cal, n_chk = params.calibration_windows, params.check_windows
    src = text_source(params, ctx)
    notes: list[str] = []
    if src is None:
        length = (sig.seq_len or params.window_length + 1) - 1
        w = sampled_windows(runner, count=n_cal + n_chk, length=length, first_token=first_token(folder),
                            seed=getattr(ctx, "seed", 0), source=SAMPLED)
        w = w.model_copy(update={"tokenizer": SAMPLED})
        notes.append(f"no text file: {n_cal + n_chk} windows of {length} tokens sampled from the input model "
                     f"(seed {getattr(ctx, 'seed', 0)})")
    else:
        tok = load_tokenizer(folder, subject=str(folder))
        bos = starts_with_bos(tok) is not None
        length = (sig.seq_len - (1 if bos else 0)) if sig.seq_len else params.window_length
        if sig.seq_len and length != params.window_length:
            notes.append(f"windows of {length} tokens: the export fixes the sequence length at {sig.seq_len}")
        w = lm.cut_windows(src, tok, ctx, length=length, count=n_cal + n_chk, tokenizer_name=str(folder))
        if src.overlaps_eval:
            notes.append("the text is too short to calibrate past the windows the evaluation scores: the figures "
                         "after this step are optimistic (give a separate --train-data text)")
        elif src.same_as_eval:
            notes.append("calibration and check windows start after the text the evaluation scores")
    cal, chk, more = split(w, n_cal, n_chk)
    notes += more
    notes.append(f"calibration on {cal.describe()}; check on {chk.describe()}")
    return cal, chk, notes
