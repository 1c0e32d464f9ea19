"""Start screen: what the app does, the one-click demo, recent files, and "drop a file here"."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget

from slimline.gui.theme import muted_text


class StartView(QWidget):
    demo_requested = Signal()
    open_requested = Signal()
    recent_activated = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        title = QLabel("<h1>Slimline</h1><p style='font-size:14px'>Make neural networks smaller and faster — "
                       "and see exactly what it costs.</p>")
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        steps = QLabel("<ol style='font-size:13px'><li><b>Open</b> a model: drop an ONNX file, TorchScript/.pt2, "
                       "PyTorch checkpoint, safetensors file or Hugging Face folder anywhere on this window.</li>"
                       "<li><b>Inspect</b> its layers and weight distributions.</li>"
                       "<li><b>Build</b> a pipeline of compression steps "
                       "(prune, quantize, distill, low-rank, convert).</li>"
                       "<li><b>Run</b> it and compare size, latency (p50/p90) and accuracy per step.</li>"
                       "<li><b>Export</b> the variant you like.</li></ol>")
        steps.setWordWrap(True)
        self.demo_button = QPushButton("Open demo model")
        self.demo_button.setToolTip("A digits CNN (768k parameters) with its evaluation data and a demo pipeline")
        self.demo_button.setMinimumHeight(44)
        f = self.demo_button.font()
        f.setPointSize(f.pointSize() + 2)
        f.setBold(True)
        self.demo_button.setFont(f)
        self.open_button = QPushButton("Open model…")
        self.open_button.setMinimumHeight(44)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.demo_button)
        buttons.addWidget(self.open_button)
        buttons.addStretch(1)
        drop = QLabel("…or drop a model, a pipeline (.json) or a dataset (.npz, .csv, image folder, .txt) here")
        drop.setAlignment(Qt.AlignmentFlag.AlignCenter)
        drop.setStyleSheet("border: 2px dashed palette(mid); border-radius: 8px; padding: 24px; "
                           f"color: {muted_text()};")
        self.recent = QListWidget()
        self.recent.setMaximumHeight(180)
        self.recent_label = QLabel("<b>Recent files</b>")
        col = QVBoxLayout()
        col.addStretch(1)
        col.addWidget(title)
        col.addWidget(steps)
        col.addLayout(buttons)
        col.addSpacing(12)
        col.addWidget(drop)
        col.addSpacing(12)
        col.addWidget(self.recent_label)
        col.addWidget(self.recent)
        col.addStretch(2)
        outer = QHBoxLayout(self)
        outer.addStretch(1)
        outer.addLayout(col, 3)
        outer.addStretch(1)
        self.demo_button.clicked.connect(self.demo_requested)
        self.open_button.clicked.connect(self.open_requested)
        self.recent.itemActivated.connect(self._on_recent_item_activated)
        self.recent.itemDoubleClicked.connect(self._on_recent_item_activated)

    def set_recent(self, paths: list[str]) -> None:
        self.recent.clear()
        for p in paths:
            it = QListWidgetItem(f"{Path(p).name}    —    {p}")
            it.setData(Qt.ItemDataRole.UserRole, p)
            if not Path(p).exists():
                it.setToolTip("File no longer exists")
                it.setForeground(Qt.GlobalColor.gray)
            self.recent.addItem(it)
        self.recent_label.setVisible(bool(paths))
        self.recent.setVisible(bool(paths))

    def _on_recent_item_activated(self, item: QListWidgetItem) -> None:
        self.recent_activated.emit(str(item.data(Qt.ItemDataRole.UserRole)))


if __name__ == "__main__":  # python -m slimline.gui.start_view
    import sys

    from PySide6.QtWidgets import QApplication

    app = QApplication(sys.argv)
    v = StartView()
    v.set_recent(["/tmp/model.onnx"])
    v.resize(1000, 700)
    v.show()
    sys.exit(app.exec())
