"""Triton kernels and their PyTorch references (installed as ``sparse_frontier.kernels``).

This package knows nothing of the pipeline: tensors in, tensors out.
"""
