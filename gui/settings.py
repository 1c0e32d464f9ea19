"""QSettings access in one place: recent files and preferences with typed defaults.

Keeping keys here means the preferences dialog, the main window and tests agree
on names; tests point QSettings at a temp folder so they never touch the user's.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from PySide6.QtCore import QSettings

ORG, APP = "Slimline", "Slimline"
MAX_RECENT = 10


def settings() -> QSettings:
    return QSettings(ORG, APP)


@dataclass
class Preferences:
    """User preferences. threads 0 = all cores; device "" = what the pipeline says; default_data is
    loaded when a model is opened without data (and used when a run has none)."""

    threads: int = 0
    device: str = ""
    default_data: str = ""
    workspace: str = ""
    theme: str = "system"  # system | light | dark

    @classmethod
    def load(cls) -> Preferences:
        s = settings()
        out = cls()
        for f in fields(cls):
            raw = s.value(f"prefs/{f.name}", getattr(out, f.name))
            try:
                setattr(out, f.name, type(getattr(out, f.name))(raw))
            except (TypeError, ValueError):
                pass
        return out

    def save(self) -> None:
        s = settings()
        for k, v in asdict(self).items():
            s.setValue(f"prefs/{k}", v)
        s.sync()

    def workspace_path(self) -> Path:
        """Where runs, caches and history live: the chosen folder, else the engine's default
        (the same one `slimline run` uses, so runs from the CLI show up in the app)."""
        if self.workspace:
            return Path(self.workspace).expanduser()
        from slimline.core.history import default_workspace

        return default_workspace()


def recent_files() -> list[str]:
    raw = settings().value("recent/files", [])
    if isinstance(raw, str):
        raw = [raw]
    return [str(p) for p in raw] if isinstance(raw, (list, tuple)) else []


def add_recent_file(path: str) -> list[str]:
    items = [p for p in recent_files() if p != path]
    items.insert(0, path)
    items = items[:MAX_RECENT]
    s = settings()
    s.setValue("recent/files", items)
    s.sync()
    return items


def clear_recent_files() -> None:
    s = settings()
    s.remove("recent/files")
    s.sync()
