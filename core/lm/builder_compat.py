"""The onnxruntime-genai model builder, run with the config fixes its 0.18 release needs under transformers 5.

transformers 5 keeps Gemma 3's two RoPE settings nested by layer type (``rope_parameters =
{"full_attention": {...}, "sliding_attention": {...}}``) and no longer has ``rope_local_base_freq``;
the builder (``Gemma3Model``) reads the old flat form and stops with ``KeyError: 'rope_type'``. Its
loading of the weights is separate (its own ``from_pretrained``), so only the config object the builder
reads is changed: the global layers' RoPE becomes the flat ``rope_parameters``/``rope_theta`` and the
sliding layers' theta ``rope_local_base_freq`` — what the builder computes its two cos/sin caches from.

Run as ``python -m slimline.core.lm.builder_compat <builder arguments>`` (a child process, like the builder
itself); :func:`needs_compat` says when :mod:`slimline.core.lm.genai` routes a build through here.

:func:`default_options`: for models with sliding-window layers the builder's default is a window-sized cache
for those layers, which onnxruntime 1.32's attention kernel refuses whenever the generate API sizes it below
the window (``max_length`` < window: any short generation); full-length caches for every layer avoid that,
and the kernel still attends within the window (``local_window_size``), so the results are the same.

Context-length cap (``--slimline_context_length N``, stripped before the builder parses its arguments): the builder
sizes its rotary cos/sin tables (fp32 initializers, never quantized), ``genai_config.json``'s ``context_length`` and
``search.max_length`` by ``max_position_embeddings``. Gemma 3 270M's 32768 positions cost 67 MB of tables (5.9 % of
the fp32 model); a model served for short contexts gets the same tables cut to N rows by building from a config that
says N. :func:`cap_context` does that in the same patched config read; the rows kept are the same numbers the
uncapped build has (the RoPE rescaling that depends on the original length keeps it).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_NESTED_ROPE_TYPES = ("gemma3_text", "gemma3")
CONTEXT_ARG = "--slimline_context_length"
MIN_CONTEXT = 16
# RoPE variants whose frequencies depend on the original context length (the builder's original_context_length)
_LENGTH_SCALED_ROPE = ("llama3", "yarn")


def needs_compat(hf_dir: Path) -> bool:
    """True when the folder's config has per-layer-type RoPE that the builder reads wrongly (Gemma 3)."""
    try:
        cfg = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    cfg = cfg.get("text_config", cfg) if cfg.get("model_type") == "gemma3" else cfg
    rope = cfg.get("rope_parameters")
    return (cfg.get("model_type") in _NESTED_ROPE_TYPES and isinstance(rope, dict)
            and isinstance(rope.get("full_attention"), dict))


def default_options(hf_dir: Path) -> dict[str, str]:
    """Builder ``--extra_options`` Slimline sets for this folder (the caller's own options win)."""
    try:
        cfg = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    cfg = cfg.get("text_config", cfg) if isinstance(cfg.get("text_config"), dict) else cfg
    if "sliding_attention" in (cfg.get("layer_types") or []):
        return {"windowed_kv_cache": "false"}
    return {}


def flatten_rope(config: Any) -> None:
    """Give a transformers-5 Gemma 3 config the flat RoPE fields the builder reads (in place; idempotent)."""
    targets = [config] + ([config.text_config] if getattr(config, "text_config", None) is not None else [])
    for c in targets:
        rope = getattr(c, "rope_parameters", None)
        if not isinstance(rope, dict) or not isinstance(rope.get("full_attention"), dict):
            continue
        full, local = dict(rope["full_attention"]), rope.get("sliding_attention") or {}
        c.rope_parameters = full
        c.rope_theta = full.get("rope_theta", 10000.0)
        c.rope_local_base_freq = local.get("rope_theta", c.rope_theta)


def _text_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The language model's part of a config.json (``text_config`` of a multimodal one, else the whole)."""
    text = cfg.get("text_config")
    return text if isinstance(text, dict) else cfg


def model_context_length(cfg: dict[str, Any]) -> int | None:
    """The positions a model's config.json says it serves (``max_position_embeddings``; text config when nested)."""
    value = _text_config(cfg).get("max_position_embeddings") or cfg.get("max_position_embeddings")
    return int(value) if value else None


