"""Block-sparse prefill attention (paper A.1.1): 16x16 query-key blocks chosen per head."""
