"""The layer table shows repeated blocks as collapsible group rows: folded by default, expandable by a click,
searched by the filters even when folded, kept together by sorting, and never mistaken for a tensor."""
from __future__ import annotations

from PySide6.QtCore import QPoint, Qt


def _shown(v) -> list[str]:
    return [v.proxy.index(i, 0).data().strip() for i in range(v.proxy.rowCount())]


def _click_name(qtbot, v, row: int) -> None:
    rect = v.table.visualRect(v.proxy.index(row, 0))
    qtbot.mouseClick(v.table.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(rect.x() + 8, rect.center().y()))


def test_blocks_fold_into_one_row_and_expand_on_click(qtbot) -> None:
    from slimline.gui.layer_table import LayerTableView, _demo_block_rows

    v = LayerTableView()
    qtbot.addWidget(v)
    v.resize(900, 500)
    v.show()
    v.set_rows(_demo_block_rows(blocks=4))
    assert _shown(v) == ["model.embed_tokens.weight", "▸ model.layers.0 … 3", "model.norm.weight"]
    assert v.model.rows() and len(v.model.names()) == 14   # the tensors only; the group row is extra
    assert "14/14 tensors, 4 blocks in 1 group" in v.count_label.text() and v.expand_button.isVisible()
    group = v.proxy.index(1, 0)
    assert v.proxy.index(1, 5).data() == f"{4 * (64 + 128 + 8):,}"   # params summed over the 12 tensors
    assert "4 blocks × 3 tensors" in v.proxy.index(1, 2).data()
    assert "Click the name" in group.data(Qt.ItemDataRole.ToolTipRole)
    _click_name(qtbot, v, 1)
    shown = _shown(v)
    assert len(shown) == 15 and shown[1] == "▾ model.layers.0 … 3"
    assert shown[2] == "model.layers.0.self_attn.q_proj.weight"
    _click_name(qtbot, v, 1)
    assert len(_shown(v)) == 3
    v.expand_button.click()
    assert len(_shown(v)) == 15 and v.expand_button.text() == "Fold blocks"
    v.expand_button.click()
    assert len(_shown(v)) == 3


def test_filters_look_inside_folded_groups_and_sorting_keeps_them_together(qtbot) -> None:
    from slimline.gui.layer_table import LayerTableView, _demo_block_rows

    v = LayerTableView()
    qtbot.addWidget(v)
    v.set_rows(_demo_block_rows(blocks=4))
    v.filter_edit.setText("up_proj")
    assert _shown(v) == ["▸ model.layers.0 … 3"] + [f"model.layers.{i}.mlp.up_proj.weight" for i in range(4)]
    assert "4/14 tensors" in v.count_label.text()
    v.filter_edit.clear()
    v.expand_button.click()
    v.table.sortByColumn(5, Qt.SortOrder.DescendingOrder)   # params: the group (800) outranks embeddings (512)
    shown = _shown(v)
    assert shown[0].startswith("▾ model.layers") and shown[-2:] == ["model.embed_tokens.weight", "model.norm.weight"]
    assert [s.split(".")[-2] for s in shown[1:5]] == ["up_proj"] * 4   # inside the group, biggest first
    v.table.sortByColumn(5, Qt.SortOrder.AscendingOrder)
    shown = _shown(v)
    assert shown[0] == "model.norm.weight" and shown[2].startswith("▾ model.layers")
    assert all(s.startswith("model.layers.") for s in shown[3:]) and len(shown) == 15


def test_selecting_a_folded_tensor_expands_its_group_and_groups_are_not_tensors(qtbot) -> None:
    from slimline.gui.layer_table import LayerTableView, _demo_block_rows

    v = LayerTableView()
    qtbot.addWidget(v)
    v.set_rows(_demo_block_rows(blocks=3))
    seen: list[list[str]] = []
    v.selection_changed.connect(seen.append)
    v.select_name("model.layers.2.mlp.up_proj.weight")
    assert v.selected_names() == ["model.layers.2.mlp.up_proj.weight"] and seen[-1] == v.selected_names()
    assert v.model.is_expanded(0)
    n = len(seen)
    sel = v.table.selectionModel()
    sel.select(v.proxy.index(1, 0), sel.SelectionFlag.ClearAndSelect | sel.SelectionFlag.Rows)
    assert v.selected_names() == [] and len(seen) == n   # a group row alone keeps the histogram shown
    rows = _demo_block_rows(blocks=3)
    rows[4] = {**rows[4], "nan_count": 2}
    v.update_stats(rows)
    assert "NaN" in v.proxy.index(1, 0).data(Qt.ItemDataRole.ToolTipRole)   # the group says what is inside


def test_summary_shows_the_note_and_the_memory_estimate(qtbot) -> None:
    from slimline.core.handle import ModelHandle
    from slimline.gui.summary_view import SummaryView

    v = SummaryView()
    qtbot.addWidget(v)
    v.show()
    note = "dequantized from GGUF m.gguf; the file held types Q4_1 (210 tensors), F32 (61), Q8_0 (1)"
    v.set_handle(ModelHandle(path="/x/m", format="hf", family="torch", param_count=10, notes=[note],
                             meta={"memory": "~0.60 GB (weights 0.54 GB float32 + activations 61 MB)"}))
    assert v.fields["notes"].text() == note and v.fields["notes"].isVisible()
    assert v.fields["memory"].text().startswith("~0.60 GB") and v.fields["memory"].isVisible()
    v.set_handle(ModelHandle(path="/x/a.onnx", format="onnx", family="onnx"))
    assert not v.fields["notes"].isVisible() and not v.fields["memory"].isVisible()
