"""Built-in knowledge-distillation step (entry point ``builtin.distill``)."""
from slimline.plugins.distill.plugin import Distill

__all__ = ["Distill"]
