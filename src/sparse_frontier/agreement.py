"""How far a sparse run departs from dense on the same prompt: greedy-token agreement.

Accuracy on ten samples moves in steps of 0.1 and says nothing when the model fails the task
anyway; a small-model study needs a finer, model-agnostic signal. Decoding is greedy, so dense
and a sparse method produce the same tokens until the first step where sparse attention changes
the argmax, and usually differ everywhere after it (the continuations drift apart). The measure
is therefore the common prefix: ``dense_agreement`` = tokens the sparse run shares with the dense
output before the first difference / the longer of the two outputs, 1.0 for an identical answer
(and for dense itself), 0.0 when the first token already differs. Dividing by the longer output
keeps a sparse run that stops early, or rambles past dense's end, below 1.
"""

from __future__ import annotations

import pandas as pd

#: What identifies one prompt across cells: a sparse row is compared with the dense row of these.
SAMPLE_KEYS = ["model", "length", "task", "sample_id", "seed"]

AGREEMENT_COLUMNS = ["dense_agreement", "dense_prefix_tokens"]


def common_prefix(a, b) -> int:
    """Number of leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def prefix_agreement(sparse, dense) -> float:
    """Shared leading tokens over the longer output (1.0 when both are empty)."""
    longest = max(len(sparse), len(dense))
    return common_prefix(sparse, dense) / longest if longest else 1.0


def add_dense_agreement(predictions: pd.DataFrame) -> pd.DataFrame:
    """``predictions`` with ``dense_agreement`` and ``dense_prefix_tokens`` per row.

    Each row is joined with the dense row of the same sample (:data:`SAMPLE_KEYS`) on its
    ``output_ids``. A sample without a dense row gets NaN (its cells ran elsewhere); predictions
    without ``output_ids`` (written before they were recorded) stop with a sentence.
    """
    if "output_ids" not in predictions:
        raise ValueError(
            "The predictions have no `output_ids` column, so their agreement with dense cannot be "
            "measured; rerun inference (snakemake --forcerun inference) to record the generated tokens."
        )
    dense = predictions[predictions.method == "dense"]
    if dense.duplicated(SAMPLE_KEYS).any():
        first = dense[dense.duplicated(SAMPLE_KEYS)].iloc[0]
        raise ValueError(f"Two dense rows for sample {dict(first[SAMPLE_KEYS])}; the inputs overlap.")
    reference = dense.set_index(SAMPLE_KEYS)["output_ids"]
    out = predictions.copy()
    agreement, prefix = [], []
    for key, ids in zip(out[SAMPLE_KEYS].itertuples(index=False, name=None), out.output_ids, strict=True):
        if key not in reference.index:
            agreement.append(float("nan"))
            prefix.append(pd.NA)
            continue
        dense_ids = list(reference.loc[key])
        ids = list(ids)
        agreement.append(prefix_agreement(ids, dense_ids))
        prefix.append(common_prefix(ids, dense_ids))
    out["dense_agreement"] = agreement
    out["dense_prefix_tokens"] = pd.array(prefix, dtype="Int64")
    return out
