"""Worst UI-thread stall while the main window runs the demo pipeline.

A 10 ms QTimer ticks in the main window's thread for the whole run; every gap
between ticks beyond 10 ms is time the event loop could not respond. We report
the worst gap, p99 and how many gaps exceeded the 50 ms budget, for the whole
session (opening the demo, stats, histograms, running, live charts).

    xvfb-run -a .venv/bin/python -m benchmarks.bench_ui_stall [--quick]
    QT_QPA_PLATFORM=offscreen .venv/bin/python -m benchmarks.bench_ui_stall --quick

--profile samples every thread's stack during each stall and times every event delivery
(wall vs UI-thread CPU time: a large gap between the two means the UI thread waited for a CPU).

--quick runs a short pipeline (structured prune, 1 epoch of distillation, Convert to ONNX)
instead of the full demo pipeline.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

BUDGET_MS = 50.0
TICK_MS = 10


def _plot_title(view) -> str:
    """A pyqtgraph view's title, to say which chart a slow paint belonged to."""
    try:
        item = view.getPlotItem() if hasattr(view, "getPlotItem") else None
        return str(item.titleLabel.text)[:24] if item is not None else ""
    except Exception:
        return ""


class StallSampler:
    """--profile: while the UI thread is late, sample every thread's Python stack every 2 ms.

    A sampler that itself wakes late means some thread held the GIL in C code
    (an import, a big numpy/torch call); its next sample shows which thread.
    """

    def __init__(self, threshold: float = 0.025, period: float = 0.002) -> None:
        import threading

        self.last = time.perf_counter()
        self.threshold, self.period = threshold, period
        self.samples: list[tuple[float, float, float, dict[int, list[tuple[str, int, str]]]]] = []
        self.stop = False
        self.main = threading.main_thread().ident
        self.thread = threading.Thread(target=self._loop, daemon=True, name="stall-sampler")

    def tick(self) -> None:
        self.last = time.perf_counter()

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        import threading
        import traceback

        me = threading.get_ident()
        while not self.stop:
            t0 = time.perf_counter()
            time.sleep(self.period)
            now = time.perf_counter()
            if now - self.last > self.threshold:
                stacks = {}
                for tid, frame in sys._current_frames().items():
                    if tid != me:
                        stacks[tid] = [(f.filename.split("site-packages/")[-1], f.lineno or 0, f.name)
                                       for f in traceback.extract_stack(frame)][-14:]
                self.samples.append((now, now - self.last, now - t0 - self.period, stacks))

    def report(self, stalls: list[tuple[float, float]]) -> None:
        import collections
        import threading

        names = {t.ident: t.name for t in threading.enumerate()}
        for end, gap in stalls:
            ss = [s for s in self.samples if end - gap <= s[0] <= end + 0.003]
            late = max([s[2] for s in ss] or [0.0]) * 1e3
            print(f"\n=== stall {gap * 1e3:.0f} ms: {len(ss)} samples, sampler woke up to {late:.0f} ms late")
            main_c: collections.Counter = collections.Counter()
            other_c: collections.Counter = collections.Counter()
            for s in ss:
                for tid, fr in s[3].items():
                    if tid == self.main:
                        main_c[tuple(fr[-7:])] += 1
                    else:
                        other_c[(names.get(tid, str(tid)),) + tuple(fr[-4:])] += 1
            for key, n in main_c.most_common(2):
                print(f"  UI thread x{n}:")
                for f in key:
                    print(f"      {f[0]}:{f[1]} {f[2]}")
            for key, n in other_c.most_common(4):
                print(f"  {key[0]} x{n}:")
                for f in key[1:]:
                    print(f"      {f[0]}:{f[1]} {f[2]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short pipeline instead of the full demo pipeline")
    ap.add_argument("--timeout", type=float, default=1200.0, help="give up after this many seconds")
    ap.add_argument("--default-switch", action="store_true",
                    help="keep Python's 5 ms GIL switch interval (the app sets 1 ms) to measure its effect")
    ap.add_argument("--profile", action="store_true",
                    help="sample every thread's stack while the UI thread is late and print them per stall")
    args = ap.parse_args(argv if argv is not None else (sys.argv[1:] if __name__ == "__main__" else []))
    home = tempfile.mkdtemp(prefix="slimline-bench-ui-")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen" if not os.environ.get("DISPLAY") else "xcb")
    from PySide6.QtCore import QCoreApplication, QElapsedTimer, QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, home)
    slow_events: list[tuple[float, float, float, str]] = []
    if args.profile:
        class TimingApp(QApplication):
            """Times every event delivery: wall vs this thread's CPU tells work from starvation."""

            def notify(self, receiver, event):  # noqa: N802
                t0, c0 = time.perf_counter(), time.thread_time()
                try:
                    return super().notify(receiver, event)
                except TypeError:  # shiboken mis-wraps some receivers (QTextDocument children): let it go
                    return False
                finally:
                    dt = time.perf_counter() - t0
                    if dt > 0.010:
                        who = type(receiver).__name__
                        parent = receiver.parent() if hasattr(receiver, "parent") else None
                        if who == "QWidget" and parent is not None:  # a graphics view's viewport: name the view
                            who = f"{type(parent).__name__}({_plot_title(parent)})"
                        slow_events.append((time.perf_counter(), dt, time.thread_time() - c0,
                                            f"{who} {event.type().name}"))

        app = QApplication.instance() or TimingApp(sys.argv[:1])
    else:
        app = QApplication.instance() or QApplication(sys.argv[:1])
    QCoreApplication.setOrganizationName("SlimlineBench")
    from slimline.core.demo import demo_paths
    from slimline.gui import settings as st
    from slimline.gui.app import tune_interpreter
    from slimline.gui.main_window import MainWindow

    if not args.default_switch:
        tune_interpreter()  # as the app does at start

    st.ORG = "SlimlineBench"
    prefs = st.Preferences()
    prefs.workspace = str(Path(home) / "workspace")
    prefs.save()
    win = MainWindow()
    win.ask_unsaved = lambda: "discard"
    win.resize(1500, 950)
    win.show()

    gaps: list[float] = []
    ends: list[float] = []
    clock = QElapsedTimer()
    clock.start()
    last = [clock.nsecsElapsed()]
    sampler = StallSampler() if args.profile else None
    if sampler is not None:
        sampler.start()

    def tick() -> None:
        now = clock.nsecsElapsed()
        gaps.append((now - last[0]) / 1e6)
        ends.append(time.perf_counter())
        last[0] = now
        if sampler is not None:
            sampler.tick()

    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(tick)
    timer.start()
    status: list[str] = []
    win.run_finished.connect(status.append)
    t0 = time.monotonic()

    def wait(cond, limit: float) -> bool:
        end = time.monotonic() + limit
        while time.monotonic() < end:
            app.processEvents()
            if cond():
                return True
            time.sleep(0.001)
        return False

    stats_done: list[int] = []
    win.inspector.stats_ready.connect(lambda: stats_done.append(1))
    hists_done: list[int] = []
    win.inspector.histograms_updated.connect(lambda: hists_done.append(1))
    win.open_demo()
    wait(lambda: win.handle is not None and win.data_path != "" and bool(stats_done) and bool(hists_done), 120)
    wait(lambda: False, 0.5)  # the inspector's first paint
    if args.quick:
        paths = demo_paths()
        doc = {"format": "slimline.pipeline", "schema_version": 1, "name": "bench quick",
               "steps": [{"id": "s1", "plugin": "builtin.prune_structured", "params": {"pruning_ratio": 0.5}},
                         {"id": "s2", "plugin": "builtin.distill", "params": {"epochs": 1}},
                         {"id": "s3", "plugin": "builtin.convert_onnx", "params": {}}],
               "evaluation": {"data": str(paths["eval"]), "train_data": str(paths["train"]),
                              "latency": {"batch_sizes": [1], "runs": 20, "warmup": 5, "threads": 0}}}
        p = Path(home) / "quick.json"
        p.write_text(json.dumps(doc))
        win.open_pipeline(str(p))
    open_s = time.monotonic() - t0
    n_open = len(gaps)
    win.run_pipeline()
    ok = wait(lambda: bool(status), args.timeout)
    run_s = time.monotonic() - t0 - open_s
    n_run = len(gaps)
    if ok:  # after the run: last chart redraws, the results tab, before/after histograms
        wait(lambda: False, 1.0)
        win.tabs.setCurrentIndex(4)
        wait(lambda: False, 1.0)
        win.tabs.setCurrentIndex(1)
        wait(lambda: False, 2.0)
    timer.stop()
    if not ok:
        win.cancel_run()
        wait(lambda: bool(status), 10)

    def summary(values: list[float]) -> str:
        if not values:
            return "no ticks"
        s = sorted(values)
        p99 = s[min(len(s) - 1, int(0.99 * len(s)))]
        over = sum(1 for v in s if v > BUDGET_MS)
        return (f"ticks {len(s):6d}  median {s[len(s) // 2]:6.1f} ms  p99 {p99:6.1f} ms  worst {s[-1]:7.1f} ms  "
                f">{BUDGET_MS:.0f} ms: {over}")

    run_gaps = gaps[n_open:n_run]
    print(f"UI stall benchmark ({'quick pipeline' if args.quick else 'demo pipeline'}: "
          f"{win.doc.pipeline.name}); timer {TICK_MS} ms, budget {BUDGET_MS:.0f} ms; "
          f"platform {QApplication.platformName()}, {os.cpu_count()} CPUs")
    print(f"  open demo + stats ({open_s:5.1f} s): {summary(gaps[:n_open])}")
    print(f"  pipeline run      ({run_s:5.1f} s): {summary(run_gaps)}  status: {status[0] if status else 'timeout'}")
    print(f"  after the run     (  4.0 s): {summary(gaps[n_run:])}  (results tab, before/after histograms)")
    print(f"  events handled: {win.controller.events_seen}; steps charted: {win.run_view.charts.series_points}")
    heavy = [m for m in ("torch", "onnx", "onnxruntime", "sklearn", "torch_pruning", "transformers")
             if m in sys.modules]
    print(f"  heavy modules imported by the window's process: {', '.join(heavy) or 'none'}")
    worst = max(run_gaps) if run_gaps else float("nan")
    print(f"WORST UI STALL DURING RUN: {worst:.1f} ms "
          f"({'within' if worst <= BUDGET_MS else 'OVER'} the {BUDGET_MS:.0f} ms budget)")
    if sampler is not None:
        sampler.stop = True
        sampler.report([(e, g / 1e3) for e, g in zip(ends, gaps) if g > BUDGET_MS * 0.8])
        print("\nslow event deliveries (wall ms / UI-thread CPU ms): innermost first within each stall")
        for end, gap in [(e, g / 1e3) for e, g in zip(ends, gaps) if g > BUDGET_MS * 0.8]:
            inside = [ev for ev in slow_events if end - gap <= ev[0] <= end + 0.002]
            print(f"  stall {gap * 1e3:.0f} ms: "
                  + "; ".join(f"{n} {w * 1e3:.0f}/{c * 1e3:.0f}" for _, w, c, n in inside[:8]))
    win.doc.undo_stack.setClean()
    win.close()
    return 0 if status and status[0] == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
