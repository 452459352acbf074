"""Dense causal GQA attention: the fused GPU path (no score matrix in memory) and its reference."""
