"""Open + inspect a ~100M-parameter ONNX model: layer table, first histogram, all exact stats.

Targets on the 2-core dev machine: open + layer table ≤ 1.0 s, first (sampled)
histogram ≤ 0.3 s, exact statistics of every tensor ≤ 2 s. Weights are random
(only timing matters here). The model is written to a temp dir just before
timing, so the OS page cache is warm: these are warm-file figures.
Each figure is the median of REPEATS runs with the in-process caches cleared.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

LAYERS = 25
WIDTH = 2000          # 25 × 2000 × 2000 ≈ 100M parameters
REPEATS = 3
TARGETS = {"open + layer table": 1.0, "first histogram (sampled)": 0.3, "all exact stats": 2.0}


def build_model(folder: Path, *, external: bool) -> Path:
    """A stack of MatMul (+Add bias) and Gemm layers with random float32 weights."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits = [], []
    x = "x"
    for i in range(LAYERS):
        w = rng.standard_normal((WIDTH, WIDTH), dtype=np.float32) * 0.02
        b = np.zeros(WIDTH, np.float32)
        inits += [numpy_helper.from_array(w, f"layer{i}.weight"), numpy_helper.from_array(b, f"layer{i}.bias")]
        y = f"h{i}"
        if i % 2:
            nodes.append(helper.make_node("Gemm", [x, f"layer{i}.weight", f"layer{i}.bias"], [y], name=f"gemm{i}"))
        else:
            nodes += [helper.make_node("MatMul", [x, f"layer{i}.weight"], [f"mm{i}"], name=f"matmul{i}"),
                      helper.make_node("Add", [f"mm{i}", f"layer{i}.bias"], [y], name=f"add{i}")]
        x = y
    graph = helper.make_graph(nodes, "stack", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", WIDTH])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bench_open")
    path = folder / ("stack_ext.onnx" if external else "stack.onnx")
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location="stack_ext.onnx.data", size_threshold=1024)
    else:
        onnx.save_model(model, str(path))
    return path


def _clear() -> None:
    from slimline.core import stats
    from slimline.core.models import weights

    weights.clear_cache()
    stats._STATS_CACHE.clear()


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def measure(path: Path) -> dict[str, float]:
    from slimline.core.models import open_model
    from slimline.core.stats import SAMPLE_SIZE, compute_stats, histogram, layer_inventory

    runs: dict[str, list[float]] = {k: [] for k in [*TARGETS, "exact histogram (4M values)"]}
    for _ in range(REPEATS):
        _clear()
        t_open, rows = _timed(lambda: layer_inventory(open_model(path)))
        h = open_model(path)
        big = max(rows, key=lambda r: r.params).name
        t_hist, hq = _timed(lambda h=h, big=big: histogram(h, big, sample=SAMPLE_SIZE))
        assert hq.sampled
        t_stats, st = _timed(lambda h=h: compute_stats(h))
        assert len(st) == len(rows)
        t_exact, _ = _timed(lambda h=h, big=big: histogram(h, big))
        for k, v in zip(runs, (t_open, t_hist, t_stats, t_exact)):
            runs[k].append(v)
    return {k: statistics.median(v) for k, v in runs.items()}


def main() -> None:
    import numpy as np

    from slimline.core.models import open_model

    try:
        from benchmarks.common import print_table, save_results
    except Exception:  # noqa: BLE001 - keep the benchmark usable on its own
        print_table = save_results = None  # type: ignore[assignment]
    results = {}
    with tempfile.TemporaryDirectory(prefix="slimline-bench-open-") as tmp:
        for external in (False, True):
            t_build, path = _timed(lambda external=external: build_model(Path(tmp), external=external))
            h = open_model(path)
            label = "one file" if not external else "external data"
            print(f"built {path.name}: {h.param_count / 1e6:.1f}M params, {h.bytes_on_disk / 2**20:.0f} MiB "
                  f"({label}) in {t_build:.1f} s", flush=True)
            results[label] = measure(path)
            Path(path).unlink()
    rows = []
    for name in results["one file"]:
        target = TARGETS.get(name)
        rows.append([name, *(f"{results[k][name]:.3f}" for k in results),
                     f"≤ {target:.1f}" if target else "-",
                     ("ok" if all(results[k][name] <= target for k in results) else "OVER") if target else ""])
    headers = [f"step (median of {REPEATS}, s)", *results, "target s", "status"]
    if print_table is not None:
        print_table(f"Open a {LAYERS * WIDTH * WIDTH / 1e6:.0f}M-parameter ONNX model (numpy {np.__version__}, "
                    "single-threaded numpy, warm page cache, random weights)", headers, rows)
        save_results("bench_open", {"layers": LAYERS, "width": WIDTH, "repeats": REPEATS, "results": results,
                                    "targets": TARGETS})
    else:  # pragma: no cover
        for r in [headers, *rows]:
            print("  ".join(str(c) for c in r))


if __name__ == "__main__":
    main()
