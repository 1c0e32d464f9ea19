"""Small helpers shared by benchmark scripts: tables and JSON results."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from slimline.core.render import table

RESULTS = Path(__file__).resolve().parent / "results"


def print_table(title: str, headers: list[str], rows: list[list[Any]]) -> None:
    print(f"\n{title}")
    print(table(headers, rows))


def save_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    from slimline.core.metrics import environment

    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                "environment": environment(), **payload}, indent=1, default=str))
    return path
