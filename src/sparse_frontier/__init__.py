"""sparse-frontier: reproduce and extend "The Sparse Frontier" (Nawrot et al., 2025)."""

__version__ = "0.1.0"