def context_length_problem(cfg: dict[str, Any], n: int) -> str | None:
    """Why the builder cannot serve at most ``n`` positions of this model (its config.json as a dict), or None."""
    if n < MIN_CONTEXT:
        return f"a context length of {n} is below the smallest one served ({MIN_CONTEXT} positions)"
    own = model_context_length(cfg)
    if own is None:
        return "the model's config.json has no max_position_embeddings, so its context length cannot be capped"
    if n > own:
        return (f"a context length of {n} is more than the model was made for ({own} positions, its "
                "max_position_embeddings); use at most that, or 0 for the model's own")
    text = _text_config(cfg)
    rope = text.get("rope_parameters") or text.get("rope_scaling") or {}
    if isinstance(rope, dict) and rope.get("rope_type", rope.get("type")) in ("longrope", "su") and n < own:
        return ("LongRoPE models (Phi-3 long-context) switch between two RoPE tables at their original length, "
                "which a capped build would change; export them at their own context length (0)")
    return None


def cap_context(config: Any, n: int) -> None:
    """Make a builder's config object say ``n`` positions (in place; only ever lowers; text config too).

    ``seq_length`` wins over ``max_position_embeddings`` in the builder, so it is capped as well. RoPE rescaling
    that reads the original length (llama3, yarn) gets it pinned as ``original_max_position_embeddings`` where
    the builder would have fallen back to ``max_position_embeddings``: the kept rows stay the uncapped ones. An
    ``original_max_position_embeddings`` equal to the maximum (no extension) follows it down, since the builder
    picks Phi-3's variant by comparing the two.
    """
    targets = [config] + ([config.text_config] if getattr(config, "text_config", None) is not None else [])
    for c in targets:
        own = getattr(c, "max_position_embeddings", None)
        if not own or n >= int(own):
            continue
        if getattr(c, "original_max_position_embeddings", None) == own:  # not extended (Phi-3 4k): both say n
            c.original_max_position_embeddings = int(n)
        rope = getattr(c, "rope_parameters", None) or {}
        if (isinstance(rope, dict) and rope.get("rope_type") in _LENGTH_SCALED_ROPE
                and getattr(c, "original_max_position_embeddings", None) is None):
            c.original_max_position_embeddings = int(own)
        c.max_position_embeddings = int(n)
        if getattr(c, "seq_length", None) and int(c.seq_length) > n:
            c.seq_length = int(n)


def _pop_context_arg(argv: list[str]) -> int | None:
    """``--slimline_context_length N`` taken out of ``argv`` (in place), so the builder's argparse never sees it."""
    if CONTEXT_ARG not in argv:
        return None
    i = argv.index(CONTEXT_ARG)
    value = argv[i + 1] if i + 1 < len(argv) else ""
    del argv[i:i + 2]
    if not value.isdigit():
        raise SystemExit(f"{CONTEXT_ARG} needs a whole number of positions, not {value!r}")
    return int(value)


def main() -> None:
    """The builder's own command line (same arguments), with :func:`flatten_rope` (and :func:`cap_context` for
    ``--slimline_context_length N``) applied to the config it reads."""
    import sys

    from onnxruntime_genai.models import builder as b

    context = _pop_context_arg(sys.argv)
    original = b.get_hf_details

    def get_hf_details(*args: Any, **kwargs: Any) -> Any:
        details = original(*args, **kwargs)
        flatten_rope(details["hf_config"])
        if context:
            cap_context(details["hf_config"], context)
        return details

    b.get_hf_details = get_hf_details
    # the builder's `if __name__ == "__main__"` block (0.18), which runpy cannot run with the patch in place
    args = b.get_args()
    extra_options = b.parse_extra_options(
        args.model_name, args.input, args.output, args.precision, args.execution_provider, args.cache_dir,
        args.extra_options, builder_config_version=args.builder_config_version, target_options=args.target_options,
        drafter_options=args.drafter_options, speculative_options=args.speculative_options,
        runtime_config=args.runtime_config, search=args.search)
    b.create_model(args.model_name, args.input, args.output, args.precision, args.execution_provider,
                   args.cache_dir, **extra_options)


if __name__ == "__main__":
    main()
