"""Re-create the bundled demo model: `python resources/demo/train_demo.py` (≈1–2 min on 2 cores).

Trains the digits CNN deterministically (see slimline.core.demo) and writes the
torch archive, the ONNX export and the train/eval splits next to this file.
"""
from pathlib import Path

from slimline.core.demo import train_demo

if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    print(train_demo(here))
