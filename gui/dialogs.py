"""Preferences and About dialogs."""
from __future__ import annotations

import platform
import sys

from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from slimline.gui.settings import Preferences


class PreferencesDialog(QDialog):
    """Threads, device, default evaluation data, workspace and theme; saved to QSettings on OK."""

    def __init__(self, prefs: Preferences, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Preferences")
        self.prefs = prefs
        self.threads = QSpinBox()
        self.threads.setRange(0, 512)
        self.threads.setSpecialValueText("all cores")
        self.threads.setValue(prefs.threads)
        self.threads.setToolTip("Intra-op threads for latency measurement and steps (0 = all cores)")
        self.device = QComboBox()
        self.device.addItem("as the pipeline says", "")
        self.device.addItem("cpu", "cpu")
        self.device.addItem("cuda", "cuda")
        self.device.setCurrentIndex(max(0, self.device.findData(prefs.device)))
        self.device.setToolTip("Where steps and measurements run; overrides the pipeline's evaluation device "
                               "(cuda only when a GPU runtime is installed)")
        self.data = QLineEdit(prefs.default_data)
        self.data.setPlaceholderText("loaded when a model is opened without data")
        self.workspace = QLineEdit(prefs.workspace)
        self.workspace.setPlaceholderText(str(prefs.workspace_path()))
        self.theme = QComboBox()
        self.theme.addItems(["system", "light", "dark"])
        self.theme.setCurrentText(prefs.theme)
        form = QFormLayout()
        form.addRow("Threads:", self.threads)
        form.addRow("Device:", self.device)
        form.addRow("Default evaluation data:", self._with_browse(self.data, folder=False))
        form.addRow("Workspace (runs, cache):", self._with_browse(self.workspace, folder=True))
        form.addRow("Theme:", self.theme)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(buttons)

    def _with_browse(self, edit: QLineEdit, folder: bool) -> QWidget:
        w = QWidget()
        row = QHBoxLayout(w)
        row.setContentsMargins(0, 0, 0, 0)
        b = QPushButton("Browse…")
        row.addWidget(edit, 1)
        row.addWidget(b)

        def browse() -> None:
            p = (QFileDialog.getExistingDirectory(self, "Choose folder", edit.text()) if folder
                 else QFileDialog.getOpenFileName(self, "Choose data", edit.text())[0])
            if p:
                edit.setText(p)
        b.clicked.connect(browse)
        return w

    def accept(self) -> None:
        self.prefs.threads = self.threads.value()
        self.prefs.device = str(self.device.currentData() or "")
        self.prefs.default_data = self.data.text().strip()
        self.prefs.workspace = self.workspace.text().strip()
        self.prefs.theme = self.theme.currentText()
        self.prefs.save()
        super().accept()


def versions() -> dict[str, str]:
    """Versions worth reporting in a bug; read from metadata so nothing heavy is imported."""
    from importlib.metadata import PackageNotFoundError, version

    import PySide6

    out = {"slimline": "?", "python": platform.python_version(), "PySide6": PySide6.__version__,
           "platform": f"{platform.system()} {platform.release()} {platform.machine()}"}
    for dist in ("slimline", "torch", "onnx", "onnxruntime", "pyqtgraph", "numpy", "pydantic", "torch-pruning"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out.setdefault(dist, "not installed")
    return out


class AboutDialog(QDialog):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About Slimline")
        v = versions()
        rows = "".join(f"<tr><td>{k}</td><td><b>{val}</b></td></tr>" for k, val in v.items())
        label = QLabel(f"<h2>Slimline {v.get('slimline')}</h2><p>Inspect, compress, measure and export neural "
                       f"networks.</p><table cellspacing=4>{rows}</table><p>Python: {sys.executable}</p>")
        label.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok)
        buttons.accepted.connect(self.accept)
        lay = QVBoxLayout(self)
        lay.addWidget(label)
        lay.addWidget(buttons)
