"""Low-rank factorization step: truncated SVD of Linear/Conv (torch) and MatMul/Gemm (ONNX)."""
from slimline.plugins.lowrank.plugin import LowRankFactorize

__all__ = ["LowRankFactorize"]
