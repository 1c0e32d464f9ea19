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
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_NESTED_ROPE_TYPES = ("gemma3_text", "gemma3")


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


def main() -> None:
    """The builder's own command line (same arguments), with :func:`flatten_rope` applied to its config."""
    from onnxruntime_genai.models import builder as b

    original = b.get_hf_details

    def get_hf_details(*args: Any, **kwargs: Any) -> Any:
        details = original(*args, **kwargs)
        flatten_rope(details["hf_config"])
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
