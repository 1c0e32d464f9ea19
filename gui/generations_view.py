"""Generations side by side: each prompt, then every step's greedy continuation under the original's.

A language model can keep its perplexity and still answer differently; the continuations
show it. The part of a step's continuation from the first token that differs from the
original's is highlighted, with the token index. The view only renders results
(slimline.core.lm.report) and is hidden in runs that measured no language model.

Run alone on a recorded run: ``python -m slimline.gui.generations_view RUN_FOLDER``.
"""
from __future__ import annotations

import html
from typing import Any

from PySide6.QtWidgets import QLabel, QTextBrowser, QVBoxLayout, QWidget

from slimline.core.lm.render import visible
from slimline.core.results import StepResult
from slimline.gui.step_results_view import StepResultsView
from slimline.gui.theme import muted_text

MARK_LIGHT, MARK_DARK = "#ffe08a", "#7a5d00"


class GenerationsView(StepResultsView):
    """Shows the generations of the results given with :meth:`add_result` (original first)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QLabel("Generations")
        self.title.setObjectName("generationsTitle")
        self.browser = QTextBrowser()
        self.browser.setMinimumHeight(self.fontMetrics().lineSpacing() * 12)
        self.browser.setOpenLinks(False)
        self.browser.setPlaceholderText("Greedy continuations of the prompts appear here for language models")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.title)
        lay.addWidget(self.browser, 1)
        self.setVisible(False)

    def accepts(self, result: StepResult) -> bool:
        return result.lm is not None and result.lm.generation is not None

    def _clear_view(self) -> None:
        self.browser.clear()

    def _render(self) -> None:
        g0 = self.results[0].lm.generation if self.results and self.results[0].lm else None
        if g0 is None:
            return
        dark = self.palette().base().color().lightness() < 128
        mark = MARK_DARK if dark else MARK_LIGHT
        muted = muted_text()
        self.title.setText(f"Generations: {g0.max_new_tokens} greedy tokens for each of the {g0.prompts_source} — "
                           "highlighted from the first token that differs from the original's")
        parts = []
        for k, sample in enumerate(g0.samples):
            rows = []
            for r in self.results:
                gen = r.lm.generation if r.lm is not None else None
                if gen is None or k >= len(gen.samples):
                    continue
                s = gen.samples[k]
                same, rest = s.split()
                where = "" if r is self.results[0] else ("same as the original" if s.first_divergence is None
                                                         else f"differs from token {s.first_divergence}")
                marked = f"<span style='background:{mark}'>{_h(visible(rest))}</span>" if rest else ""
                rows.append(f"<tr><td width='7%'><b>{_h(r.step_id)}</b></td><td width='75%' "
                            f"style='font-family:monospace'>{_h(visible(same))}{marked}</td>"
                            f"<td style='color:{muted}'>{where}{' · ' if where else ''}"
                            f"{s.decode_tokens_per_s:.1f} tok/s</td></tr>")
            parts.append(f"<p><b>Prompt {k + 1}:</b> <span style='font-family:monospace'>{_h(sample.prompt)}</span>"
                         f"</p><table cellspacing='0' cellpadding='3' width='100%'>{''.join(rows)}</table>")
        bar = self.browser.verticalScrollBar()
        keep = bar.value()
        self.browser.setHtml("".join(parts))
        bar.setValue(keep)

    def marked_count(self) -> int:
        """Steps × prompts whose continuation differs from the original's (what is highlighted)."""
        return sum(1 for r in self.results[1:] if r.lm and r.lm.generation
                   for s in r.lm.generation.samples if s.first_divergence is not None)


def _h(x: Any) -> str:
    return html.escape(str(x))


def _main() -> int:  # pragma: no cover - manual look at a recorded run
    import sys

    from PySide6.QtWidgets import QApplication

    from slimline.core.history import load_run

    if len(sys.argv) < 2:
        print("usage: python -m slimline.gui.generations_view RUN_FOLDER_OR_RUN_JSON", file=sys.stderr)
        return 2
    app = QApplication(sys.argv[:1])
    view = GenerationsView()
    view.set_results(load_run(sys.argv[1]).results)
    view.resize(900, 500)
    view.show()
    return app.exec()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main())
