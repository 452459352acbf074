"""Quest decode attention (paper A.1.6): one query attends to the KV pages chosen for its head."""
