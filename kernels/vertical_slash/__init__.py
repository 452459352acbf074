"""Vertical-slash prefill attention (paper A.1.2, MInference): key columns plus diagonals."""
