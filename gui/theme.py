"""Light and dark palettes that follow the system colour scheme (or the user's choice)."""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

# Chart colours readable on both palettes.
SERIES = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
FLAG_COLOR = "#d62728"
OTHER_FLAG_COLOR = "#e08a00"  # a flag that concerns another batch size than the one shown
OK_COLOR = "#2ca02c"


def _dark_now() -> bool:
    app = QGuiApplication.instance()
    return app is not None and is_dark(QGuiApplication.palette())


# Text colours with enough contrast on the current palette (chart fills keep the SERIES colours):
# #d62728 text on the dark window was 2.6:1, the light palette's "mid" grey on white about 2:1.
def flag_text() -> str:
    return "#ff6b6b" if _dark_now() else "#c62828"


def ok_text() -> str:
    return "#6fdc6f" if _dark_now() else "#1e7b1e"


def warn_text() -> str:
    return "#ffb347" if _dark_now() else "#a34f00"


def muted_text() -> str:
    return "#a8a8a8" if _dark_now() else "#626262"


def system_is_dark() -> bool:
    hints = QGuiApplication.styleHints()
    try:
        return hints.colorScheme() == Qt.ColorScheme.Dark
    except AttributeError:  # older Qt
        return QGuiApplication.palette().color(QPalette.ColorRole.Window).lightness() < 128


def dark_palette() -> QPalette:
    p = QPalette()
    base, window, text = QColor(30, 30, 32), QColor(45, 45, 48), QColor(230, 230, 230)
    for role, color in [
        (QPalette.ColorRole.Window, window), (QPalette.ColorRole.WindowText, text),
        (QPalette.ColorRole.Base, base), (QPalette.ColorRole.AlternateBase, window),
        (QPalette.ColorRole.ToolTipBase, window), (QPalette.ColorRole.ToolTipText, text),
        (QPalette.ColorRole.Text, text), (QPalette.ColorRole.Button, window),
        (QPalette.ColorRole.ButtonText, text), (QPalette.ColorRole.Highlight, QColor(42, 130, 218)),
        (QPalette.ColorRole.HighlightedText, QColor(255, 255, 255)),
        (QPalette.ColorRole.Link, QColor(90, 160, 255)),
        (QPalette.ColorRole.PlaceholderText, QColor(150, 150, 150)),
        (QPalette.ColorRole.Mid, QColor(110, 110, 115)), (QPalette.ColorRole.Dark, QColor(20, 20, 22)),
        (QPalette.ColorRole.Light, QColor(75, 75, 80)), (QPalette.ColorRole.Midlight, QColor(60, 60, 64)),
    ]:
        p.setColor(role, color)
    p.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text, QColor(120, 120, 120))
    p.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText, QColor(120, 120, 120))
    return p


def apply_theme(app: QApplication, choice: str = "system") -> bool:
    """Apply the palette; returns True when dark. Fusion style renders both palettes evenly."""
    app.setStyle("Fusion")
    dark = system_is_dark() if choice == "system" else choice == "dark"
    app.setPalette(dark_palette() if dark else app.style().standardPalette())
    try:
        import pyqtgraph as pg

        pg.setConfigOptions(background="#1e1e20" if dark else "w", foreground="#e6e6e6" if dark else "k",
                            antialias=True)
    except ImportError:  # pragma: no cover
        pass
    return dark


def is_dark(widget_palette: QPalette) -> bool:
    return widget_palette.color(QPalette.ColorRole.Window).lightness() < 128


def cache_axes(plot: object) -> None:
    """Render a pyqtgraph plot's axes (labels and grid) from a pixmap cache.

    pyqtgraph replays each axis from a QPicture on every repaint; with text and a grid
    that was ~4 ms of a ~4.5 ms repaint here. Cached, a repaint that only changes the
    data (a live loss curve, a hover) costs ~0.7 ms; a range change still redraws the axis.
    """
    from PySide6.QtWidgets import QGraphicsItem

    item: Any = plot.getPlotItem() if hasattr(plot, "getPlotItem") else plot
    for name in ("left", "bottom", "top", "right"):
        axis = item.getAxis(name)
        if axis is not None:
            axis.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)


STAGE_PAINT_MS = 25


def paint_in_stages(page: object) -> int:
    """Show a page's charts one per event-loop turn instead of all in one paint.

    Switching to a tab with four pyqtgraph charts painted them all in one pass
    (~40 ms of UI-thread CPU on a busy machine, 80+ ms wall). Each chart after the
    first keeps its old pixels for a few tens of milliseconds instead. Returns how
    many charts were deferred.
    """
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QGraphicsView, QWidget

    if not isinstance(page, QWidget):
        return 0
    views = [v for v in page.findChildren(QGraphicsView) if v.isVisibleTo(page)]
    for i, view in enumerate(views[1:], start=1):
        view.setUpdatesEnabled(False)
        QTimer.singleShot(i * STAGE_PAINT_MS, view, lambda v=view: v.setUpdatesEnabled(True))
    return max(0, len(views) - 1)
