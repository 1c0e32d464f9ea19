"""Export dialog: pick a variant (preselected from the results), a format and a folder; export it, verified.

The export engine (``slimline.core.export``) writes into a staging folder, loads
the written file back with its own runtime and compares it with the variant on
the run's evaluation data before anything is moved into place. The dialog runs
it through the engine's job runner (``slimline.core.jobs``, body in
``slimline.core.export.task``) with progress and cancel, and shows the parity
figures from the export record; a failed parity check is an error (nothing was
written), never a warning.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from slimline.core.export.lm import lm_kind
from slimline.core.export.variants import Variant
from slimline.core.handle import ModelHandle
from slimline.core.results import DoneEvent, FailedEvent, JobEvent, ProgressEvent
from slimline.gui.layer_table import fmt_bytes
from slimline.gui.results import fmt_ms, latency_ms, quality, size_bytes, variant_label
from slimline.gui.theme import flag_text, muted_text, ok_text

if TYPE_CHECKING:
    from slimline.core.export.bundle import BundleRecord
    from slimline.core.export.records import ExportRecord, Parity

# (engine format, label, what it is for)
FORMATS = [("onnx", "ONNX (.onnx)", "onnxruntime, TensorRT, OpenVINO, most servers"),
           ("torchscript", "TorchScript (.pt)", "libtorch / C++ and Python without the model's code"),
           ("pt2", "torch.export (.pt2)", "PyTorch 2 ahead-of-time program"),
           ("safetensors", "safetensors (weights only)", "the weights, bit-exact, no code"),
           ("onnx-genai", "ONNX for generation, KV cache (onnxruntime-genai, fp32)",
            "language models: model.onnx + genai_config.json + tokenizer + chat.py; fast generate API"),
           ("onnx-genai-fp16", "ONNX for generation, KV cache, fp16", "language models on a GPU"),
           ("onnx-genai-int4", "ONNX for generation, KV cache, int4 (model builder defaults)",
            "language models; for a better int4 use the weight-only quantize step first"),
           ("onnx-logits", "ONNX logits only (no KV cache)", "language models: evaluation, not generation"),
           ("bundle", "Deployment bundle (ONNX + model card + predict.py)", "a folder you can hand over")]
POLL_MS = 50


def export_engine() -> tuple[Any, str]:
    """(module, "") when the export engine is importable, else (None, why not)."""
    try:
        from slimline.core import export as mod
    except ImportError as exc:
        return None, f"export is not available ({exc})"
    return mod, ""


def format_problem(model: ModelHandle | None, fmt: str) -> str:
    """Why ``fmt`` cannot be used for this variant ("" when it can), from the engine's own check."""
    if model is None or not model.path:
        return "this variant has no model file recorded"
    try:
        from slimline.core.export.formats import check_fits

        check_fits(model, "onnx" if fmt == "bundle" else fmt)
    except ImportError as exc:
        return f"export is not available ({exc})"
    except Exception as exc:  # ExportError (message + hint) or a record the engine cannot read
        return str(getattr(exc, "message", exc))
    return ""


def target_names(fmt: str, name: str) -> list[str]:
    """Files/folders an export would write in the output folder (for the overwrite question)."""
    if fmt == "bundle":
        return [f"{name}-bundle", f"{name}-bundle.zip"]
    from slimline.core.export.formats import normalize_format, output_names

    return output_names(normalize_format(fmt), name)


def describe_parity(p: Parity | None) -> tuple[str, bool]:
    """(sentence, passed) for the export record's parity block; honest about random inputs."""
    if p is None:
        return "no parity check recorded", False
    if p.kind == "weights":
        return f"{p.n} tensors read back and compared ({p.runtime}): max abs error {p.max_abs_error:.3g}", p.passed
    rows = (f"{p.n} rows of {p.dataset or 'the evaluation data'}" if p.input_kind == "dataset"
            else f"{p.n} RANDOM rows (smoke check only, no data)")
    top1 = f", top-1 agreement {p.top1_agreement:.4f}" if p.top1_agreement is not None else ""
    cos = f", mean cosine {p.mean_cosine:.6f}" if p.mean_cosine is not None else ""
    text = (f"Parity check ({p.precision} tolerance; the written file run with {p.runtime}, compared "
            f"with the variant run with {p.source_runtime or 'its own runtime'}) on {rows}: "
            f"max abs error {p.max_abs_error:.3g} (allowed {p.max_abs_allowed:.3g}){cos}{top1}"
            f" — {'passed' if p.passed else 'FAILED: ' + '; '.join(p.failures)}")
    return text, p.passed


