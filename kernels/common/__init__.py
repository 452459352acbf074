"""Pieces shared by the kernel families: the masked-attention reference and input checks."""
