"""PNG image folders (one subfolder per class) load through Pillow with resize and normalise."""
import numpy as np

from slimline.core.data import load_dataset
from slimline.core.handle import ModelHandle, TensorSpec


def test_png_folder_loads_resized_and_labelled(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            arr = rng.integers(0, 255, size=(20, 24, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / cls / f"{i}.png")
    model = ModelHandle(path="m.onnx", format="onnx", family="onnx",
                        inputs=[TensorSpec(name="x", shape=["batch", 3, 16, 16])])
    ds = load_dataset(tmp_path, model)
    assert ds.inputs["x"].shape == (6, 3, 16, 16) and ds.inputs["x"].dtype == np.float32
    assert sorted(ds.labels.tolist()) == [0, 0, 0, 1, 1, 1]