def export_record(result: dict[str, Any] | None) -> ExportRecord | BundleRecord:
    """The typed record of a finished export task (its DoneEvent.result: a bundle's or a single file's)."""
    from slimline.core.export.bundle import BundleRecord
    from slimline.core.export.records import ExportRecord

    doc = result or {}
    return BundleRecord.model_validate(doc) if "bundle_dir" in doc else ExportRecord.model_validate(doc)


class ExportDialog(QDialog):
    """``result_record`` holds the engine's record after a successful export; ``exported(record)`` fires then."""

    exported = Signal(object)              # ExportRecord | BundleRecord
    export_failed = Signal(str)

    def __init__(self, variants: list[Variant], selected_key: str = "", parent: QWidget | None = None,
                 default_dir: str = "", workspace: str = "", data_path: str = "", trust: bool = False) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export variant")
        self.variants = list(variants)
        self.workspace, self.data_path, self.trust = workspace, data_path, trust
        self.result_record: ExportRecord | BundleRecord | None = None
        self.job: Any = None
        self.confirm_overwrite: Callable[[list[str]], bool] = self._ask_overwrite
        self.engine, self.unavailable = export_engine()
        self.variant_combo = QComboBox()
        for v in self.variants:
            self.variant_combo.addItem(f"{v.run_id} · {variant_label(v)}", v.key)
        i = self.variant_combo.findData(selected_key)
        if i >= 0:
            self.variant_combo.setCurrentIndex(i)
        self.format_combo = QComboBox()
        self.format_help = QLabel()
        self.format_help.setWordWrap(True)
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("file name (without extension)")
        self.out_edit = QLineEdit(default_dir or str(Path.home() / "slimline-export"))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._on_browse_clicked)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(browse)
        self.zip_check = QCheckBox("also write a .zip of the bundle")
        self.triton_check = QCheckBox("add an NVIDIA Triton model repository")
        self.context_spin = QSpinBox()
        self.context_spin.setRange(0, 1 << 20)
        self.context_spin.setSingleStep(512)
        self.context_spin.setSpecialValueText("the model's own")
        self.context_spin.setSuffix(" tokens")
        self.context_spin.setToolTip(
            "onnx-genai formats and bundles of a language model: serve at most this many tokens (prompt + "
            "generation). The model builder then writes smaller rotary tables (fp32, never quantized: 67 MB in "
            "Gemma 3 270M at its 32k context); longer prompts are refused.")
        self.details = QLabel()
        self.details.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.hide()
        self.status = QLabel(self.unavailable)
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.parity_label = QLabel()
        self.parity_label.setWordWrap(True)
        self.parity_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.parity_label.hide()
        form = QFormLayout()
        form.addRow("Variant:", self.variant_combo)
        form.addRow("Format:", self.format_combo)
        form.addRow("", self.format_help)
        form.addRow("Name:", self.name_edit)
        form.addRow("Output folder:", out_row)
        form.addRow("Bundle:", self.zip_check)
        form.addRow("", self.triton_check)
        form.addRow("Context length:", self.context_spin)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.ActionRole)
        self.cancel_button = self.buttons.addButton("Cancel export", QDialogButtonBox.ButtonRole.ActionRole)
        self.cancel_button.hide()
        self.export_button.setDefault(True)
        self.buttons.rejected.connect(self.reject)
        self.export_button.clicked.connect(self._on_export_clicked)
        self.cancel_button.clicked.connect(self._on_cancel_clicked)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.details)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        lay.addWidget(self.parity_label)
        lay.addStretch(1)
        lay.addWidget(self.buttons)
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self._on_timer_timeout)
        self.variant_combo.currentIndexChanged.connect(self._on_variant_changed)
        self.format_combo.currentIndexChanged.connect(self._on_format_changed)
        self._on_variant_changed()
        self.resize(680, 420)

    # --- state -------------------------------------------------------------------------
    def selected_variant(self) -> Variant | None:
        key = self.variant_combo.currentData()
        return next((v for v in self.variants if v.key == key), None)

    def selected_format(self) -> str:
        return str(self.format_combo.currentData() or "")

    def set_format(self, fmt: str) -> None:
        i = self.format_combo.findData(fmt)
        if i >= 0:
            self.format_combo.setCurrentIndex(i)

    def _stem(self, v: Variant) -> str:
        """The engine's default name: the original model's name plus the step id."""
        return v.name

    @property
    def running(self) -> bool:
        return self.job is not None

    def _on_variant_changed(self, *_: Any) -> None:
        v = self.selected_variant()
        keep = self.selected_format()
        self.format_combo.blockSignals(True)
        self.format_combo.clear()
        model = v.handle if v is not None else None
        first_ok = -1
        for fmt, label, _help in FORMATS:
            why = format_problem(model, fmt) if self.engine is not None else self.unavailable
            self.format_combo.addItem(label, fmt)
            i = self.format_combo.count() - 1
            if why:  # greyed out with the engine's reason
                item = self._format_item(i)
                if item is not None:
                    item.setEnabled(False)
                    item.setToolTip(why)
            elif first_ok < 0:
                first_ok = i
        keep_i = self.format_combo.findData(keep)
        keep_item = self._format_item(keep_i)
        ok_keep = keep_item is not None and keep_item.isEnabled()
        self.format_combo.setCurrentIndex(keep_i if ok_keep else max(first_ok, 0))
        self.format_combo.blockSignals(False)
        if v is None:
            return
        self.name_edit.setText(self._stem(v))
        q, size = quality(v.step), size_bytes(v.step)
        self.details.setText(f"{v.title}: {v.handle.format}, {'—' if size is None else fmt_bytes(size)}, "
                             f"p50 {fmt_ms(latency_ms(v.step, 'p50'))} / p90 {fmt_ms(latency_ms(v.step, 'p90'))}, "
                             f"{'quality n/a' if q.value is None else f'{q.value:.4f} ({q.label})'}"
                             + (f" — flags: {', '.join(v.flags)}" if v.flags else ""))
        self._on_format_changed()

    def _format_item(self, i: int) -> QStandardItem | None:
        """Row ``i`` of the format list (a QComboBox keeps a QStandardItemModel); unusable rows are greyed."""
        model = self.format_combo.model()
        return model.item(i) if i >= 0 and isinstance(model, QStandardItemModel) else None

    def _on_format_changed(self, *_: Any) -> None:
        fmt = self.selected_format()
        help_text = next((h for f, _l, h in FORMATS if f == fmt), "")
        i = self.format_combo.currentIndex()
        item = self._format_item(i)
        blocked = item is not None and not item.isEnabled()
        self.format_help.setText(item.toolTip() if item is not None and blocked else help_text)
        self.format_help.setStyleSheet(f"color: {flag_text() if blocked else muted_text()};")
        for w in (self.zip_check, self.triton_check):
            w.setEnabled(fmt == "bundle")
        v = self.selected_variant()
        self.context_spin.setEnabled((fmt.startswith("onnx-genai") or fmt == "bundle")
                                     and v is not None and lm_kind(v.handle) == "torch")  # the builder makes it
        self.export_button.setEnabled(self.engine is not None and not blocked and not self.running)

    def _on_browse_clicked(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Export to", self.out_edit.text())
        if path:
            self.out_edit.setText(path)

    def _ask_overwrite(self, taken: list[str]) -> bool:
        box = QMessageBox(QMessageBox.Icon.Warning, "Overwrite?",
                          "These already exist in the output folder and would be replaced:\n  " + "\n  ".join(taken),
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, self)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        return box.exec() == QMessageBox.StandardButton.Yes

    # --- export ------------------------------------------------------------------------
    def spec(self, force: bool = False) -> dict[str, Any]:
        """What the child process is asked to do."""
        v = self.selected_variant()
        assert v is not None
        run_dir = str(Path(self.workspace) / "runs" / v.run_id) if self.workspace else ""
        return {"run_dir": run_dir, "step_id": v.step_id, "model": v.handle.model_dump(mode="json"),
                "format": self.selected_format(), "out_dir": self.out_edit.text().strip(),
                "name": self.name_edit.text().strip() or self._stem(v),
                "force": force, "zip": self.zip_check.isChecked(), "triton": self.triton_check.isChecked(),
                "data": self.data_path or None, "trust": self.trust,
                "lm_context_length": self.context_spin.value() if self.context_spin.isEnabled() else 0}

    def _on_export_clicked(self) -> None:
        v = self.selected_variant()
        if v is None or self.engine is None or self.running:
            return
        out = self.out_edit.text().strip()
        if not out:
            self._show_error("choose an output folder", "")
            return
        from slimline.core.export.formats import safe_name

        name = safe_name(self.name_edit.text().strip() or self._stem(v))
        self.name_edit.setText(name)
        taken = [n for n in target_names(self.selected_format(), name) if (Path(out) / n).exists()]
        force = False
        if taken:
            if not self.confirm_overwrite(taken):
                self.status.setStyleSheet("")
                self.status.setText("Not exported: nothing was overwritten.")
                return
            force = True
        from slimline.core.export.task import start_export

        self.result_record = None
        self.parity_label.hide()
        self.status.setStyleSheet("")
        self.status.setText(f"Exporting {variant_label(v)} as {self.format_combo.currentText()}… (starting)")
        self.progress.setValue(0)
        self.progress.show()
        self._set_busy(True)
        try:
            self.job = start_export(self.spec(force))
        except Exception as exc:  # could not even start a process
            self._set_busy(False)
            self._show_error(f"could not start the export: {exc}", "")
            return
        self.timer.start()

    def _on_cancel_clicked(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.status.setText("Cancelling… (nothing half-written is kept)")

    def _set_busy(self, busy: bool) -> None:
        self.export_button.setEnabled(not busy)
        self.cancel_button.setVisible(busy)
        for w in (self.variant_combo, self.format_combo, self.out_edit, self.name_edit, self.zip_check,
                  self.triton_check):
            w.setEnabled(not busy)
        if not busy:
            self._on_format_changed()

    def _on_timer_timeout(self) -> None:
        if self.job is None:
            self.timer.stop()
            return
        for ev in self.job.poll():
            self._on_event(ev)

    def _on_event(self, ev: JobEvent) -> None:
        if isinstance(ev, ProgressEvent):
            self.progress.setValue(int(round(100 * ev.fraction)))
            self.status.setText(f"{ev.message}…")
        elif isinstance(ev, DoneEvent):
            self._finish()
            try:
                record = export_record(ev.result)
            except ValueError as exc:  # a result this version cannot read: the file was written, say so
                self._show_error(f"exported, but the export record is unreadable: {exc}", "")
                return
            self._on_export_done(record)
        elif ev.type == "cancelled":
            self._finish()
            self.status.setStyleSheet("")
            self.status.setText("Export cancelled; nothing was written.")
        elif isinstance(ev, FailedEvent):
            self._finish()
            self._on_export_failed(ev)

    def _finish(self) -> None:
        self.timer.stop()
        self.job = None
        self.progress.hide()
        self._set_busy(False)

    def _on_export_done(self, record: ExportRecord | BundleRecord) -> None:
        from slimline.core.export.bundle import BundleRecord

        self.result_record = record
        extra = ""
        if isinstance(record, BundleRecord):
            model, where = record.model_export, record.bundle_dir
            if record.zip_path:
                extra += f"\nzip: {record.zip_path} ({fmt_bytes(record.zip_bytes or 0)})"
            if record.triton_dir:
                extra += f"\nTriton repository: {record.triton_dir}"
        else:
            model, where = record, record.path
        self.status.setStyleSheet(f"color: {ok_text()};")
        self.status.setText(f"Exported to {where} ({fmt_bytes(record.bytes)}, "
                            f"sha256 {model.sha256[:16]}…){extra}")
        text, passed = describe_parity(model.parity)
        self.parity_label.setText(text)
        self.parity_label.setStyleSheet("" if passed else f"color: {flag_text()}; font-weight: bold;")
        self.parity_label.show()
        self.exported.emit(record)

    def _on_export_failed(self, ev: FailedEvent) -> None:
        msg, hint = ev.message or "export failed", ev.hint
        extra = ev.model_extra or {}  # the task job adds error_type (and the engine may say parity_failed)
        if extra.get("parity_failed") or extra.get("error_type") == "ParityError":
            msg = "Parity check FAILED — the written file does not reproduce the model; nothing was kept. " + msg
        self._show_error(msg, hint, ev.details or "")
        self.export_failed.emit(msg)

    def _show_error(self, msg: str, hint: str, details: str = "") -> None:
        self.status.setStyleSheet(f"color: {flag_text()};")
        self.status.setText(msg + (f"\n→ {hint}" if hint else ""))
        self.status.setToolTip(details[-3000:])

    def done(self, r: int) -> None:  # noqa: D401 - Qt API: closing while exporting cancels it
        if self.job is not None:  # the engine stops at its next check and removes its staging folder
            self.job.cancel()
            self.job = None
            self.timer.stop()
        super().done(r)
