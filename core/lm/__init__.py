"""Language models: text windows, scoring (perplexity, agreement, KL), generation.

Kept apart from the generic evaluator because an LM's outputs are too big to hold
(windows × tokens × vocabulary floats): each window's logits are reduced to a small
summary as soon as they are computed, and models are compared through those summaries.
"""
