"""A parameter form generated from a plugin's Params JSON schema.

Plugins never build widgets (DESIGN §4): numbers with bounds become spin boxes,
enums/Literals combo boxes, booleans check boxes, lists comma-separated line
edits, paths a line edit with Browse. Every change is validated at once with
``Params.model_validate``; an invalid field is outlined and its message shown
under it, and only valid parameter sets leave the form (``params_edited``), so
the pipeline never holds parameters its plugin would refuse.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from PySide6.QtCore import QCoreApplication, QEvent, QObject, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractScrollArea,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from slimline.gui.form_schema import FieldSpec, decimals_for, parse_schema
from slimline.gui.theme import flag_text, muted_text

ERROR_STYLE = "border: 2px solid #d62728; border-radius: 3px;"


class WheelToScroll(QObject):
    """Wheel over a combo or spin box scrolls the form around it; it never changes the value.

    Scrolling a long form with the mouse wheel silently changed whichever value passed under the
    pointer. The event goes to the nearest scroll area's scroll bar instead (or is dropped).
    """

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        if event.type() != QEvent.Type.Wheel or not isinstance(obj, QWidget):
            return False
        w: QWidget | None = obj.parentWidget()
        while w is not None and not isinstance(w, QAbstractScrollArea):
            w = w.parentWidget()
        if w is not None:
            QCoreApplication.sendEvent(w.verticalScrollBar(), event)
        return True


_WHEEL_GUARD: WheelToScroll | None = None


def guard_wheel(*widgets: QWidget) -> None:
    """Install the wheel guard (one shared filter) on these editors."""
    global _WHEEL_GUARD
    if _WHEEL_GUARD is None:
        _WHEEL_GUARD = WheelToScroll(QCoreApplication.instance())
    for w in widgets:
        w.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        w.installEventFilter(_WHEEL_GUARD)


class ParamForm(QWidget):
    """Form for one step (or any settings model). Emits ``params_edited(dict, field)`` with valid params only.

    ``columns`` > 1 lays the fields out in that many label/editor column pairs with the descriptions
    in tooltips only: a compact form for settings that share a screen with other things.
    """

    params_edited = Signal(dict, str)
    validity_changed = Signal(bool)

    def __init__(self, params_cls: type[BaseModel] | None = None, values: dict[str, Any] | None = None,
                 parent: QWidget | None = None, base_dir: str = "", columns: int = 1) -> None:
        super().__init__(parent)
        self.columns = max(1, columns)
        self.params_cls = params_cls
        self.fields: list[FieldSpec] = []
        self.editors: dict[str, QWidget] = {}
        self.error_labels: dict[str, QLabel] = {}
        self._getters: dict[str, Callable[[], Any]] = {}
        self._setters: dict[str, Callable[[Any], None]] = {}
        self._loading = False
        self._valid = True
        self.base_dir = base_dir
        self.form = QFormLayout()
        self.grid = QGridLayout()   # used instead of the form when columns > 1
        self.grid.setHorizontalSpacing(8)
        self.grid.setVerticalSpacing(4)
        self.general_error = QLabel()
        self.general_error.setStyleSheet(f"color: {flag_text()};")
        self.general_error.setWordWrap(True)
        self.general_error.hide()
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(self.form if self.columns == 1 else self.grid)
        lay.addWidget(self.general_error)
        lay.addStretch(1)
        if params_cls is not None:
            self._build(params_cls.model_json_schema())
            self.set_values(values or {})

    # --- building ----------------------------------------------------------------------
    def _build(self, schema: dict[str, Any]) -> None:
        self.fields = parse_schema(schema)
        if not self.fields:
            self.form.addRow(QLabel("This step has no parameters."))
        for i, f in enumerate(self.fields):
            editor, getter, setter = self._make_editor(f)
            editor.setObjectName(f"field_{f.name}")
            tip = f.description or f.title
            if f.minimum is not None or f.maximum is not None:
                lo = f.minimum if f.minimum is not None else "−∞"
                hi = f.maximum if f.maximum is not None else "∞"
                tip += f"\nRange: {lo} … {hi}"
            if f.default is not None:
                tip += f"\nDefault: {f.default}"
            editor.setToolTip(tip)
            err = QLabel()
            err.setStyleSheet(f"color: {flag_text()};")
            err.setWordWrap(True)
            err.hide()
            box = QVBoxLayout()
            box.setSpacing(1)
            box.addWidget(editor)
            if f.description and self.columns == 1:
                help_label = QLabel(f.description)
                help_label.setWordWrap(True)
                help_label.setStyleSheet(f"color: {muted_text()}; font-size: 11px;")
                box.addWidget(help_label)
            box.addWidget(err)
            label = QLabel(f.title + ":")
            label.setToolTip(tip)
            if self.columns == 1:
                self.form.addRow(label, box)
            else:
                r, c = divmod(i, self.columns)
                self.grid.addWidget(label, r, 2 * c, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
                self.grid.addLayout(box, r, 2 * c + 1)
                self.grid.setColumnStretch(2 * c + 1, 1)
            self.editors[f.name] = editor
            self.error_labels[f.name] = err
            self._getters[f.name] = getter
            self._setters[f.name] = setter

    def _make_editor(self, f: FieldSpec) -> tuple[QWidget, Callable[[], Any], Callable[[Any], None]]:
        changed = lambda *_: self._on_editor_changed(f.name)  # noqa: E731
        if f.kind == "bool" and f.nullable:  # a check box has no "empty": it would turn None into False
            tri = QComboBox()
            for text, value in (("(none)", None), ("yes", True), ("no", False)):
                tri.addItem(text, value)
            tri.currentIndexChanged.connect(changed)
            guard_wheel(tri)

            def set_tri(v: Any) -> None:
                tri.setCurrentIndex({None: 0, True: 1, False: 2}.get(None if v is None else bool(v), 0))
            return tri, tri.currentData, set_tri
        if f.kind == "bool":
            check = QCheckBox()
            check.toggled.connect(changed)
            return check, check.isChecked, lambda v: check.setChecked(bool(v))
        if f.kind == "enum":
            combo = QComboBox()
            for c in (f.choices or []):
                combo.addItem(str(c), c)
            if f.nullable:
                combo.addItem("(none)", None)
            combo.currentIndexChanged.connect(changed)
            guard_wheel(combo)

            def set_enum(v: Any) -> None:
                i = combo.findData(v)
                combo.setCurrentIndex(i if i >= 0 else 0)
            return combo, combo.currentData, set_enum
        if f.kind in ("int", "float") and not f.nullable:
            if f.kind == "int":
                spin = QSpinBox()
                spin.setRange(int(f.minimum) if f.minimum is not None else -2_000_000_000,
                              int(f.maximum) if f.maximum is not None else 2_000_000_000)
                spin.valueChanged.connect(changed)
                guard_wheel(spin)
                return spin, spin.value, lambda v: spin.setValue(int(v if v is not None else 0))
            dspin = QDoubleSpinBox()
            dspin.setDecimals(decimals_for(f.default, f.minimum, f.maximum))
            dspin.setRange(float(f.minimum) if f.minimum is not None else -1e12,
                           float(f.maximum) if f.maximum is not None else 1e12)
            span = (f.maximum - f.minimum) if f.minimum is not None and f.maximum is not None else None
            dspin.setSingleStep(span / 20 if span else 0.1)
            dspin.valueChanged.connect(changed)
            guard_wheel(dspin)
            return dspin, dspin.value, lambda v: dspin.setValue(float(v if v is not None else 0.0))
        if f.kind == "path":
            box = QWidget()
            edit = QLineEdit()
            edit.setObjectName(f"edit_{f.name}")
            browse = QPushButton("Browse…")
            row = QHBoxLayout(box)
            row.setContentsMargins(0, 0, 0, 0)
            row.addWidget(edit, 1)
            row.addWidget(browse)
            edit.textChanged.connect(changed)
            browse.clicked.connect(lambda: self._browse(f, edit))
            return (box, lambda: (edit.text().strip() or None) if f.nullable else edit.text().strip(),
                    lambda v: edit.setText("" if v is None else str(v)))
        line = QLineEdit()
        line.textChanged.connect(changed)
        if f.kind == "list":
            line.setPlaceholderText("comma-separated values")
            return (line, lambda: self._parse_list(line.text(), f),
                    lambda v: line.setText(", ".join(str(x) for x in (v or []))))
        if f.kind in ("json",):
            line.setPlaceholderText("JSON value")
            return (line, lambda: self._parse_json(line.text(), f),
                    lambda v: line.setText("" if v is None else json.dumps(v)))
        if f.kind in ("int", "float"):  # nullable number: empty means None
            line.setPlaceholderText("empty = none")
            return (line, lambda: self._parse_number(line.text(), f),
                    lambda v: line.setText("" if v is None else str(v)))
        if f.nullable:
            line.setPlaceholderText("empty = none")
        return (line, lambda: (line.text() or None) if f.nullable else line.text(),
                lambda v: line.setText("" if v is None else str(v)))

    @staticmethod
    def _parse_list(text: str, f: FieldSpec) -> Any:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if f.item_kind in ("int", "float"):
            out = []
            for p in parts:
                try:
                    out.append(int(p) if f.item_kind == "int" else float(p))
                except ValueError:
                    return text  # let validation name the problem
            return out
        return parts

    @staticmethod
    def _parse_json(text: str, f: FieldSpec) -> Any:
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text

    @staticmethod
    def _parse_number(text: str, f: FieldSpec) -> Any:
        t = text.strip()
        if not t:
            return None
        try:
            return int(t) if f.kind == "int" else float(t)
        except ValueError:
            return t

    def _browse(self, f: FieldSpec, edit: QLineEdit) -> None:
        start = edit.text() or self.base_dir
        if f.path_mode == "directory":
            path = QFileDialog.getExistingDirectory(self, f.title, start)
        elif f.path_mode == "save":
            path, _ = QFileDialog.getSaveFileName(self, f.title, start)
        else:
            path, _ = QFileDialog.getOpenFileName(self, f.title, start)
        if path:
            edit.setText(path)

    # --- values and validation ---------------------------------------------------------
    def set_values(self, values: dict[str, Any]) -> None:
        """Show values without emitting edits (used after undo/redo and on selection)."""
        self._loading = True
        try:
            for f in self.fields:
                self._setters[f.name](values.get(f.name, f.default))
        finally:
            self._loading = False
        self.validate()

    def raw_values(self) -> dict[str, Any]:
        return {f.name: self._getters[f.name]() for f in self.fields}

    def validate(self) -> tuple[bool, dict[str, Any] | None]:
        """Validate what is typed; mark invalid fields. Returns (ok, canonical params)."""
        from pydantic import ValidationError

        if self.params_cls is None:
            return True, {}
        errors: dict[str, list[str]] = {}
        general: list[str] = []
        params = None
        try:
            params = self.params_cls.model_validate(self.raw_values()).model_dump(mode="json")
        except ValidationError as exc:
            for e in exc.errors():
                loc = e.get("loc") or ()
                msg = e.get("msg", "invalid")
                if loc and loc[0] in self.editors:
                    errors.setdefault(str(loc[0]), []).append(msg)
                else:
                    general.append(msg)
        for name, editor in self.editors.items():
            lab = self.error_labels[name]
            if name in errors:
                editor.setStyleSheet(ERROR_STYLE)
                lab.setText("; ".join(errors[name]))
                lab.show()
            else:
                editor.setStyleSheet("")
                lab.hide()
        self.general_error.setText("; ".join(general))
        self.general_error.setVisible(bool(general))
        ok = params is not None
        if ok != self._valid:
            self._valid = ok
            self.validity_changed.emit(ok)
        return ok, params

    @property
    def is_valid(self) -> bool:
        return self._valid

    def field_errors(self) -> dict[str, str]:
        return {n: lab.text() for n, lab in self.error_labels.items() if not lab.isHidden()}

    def _on_editor_changed(self, name: str) -> None:
        if self._loading:
            return
        ok, params = self.validate()
        if ok and params is not None:
            self.params_edited.emit(params, name)


if __name__ == "__main__":  # python -m slimline.gui.param_form
    import sys
    from typing import Literal

    from pydantic import Field
    from PySide6.QtWidgets import QApplication

    from slimline.core.plugin import PluginParams

    class DemoParams(PluginParams):
        sparsity: float = Field(0.5, ge=0, le=0.99, description="Fraction of weights set to zero")
        mode: Literal["unstructured", "l1", "l2"] = Field("l1", description="Ranking criterion")
        per_channel: bool = Field(True, description="Quantize per output channel")
        exclude: list[str] = Field(default_factory=list, description="Layer names to keep as they are")
        epochs: int = Field(2, ge=1, le=100, description="Fine-tuning epochs")
        calibration: str | None = Field(None, description="Calibration data", json_schema_extra={"ui": "path"})

    app = QApplication(sys.argv)
    form = ParamForm(DemoParams, {})
    form.params_edited.connect(lambda p, f: print(f, p))
    form.resize(420, 500)
    form.show()
    sys.exit(app.exec())
