"""Pruning steps: unstructured/N:M magnitude pruning and structured channel pruning."""
from slimline.plugins.prune.magnitude import MagnitudePrune
from slimline.plugins.prune.structured import StructuredPrune

__all__ = ["MagnitudePrune", "StructuredPrune"]
