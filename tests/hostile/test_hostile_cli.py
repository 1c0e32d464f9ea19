"""Hostile inputs through the real command line and through the whole open → stats → run chain
in a child process: exit code 2 with a message, never a traceback, never a crash, no code run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import hostile_corpus as hc
from hostile_cases import CASES

CLI = [sys.executable, "-m", "slimline.core.cli"]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "QT_QPA_PLATFORM": "offscreen"}

BY_ID = {c.id: c for c in CASES}
CLI_CASES = [
    "legacy pickle running os.system in .pt",
    "torch zip whose data.pkl runs os.system (.pt)",
    "hf pytorch_model.bin is a code-running pickle",
    "onnx truncated at 50% of the graph",
    "external data through a symlinked folder leading outside",
    ".pt2 weight declaring 10^8 values over 16 bytes (listing of an untrusted file)",
    "random bytes .ckpt with pickle magic",
    "hf config.json without model_type",
]


def test_cli_inspect_refuses_hostile_files(tmp_path):
    """Several `slimline inspect` processes at once (2 cores): each exits 2 naming the file."""
    procs = []
    for i, cid in enumerate(CLI_CASES):
        d = tmp_path / f"c{i}"
        d.mkdir()
        target = BY_ID[cid].build(d)
        p = subprocess.Popen([*CLI, "inspect", str(target)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=ENV, cwd=d)
        procs.append((cid, d, target, p))
    for cid, d, target, p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 2, f"{cid}: exit {p.returncode}\n{err[-2000:]}"
        assert "Traceback" not in err and "Traceback" not in out, f"{cid}:\n{err[-3000:]}"
        assert err.startswith("error: ") and target.name in err, f"{cid}: {err}"
        assert "→" in err, f"{cid}: no next action: {err}"
        assert not hc.canary_path(d).exists(), f"{cid}: code from the file ran"


def test_cli_run_and_bench_refuse_hostile_inputs(tmp_path):
    nested = tmp_path / "nested.json"
    nested.write_bytes(b"[" * 100000 + b"]" * 100000)
    model = hc.onnx_mlp(tmp_path / "m.onnx")
    huge = hc.huge_input(tmp_path)
    bad_data = tmp_path / "bad.npz"
    import numpy as np

    np.savez(bad_data, x=np.zeros((3, 15), np.float32))
    runs = [
        ([*CLI, "run", str(nested), str(model), "--workspace", str(tmp_path / "ws")], "nested too deeply"),
        ([*CLI, "bench", str(huge), "--runs", "1", "--warmup", "0"], "huge_input.onnx"),
        ([*CLI, "bench", str(model), "--runs", "1", "--warmup", "0", "--data", str(bad_data)], "bad.npz"),
    ]
    procs = [(subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV), needle)
             for a, needle in runs]
    for p, needle in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 2, (p.args, p.returncode, err[-2000:])
        assert "Traceback" not in err and needle in err, err[-2000:]
    assert not (tmp_path / "ws").exists() or not list((tmp_path / "ws").rglob("*.onnx"))


CHAIN = textwrap.dedent('''
    import json, sys, warnings
    warnings.simplefilter("ignore")
    from slimline.core.errors import SlimlineError
    from slimline.core.models import open_model
    from slimline.core.stats import compute_stats, histogram
    for line in sys.stdin:
        cid, path = json.loads(line)
        print(json.dumps(["start", cid]), flush=True)
        outcome = "ok"
        try:
            h = open_model(path)
            rows = compute_stats(h)
            for r in rows[:3]:
                histogram(h, r.name, bins=8, sample=1000)
            if h.format == "onnx" and h.capabilities.run:
                from slimline.core.data import random_dataset
                from slimline.core.runtime import open_session
                open_session(h, threads=1).run(random_dataset(h, 2).inputs)
        except SlimlineError as exc:
            outcome = type(exc).__name__
            if not exc.hint:
                outcome = "no-hint:" + str(exc)
        print(json.dumps(["end", cid, outcome]), flush=True)
''')


def test_whole_chain_over_the_model_corpus_in_a_child(tmp_path):
    """open → stats → histograms → onnxruntime session on every model case; the child must survive all.

    Any uncaught exception or crash (segfault in a runtime, out-of-bounds read) ends the child
    early, and the last 'start' line names the case.
    """
    lines = []
    for i, case in enumerate(c for c in CASES if c.kind == "model" and "transformers" not in c.tags):
        d = tmp_path / f"m{i}"
        d.mkdir()
        lines.append(json.dumps([case.id, str(case.build(d))]))
    p = subprocess.run([sys.executable, "-c", CHAIN], input="\n".join(lines) + "\n", capture_output=True,
                       text=True, env=ENV, timeout=300)
    events = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("[")]
    ends = {e[1]: e[2] for e in events if e[0] == "end"}
    started = [e[1] for e in events if e[0] == "start"]
    assert p.returncode == 0, f"child died (rc {p.returncode}) in case {started[-1] if started else '?'}:\n" \
                              f"{p.stderr[-3000:]}"
    assert len(ends) == len(lines), set(started) - set(ends)
    assert not [k for k, v in ends.items() if v.startswith("no-hint")], ends
    assert "Traceback" not in p.stderr
    assert not (tmp_path / hc.CANARY).exists(), "code from a file ran"
    # the outcome table (visible with -s / -rA)
    print("\n".join(f"{v:22} {k}" for k, v in sorted(ends.items(), key=lambda kv: kv[1])))
