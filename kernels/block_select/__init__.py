"""Block-Sparse's block selection (paper A.1.1) fused on the GPU: pooled blocks in, block mask out."""
