"""The bookkeeping every per-step results view shares: one result per step, replaced when the step runs again.

Views that show a run's results as they arrive (the LM table, the generations) differ in what they draw
and in which results they keep; the list, ``clear`` and ``set_results`` (a recorded run) are the same.
"""
from __future__ import annotations

from PySide6.QtWidgets import QWidget

from slimline.core.results import StepResult


class StepResultsView(QWidget):
    """Hidden until it has something to show; subclasses draw in :meth:`_render`."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.results: list[StepResult] = []

    def accepts(self, result: StepResult) -> bool:
        """Whether the view keeps this result at all."""
        return True

    def has_content(self) -> bool:
        """Whether the kept results give the view anything to draw."""
        return bool(self.results)

    def _clear_view(self) -> None:
        """Empty the widgets (the results list is already empty)."""

    def _render(self) -> None:
        raise NotImplementedError

    def clear(self) -> None:
        self.results = []
        self._clear_view()
        self.setVisible(False)

    def add_result(self, result: StepResult) -> None:
        if not self.accepts(result):
            return
        self.results = [r for r in self.results if r.step_id != result.step_id] + [result]
        if self.has_content():
            self._render()
            self.setVisible(True)

    def set_results(self, results: list[StepResult]) -> None:
        self.clear()
        for r in results:
            self.add_result(r)
