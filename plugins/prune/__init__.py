"""Pruning steps: unstructured/N:M magnitude pruning, structured channel pruning, LLM pruning."""
from slimline.plugins.prune.llm import LLMPrune
from slimline.plugins.prune.magnitude import MagnitudePrune
from slimline.plugins.prune.structured import StructuredPrune

__all__ = ["LLMPrune", "MagnitudePrune", "StructuredPrune"]
