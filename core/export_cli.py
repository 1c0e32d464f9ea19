"""`slimline export`: write a verified model file (or a deployment bundle) for one variant."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from slimline.core.errors import SlimlineError

FORMAT_CHOICES = ("onnx", "torchscript", "pt2", "safetensors", "onnx-genai", "onnx-genai-fp16", "onnx-genai-int4",
                  "onnx-logits", "bundle")

HELP = """\
Every export is verified: the written file is loaded back with its own runtime and
compared with the variant on the evaluation data (the run's, or --data; labelled
random inputs otherwise). Tolerances by precision (abs limit × max(1, max|output|)):
  fp32  1e-3, mean cosine ≥ 0.9999, top-1 agreement ≥ 0.99
  fp16  1e-2, mean cosine ≥ 0.999,  top-1 agreement ≥ 0.98
  int8  5e-2, mean cosine ≥ 0.99,   top-1 agreement ≥ 0.97
A failed check is an error and nothing is written. Existing files need --force.

Language models (causal LMs, and the onnxruntime-genai folders made from them):
  onnx-genai[-fp16|-int4]  the onnxruntime-genai model builder's folder (KV cache, generate API):
                           model.onnx + genai_config.json + tokenizer + chat.py + README.md;
                           int4 is the builder's default (RTN, block 32). A variant that already is
                           a genai folder (e.g. after weight-only quantization) is copied, not rebuilt.
  onnx-logits              a plain logits ONNX (no cache), for evaluation
  bundle                   the genai folder + model card + SHA256SUMS (--precision fp32|fp16|int4)
  Checked against the variant: logits on token windows of --data (a text file; else random token
  ids) within fp32 1e-3 / fp16 2e-2 of max |logit|, next-token agreement ≥ 0.99 / 0.97, greedy
  tokens identical except at near-ties; int4 only guards against a broken model (agreement ≥ 0.5)
  and reports the rest. chat.py is run once in a child process and must print the same tokens.

Examples:
  slimline export runs/<run_id> --format onnx --out deploy/
  slimline export runs/<run_id> --step s2 --format torchscript --out deploy/
  slimline export runs/<run_id> --format bundle --zip --triton --out digits-bundle/
  slimline export SmolLM2-folder/ --format onnx-genai-int4 --data text.txt --out deploy/
  slimline export runs/<run_id> --step s1 --format bundle --precision int4 --out smollm2-bundle/
