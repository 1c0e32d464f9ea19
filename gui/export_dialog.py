"""Export dialog: pick a variant (preselected from the results), a format and a folder.

The export engine (``slimline.core.export``) belongs to another part of the
project; when it is not installed the dialog says so plainly instead of
pretending. The export itself runs on a worker thread with its progress shown.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                               QLineEdit, QPushButton, QVBoxLayout, QWidget)

from slimline.gui.layer_table import fmt_bytes
from slimline.gui.messages import describe_exception
from slimline.gui.results import Variant, fmt_ms
from slimline.gui.workers import run_in_thread

DEFAULT_FORMATS = {"onnx": ["onnx", "onnx_fp16", "bundle"], "torch": ["torchscript", "torch_export", "safetensors", "onnx", "bundle"],
                   "weights": ["safetensors"]}


def export_engine() -> tuple[Any, str]:
    """(module, "") when the export engine is importable, else (None, why not)."""
    try:
        from slimline.core import export as mod  # type: ignore[attr-defined]
    except ImportError as exc:
        return None, f"export is not available yet ({exc})"
    return mod, ""


def _formats_for(mod: Any, family: str) -> list[str]:
    for name in ("formats_for", "available_formats", "supported_formats"):
        fn = getattr(mod, name, None)
        if callable(fn):
            try:
                return [str(f) for f in fn(family)]
            except Exception:  # fall back to the defaults below
                break
    return DEFAULT_FORMATS.get(family, ["onnx"])


def _export_function(mod: Any) -> Callable[..., Any] | None:
    for name in ("export_variant", "export_model", "export"):
        fn = getattr(mod, name, None)
        if callable(fn):
            return fn
    return None


class ExportDialog(QDialog):
    """Emits nothing; ``result_record`` holds what the engine returned after a successful export."""

    def __init__(self, variants: list[Variant], selected_key: str = "", parent: QWidget | None = None,
                 default_dir: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("Export variant")
        self.variants = list(variants)
        self.result_record: Any = None
        self.engine, self.unavailable = export_engine()
        self.variant_combo = QComboBox()
        for v in self.variants:
            self.variant_combo.addItem(f"{v.run_id} · {v.label}", v.key)
        i = self.variant_combo.findData(selected_key)
        if i >= 0:
            self.variant_combo.setCurrentIndex(i)
        self.format_combo = QComboBox()
        self.out_edit = QLineEdit(default_dir or str(Path.home() / "slimline-export"))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._on_browse_clicked)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(browse)
        self.details = QLabel()
        self.details.setWordWrap(True)
        self.status = QLabel(self.unavailable)
        self.status.setWordWrap(True)
        if self.unavailable:
            self.status.setStyleSheet("color: #b35900;")
        form = QFormLayout()
        form.addRow("Variant:", self.variant_combo)
        form.addRow("Format:", self.format_combo)
        form.addRow("Output folder:", out_row)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.AcceptRole)
        self.export_button.setEnabled(self.engine is not None and _export_function(self.engine) is not None)
        if self.engine is not None and _export_function(self.engine) is None:
            self.status.setText("export engine found, but it offers no export function this dialog knows")
        self.buttons.rejected.connect(self.reject)
        self.export_button.clicked.connect(self._on_export_clicked)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.details)
        lay.addWidget(self.status)
        lay.addWidget(self.buttons)
        self.variant_combo.currentIndexChanged.connect(self._on_variant_changed)
        self._on_variant_changed()
        self.resize(560, 260)

    def selected_variant(self) -> Variant | None:
        key = self.variant_combo.currentData()
        return next((v for v in self.variants if v.key == key), None)

    def _on_variant_changed(self, *_: Any) -> None:
        v = self.selected_variant()
        self.format_combo.clear()
        if v is None:
            return
        family = (v.model or {}).get("family", "onnx")
        formats = _formats_for(self.engine, family) if self.engine is not None else DEFAULT_FORMATS.get(family, ["onnx"])
        self.format_combo.addItems(formats)
        q = v.quality
        self.details.setText(f"{v.title}: {(v.model or {}).get('format', '?')}, {fmt_bytes(v.size)}, "
                             f"p50 {fmt_ms(v.p50)} / p90 {fmt_ms(v.p90)}, "
                             f"{'quality n/a' if q.value is None else f'{q.value:.4f} ({q.label})'}"
                             + (f" — flags: {', '.join(v.flags)}" if v.flags else ""))

    def _on_browse_clicked(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Export to", self.out_edit.text())
        if path:
            self.out_edit.setText(path)

    def _on_export_clicked(self) -> None:
        v = self.selected_variant()
        fn = _export_function(self.engine) if self.engine is not None else None
        if v is None or fn is None:
            return
        from slimline.core.handle import ModelHandle

        handle = ModelHandle.model_validate(v.model)
        fmt, out = self.format_combo.currentText(), self.out_edit.text().strip()
        kwargs: dict[str, Any] = {}
        params = inspect.signature(fn).parameters
        for name, value in (("format", fmt), ("fmt", fmt), ("out_dir", out), ("out", out), ("output", out)):
            if name in params:
                kwargs[name] = value
        self.export_button.setEnabled(False)
        self.status.setStyleSheet("")
        self.status.setText(f"Exporting {v.label} as {fmt}…")
        run_in_thread(fn, handle, **kwargs, on_done=self._on_export_done, on_error=self._on_export_failed)

    def _on_export_done(self, record: Any) -> None:
        self.result_record = record
        self.status.setText(f"Exported to {self.out_edit.text()}")
        self.export_button.setEnabled(True)

    def _on_export_failed(self, exc: BaseException, tb: str) -> None:
        msg = describe_exception(exc, tb=tb)
        self.status.setStyleSheet("color: #d62728;")
        self.status.setText(f"{msg.text}" + (f"\n→ {msg.hint}" if msg.hint else ""))
        self.export_button.setEnabled(True)
