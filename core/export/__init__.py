"""Export and deployment: verified model files, deployment bundles, Triton repos, HTML reports.

Importing this package is light (no torch/onnx at module level); the heavy
libraries load inside the functions that need them.
"""
from slimline.core.export.records import FORMATS, ExportError, ExportRecord, FileEntry, Parity, ParityError, Tolerance

__all__ = ["FORMATS", "ExportError", "ExportRecord", "FileEntry", "Parity", "ParityError", "Tolerance",
           "export_model", "export_bundle", "write_triton_repo", "write_report", "resolve_variant",
           "formats_for", "export_variant"]


def formats_for(family: str, *, language_model: str = "") -> list[str]:
    """Export formats that fit a model family (what the GUI's format list offers).

    ``language_model``: ``core.export.lm.lm_kind(handle)`` — "torch" (a causal LM: every genai
    precision and the logits export), "genai" (a genai folder's ONNX: copied as onnx-genai).
    """
    if family == "torch":
        lm = ["onnx-genai", "onnx-genai-fp16", "onnx-genai-int4", "onnx-logits"] if language_model == "torch" else []
        return ["onnx", *lm, "torchscript", "pt2", "safetensors", "bundle"]
    if family == "onnx":
        return ["onnx", *(["onnx-genai"] if language_model == "genai" else []), "safetensors", "bundle"]
    return ["safetensors"]


def export_variant(handle, fmt: str, out_dir, **options):
    """One entry point for every format: ``bundle`` builds a deployment bundle, the rest
    call export_model. Options are passed through (force, data, cancel, name, progress…)."""
    if str(fmt).lower() == "bundle":
        from slimline.core.export.bundle import export_bundle

        return export_bundle(handle, out_dir, **options)
    from slimline.core.export.formats import export_model

    return export_model(handle, fmt, out_dir, **options)


def __getattr__(name: str):  # lazy: keep `import slimline.core.export` cheap
    if name == "export_model":
        from slimline.core.export.formats import export_model

        return export_model
    if name == "export_bundle":
        from slimline.core.export.bundle import export_bundle

        return export_bundle
    if name == "write_triton_repo":
        from slimline.core.export.triton import write_triton_repo

        return write_triton_repo
    if name == "write_report":
        from slimline.core.export.report import write_report

        return write_report
    if name == "resolve_variant":
        from slimline.core.export.variants import resolve_variant

        return resolve_variant
    raise AttributeError(name)
