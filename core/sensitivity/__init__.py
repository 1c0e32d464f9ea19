"""Per-layer sensitivity: which layers cost the metric when a step changes them (light to import)."""
from slimline.core.sensitivity.models import (
    EndMetric,
    LayerSensitivity,
    LevelResult,
    SensitivityResult,
    SensitivitySettings,
)

__all__ = ["EndMetric", "LayerSensitivity", "LevelResult", "SensitivityResult", "SensitivitySettings"]