"""


def add_parser(sub: Any) -> None:
    """Add `export` to the `slimline` subparsers (core/cli.py lists it with cmd_export)."""
    e = sub.add_parser("export", help="write a verified ONNX/TorchScript/.pt2/safetensors file or a bundle",
                       description="Export a model file or a run's variant.", epilog=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("variant", help="model file/folder, or a run folder / run.json (default: its final model)")
    e.add_argument("--format", "-f", required=True, choices=FORMAT_CHOICES)
    e.add_argument("--out", "-o", required=True, help="output folder (the bundle folder for --format bundle)")
    e.add_argument("--step", help="run step id to export (default: the run's final model)")
    e.add_argument("--name", help="file name stem (default: model name + step id)")
    e.add_argument("--data", help="evaluation data for the parity check (default: the run's)")
    e.add_argument("--force", action="store_true", help="overwrite existing files")
    e.add_argument("--external-data", action="store_true",
                   help="ONNX: weights in <name>.data (automatic above ~2 GB)")
    e.add_argument("--zip", action="store_true", help="bundle: also write <out>.zip")
    e.add_argument("--triton", action="store_true", help="bundle: add an NVIDIA Triton model repository")
    e.add_argument("--max-batch", type=int, default=64, help="bundle --triton: max_batch_size (default 64)")
    e.add_argument("--precision", choices=("fp32", "fp16", "int4"),
                   help="bundle of a language model: precision the model builder writes (default fp32)")
    e.add_argument("--context-length", type=int, default=0, metavar="N",
                   help="language model, onnx-genai* formats or a bundle: serve at most N tokens (prompt + "
                        "generation); smaller rotary tables and caches (default: the model's own length)")
    e.add_argument("--trust", action="store_true", help="allow loading pickled code from the model file")
    e.add_argument("--json", action="store_true", help="print the export record as JSON")


def cmd_export(args: argparse.Namespace) -> int:
    from slimline.core.export.task import export_variant
    from slimline.core.export.variants import resolve_variant
    from slimline.core.plugin import CancelToken

    if args.precision and args.format != "bundle":
        raise SlimlineError("--precision applies to --format bundle", subject="--precision",
                            hint=f"for {args.format} leave it out; choose onnx-genai, onnx-genai-fp16 or "
                                 "onnx-genai-int4 as the format instead")
    if args.context_length and not (args.format.startswith("onnx-genai") or args.format == "bundle"):
        raise SlimlineError("--context-length applies to the onnx-genai formats and bundles of language models",
                            subject="--context-length", hint=f"leave it out for {args.format}")
    variant = resolve_variant(args.variant, step=args.step, trust=args.trust)
    cancel = CancelToken()
    try:
        exported = export_variant(variant, args.format, args.out, name=args.name or variant.name,
                                  data=args.data or variant.data_path, force=args.force, cancel=cancel,
                                  progress=_printer(), zip_bundle=args.zip, triton=args.triton,
                                  max_batch_size=args.max_batch,
                                  external_data=True if args.external_data else None, lm_precision=args.precision,
                                  lm_context_length=args.context_length)
        record = exported.model_dump(mode="json")
    except KeyboardInterrupt:
        cancel.cancel()
        print("\nexport cancelled; nothing was written", file=sys.stderr)
        return 130
    finally:
        print("", file=sys.stderr)
    if args.json:
        print(json.dumps(record, indent=1))
    else:
        print(describe(record))
    return 0


def _printer() -> Any:
    tty = sys.stderr.isatty()
    last = {"msg": ""}

    def progress(fraction: float, message: str) -> None:
        if message == last["msg"]:
            return
        last["msg"] = message
        if tty:
            sys.stderr.write(f"\r[{int(fraction * 100):3d}%] {message[:90]:<90}")
            sys.stderr.flush()
        else:
            print(f"[{int(fraction * 100):3d}%] {message}", file=sys.stderr)

    return progress


def describe(rec: dict[str, Any]) -> str:
    """Human summary of an export (or bundle) record."""
    lines = []
    if "bundle_dir" in rec:
        lines.append(f"bundle   {rec['bundle_dir']}  ({len(rec.get('files', []))} files, "
                     f"{rec.get('bytes', 0) / 1e6:.2f} MB)")
        if rec.get("zip_path"):
            lines.append(f"zip      {rec['zip_path']}  ({rec.get('zip_bytes', 0) / 1e6:.2f} MB)")
        if rec.get("triton_dir"):
            lines.append(f"triton   {rec['triton_dir']}")
        rec = rec["model_export"]
    lines.append(f"{rec['format']:<8} {rec['path']}  ({rec['bytes'] / 1e6:.2f} MB, sha256 {rec['sha256'][:16]}…)")
    for f in [f for f in rec.get("files", []) if f["path"] != rec["path"]]:
        lines.append(f"         + {f['path']}  ({f['bytes'] / 1e6:.2f} MB)")
    p = rec.get("parity") or {}
    if p.get("kind") == "weights":
        lines.append(f"parity   {p['n']} tensors read back bit-exact ({p['runtime']})")
    elif p:
        top1 = f", top-1 agreement {p['top1_agreement']:.4f}" if p.get("top1_agreement") is not None else ""
        kind = "rows of " + p.get("dataset", "") if p.get("input_kind") == "dataset" else \
            "RANDOM rows (smoke check only)"
        n = f"{p['n']} "
        if p.get("kind") == "lm":  # the dataset text names the windows and their count
            n, kind = "", p.get("dataset", "") + ("" if p.get("input_kind") == "dataset" else " (smoke check only)")
        lines.append(f"parity   {p['precision']} via {p['runtime']} on {n}{kind}: max abs error "
                     f"{p['max_abs_error']:.3g} (allowed {p['max_abs_allowed']:.3g}), mean cosine "
                     f"{p['mean_cosine']:.6f}{top1} — passed")
        g = p.get("greedy")
        if g:
            from slimline.core.lm.parity import GreedyCheck

            check = GreedyCheck.model_validate(g)
            speed = f"; decode {check.decode_tokens_per_s:.1f} tokens/s" if check.decode_tokens_per_s else ""
            lines.append(f"greedy   {check.summary().removeprefix('greedy ')}{speed}")
    for n in rec.get("notes", []):
        lines.append(f"note     {n}")
    return "\n".join(lines)


__all__ = ["add_parser", "cmd_export", "describe", "SlimlineError"]
