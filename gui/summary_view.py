"""Model summary: what the file is, what goes in and out, how big it is.

Dynamic dims (named string dims) get spin boxes: latency and data checks need
concrete values, and DESIGN §6 says never guess silently — the user sees and
edits the value used.
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from slimline.gui.elided import ElidedLabel
from slimline.gui.layer_table import fmt_bytes
from slimline.gui.theme import warn_text


class SummaryView(QWidget):
    """Read-only facts plus editable dynamic-dim values; emits ``dims_changed(dict)``."""

    dims_changed = Signal(dict)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._handle: Any = None
        self.fields: dict[str, QLabel] = {}
        facts = QFormLayout()
        self._facts = facts
        for key, title in [("name", "File"), ("format", "Format"), ("family", "Kind"), ("producer", "Producer"),
                           ("opset", "Opset"), ("params", "Parameters"), ("bytes", "Bytes on disk"),
                           ("memory", "Memory"), ("capabilities", "Can do"), ("notes", "Note")]:
            lab = ElidedLabel("—") if key == "name" else QLabel("—")
            if key != "name":
                lab.setWordWrap(True)
            self.fields[key] = lab
            facts.addRow(f"{title}:", lab)
        self.fields["notes"].setStyleSheet(f"color: {warn_text()};")
        self.fields["memory"].setToolTip("Estimated from the config before loading: parameters × bytes per "
                                         "parameter plus the activations of one evaluation window")
        self.io_table = QTableWidget(0, 4)
        self.io_table.setHorizontalHeaderLabels(["", "Name", "dtype", "Shape"])
        self.io_table.verticalHeader().hide()
        self.io_table.horizontalHeader().setStretchLastSection(True)
        self.io_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.dims_box = QGroupBox("Dynamic dimensions (values used for latency and data checks)")
        self.dims_layout = QHBoxLayout(self.dims_box)
        self.dim_spins: dict[str, QSpinBox] = {}
        lay = QVBoxLayout(self)
        lay.addLayout(facts)
        lay.addWidget(QLabel("Inputs and outputs:"))
        lay.addWidget(self.io_table, 1)
        lay.addWidget(self.dims_box)
        self.dims_box.hide()

    def set_handle(self, handle: Any) -> None:
        self._handle = handle
        f = self.fields
        f["name"].setText(str(handle.path))
        f["format"].setText(str(handle.format))
        f["family"].setText({"onnx": "ONNX graph", "torch": "runnable PyTorch model",
                             "weights": "weights only (no architecture)"}.get(handle.family, handle.family))
        f["producer"].setText(handle.producer or "unknown")
        f["opset"].setText(str(handle.opset) if handle.opset is not None else "—")
        f["params"].setText(f"{handle.param_count:,}")
        f["bytes"].setText(f"{fmt_bytes(handle.bytes_on_disk)} ({handle.bytes_on_disk:,} bytes)")
        caps = handle.capabilities
        can = [n for n, ok in (("inspect", caps.inspect), ("run", caps.run), ("compress", caps.compress)) if ok]
        text = ", ".join(can) or "nothing"
        if caps.reason:
            text += f" — {caps.reason}"
        f["capabilities"].setText(text)
        memory = str(handle.meta.get("memory") or "")
        f["memory"].setText(f"{memory} to load and run one window (estimate)" if memory else "—")
        self._facts.setRowVisible(f["memory"], bool(memory))
        notes = list(getattr(handle, "notes", []) or [])
        f["notes"].setText("\n".join(notes))
        self._facts.setRowVisible(f["notes"], bool(notes))
        specs = [("in", s) for s in handle.inputs] + [("out", s) for s in handle.outputs]
        self.io_table.setRowCount(len(specs))
        for r, (kind, s) in enumerate(specs):
            for c, v in enumerate([kind, s.name, s.dtype, "[" + ", ".join(str(d) for d in s.shape) + "]"]):
                self.io_table.setItem(r, c, QTableWidgetItem(v))
        self.io_table.resizeColumnsToContents()
        self._build_dims(handle)

    def dims(self) -> dict[str, int]:
        return {k: sb.value() for k, sb in self.dim_spins.items()}

    def _build_dims(self, handle: Any) -> None:
        while self.dims_layout.count():
            item = self.dims_layout.takeAt(0)
            w = item.widget() if item is not None else None
            if w is not None:
                w.deleteLater()
        self.dim_spins = {}
        from slimline.gui.session import default_dims

        dims = default_dims(handle)
        for n, value in dims.items():
            sb = QSpinBox()
            sb.setRange(1, 1_000_000)
            sb.setValue(value)
            sb.setToolTip(f"Value used for the dynamic dimension '{n}'")
            sb.valueChanged.connect(self._on_dim_spin_changed)
            self.dim_spins[n] = sb
            self.dims_layout.addWidget(QLabel(f"{n}:"))
            self.dims_layout.addWidget(sb)
        self.dims_layout.addStretch(1)
        self.dims_box.setVisible(bool(dims))

    def _on_dim_spin_changed(self, _v: int) -> None:
        self.dims_changed.emit(self.dims())


if __name__ == "__main__":  # python -m slimline.gui.summary_view
    import sys

    from PySide6.QtWidgets import QApplication

    from slimline.core.handle import ModelHandle, TensorSpec

    app = QApplication(sys.argv)
    view = SummaryView()
    view.set_handle(ModelHandle(path="/tmp/tiny.onnx", format="onnx", family="onnx", param_count=1234,
                                bytes_on_disk=5000, producer="pytorch 2.13", opset=18,
                                inputs=[TensorSpec(name="x", shape=["batch", 3, 32, 32])],
                                outputs=[TensorSpec(name="y", shape=["batch", 10])], dim_defaults={"batch": 1}))
    view.dims_changed.connect(print)
    view.show()
    sys.exit(app.exec())
