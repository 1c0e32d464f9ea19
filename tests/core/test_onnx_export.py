"""core.onnx_export: the one torch -> ONNX exporter call (Convert step and `slimline export`)."""
import numpy as np
import pytest

from slimline.core.onnx_export import OnnxExportFailed, export_torch_to_onnx, exporter_message
from slimline.core.runtime import ort_inference_session


def _mlp(hidden: int = 8):
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 3)).eval()


def _run(path, x):
    return ort_inference_session(path).run(None, {"x": x})[0]


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_single_file_dynamic_batch_and_parity(tmp_path, exporter):
    import torch

    module = _mlp()
    one_row = {"x": torch.randn(1, 6)}  # a dynamic batch needs an example of 2: the exporter doubles it
    res = export_torch_to_onnx(module, one_row, tmp_path / "m.onnx", input_names=["x"], output_names=["y"],
                               opset=18, exporter=exporter)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # one file, no temp folder left
    assert res.opset == 18 and not res.external_data and res.dynamic_inputs == ["x"]
    x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_run(res.path, x), ref, atol=1e-5)


def test_fixed_batch_and_external_data(tmp_path):
    import onnx
    import torch

    module = _mlp(hidden=64)  # weights over the 1 KiB external-data threshold
    res = export_torch_to_onnx(module, {"x": torch.randn(3, 6)}, tmp_path / "m.onnx", input_names=["x"],
                               exporter="legacy", dynamic_batch=False, external_data=True)
    assert (tmp_path / "m.data").is_file() and res.external_data
    dims = onnx.load(str(res.path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [3, 6]
    assert _run(res.path, np.zeros((3, 6), np.float32)).shape == (3, 3)


def test_failure_keeps_the_full_message_and_leaves_nothing(tmp_path):
    import torch

    class Bad(torch.nn.Module):
        def forward(self, x):
            try:
                raise ValueError("the real reason: op frobnicate has no ONNX symbolic")
            except ValueError as inner:
                raise RuntimeError("export step 1 failed\nsecond line of detail") from inner

    with pytest.raises(OnnxExportFailed) as info:
        export_torch_to_onnx(Bad(), {"x": torch.randn(2, 3)}, tmp_path / "m.onnx", input_names=["x"],
                             exporter="legacy")
    msg = info.value.message
    assert "second line of detail" in msg and "the real reason: op frobnicate" in msg
    assert "legacy exporter" in msg and "dynamo" in info.value.hint
    assert list(tmp_path.iterdir()) == []


def test_exporter_message_walks_causes_once():
    try:
        try:
            raise KeyError("inner")
        except KeyError as e:
            raise RuntimeError("outer\nmore") from e
    except RuntimeError as exc:
        text = exporter_message(exc)
    assert text.splitlines() == ["outer: KeyError: 'inner'", "more"]


def test_exporter_message_puts_the_root_reason_first_without_boilerplate():
    """torch.onnx's own wording: stage first, advice, colour codes, the reason at the end."""
    outer_text = ("Failed to export the model with torch.export. \x1b[96mThis is step 1/3\x1b[0m of exporting the "
                  "model to ONNX. Next steps:\n- Modify the model code for `torch.export.export` to succeed.\n"
                  "- Debug `torch.export.export` and submit a PR to PyTorch.\n- Create an issue in the PyTorch "
                  "GitHub repository against the \x1b[96m*torch.export*\x1b[0m component\n\n## Exception summary"
                  "\n\n<class 'RuntimeError'>: Found <class 'DynamicCache'> in output, which is not a known type."
                  "\n\n(Refer to the full stack trace above for more information.)")
    try:
        try:
            raise RuntimeError("Found <class 'DynamicCache'> in output, which is not a known type.")
        except RuntimeError as e:
            raise ValueError(outer_text) from e
    except ValueError as exc:
        text = exporter_message(exc)
    assert text == ("Failed to export the model with torch.export: RuntimeError: Found <class 'DynamicCache'> in "
                    "output, which is not a known type.")
