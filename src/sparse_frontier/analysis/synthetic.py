"""Synthetic score tables drawn from a known scaling law, for known-answer tests and benchmarks.

Each cell's accuracy is p = sigmoid(a·log N + b·log L + c_m·log CR + d_task + e) (paper Eq. 2 with a
per-method compression slope c_m = c · method_sensitivity[m]); each sample's score is a Bernoulli
draw (exact-match tasks) so cell means carry realistic binomial noise. N is in billions of
parameters, L in tokens, all logs natural — the same units :mod:`scaling` fits in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

PAPER_CRS = (1.5, 2.0, 2.5, 10 / 3, 5.0, 7.5, 10.0, 15.0, 20.0)


@dataclass
class SyntheticStudy:
    """The grid and the true law of a synthetic study (defaults: the paper's full grid)."""

    models: dict[str, float] = field(
        default_factory=lambda: {"qwen-7b": 7.0, "qwen-14b": 14.0, "qwen-32b": 32.0, "qwen-72b": 72.0}
    )
    #: method -> (phase, sensitivity multiplier of c)
    methods: dict[str, tuple[str, float]] = field(
        default_factory=lambda: {
            "vertical_slash": ("prefill", 1.0),
            "flexprefill": ("prefill", 1.3),
            "block_sparse": ("prefill", 1.6),
            "snapkv": ("decode", 1.5),
            "ada_snapkv": ("decode", 1.2),
            "quest": ("decode", 0.7),
        }
    )
    compression_ratios: tuple[float, ...] = PAPER_CRS
    #: task -> (category, d_task)
    tasks: dict[str, tuple[str, float]] = field(
        default_factory=lambda: {
            "qa_quality": ("retrieval", 0.0),
            "qa_squad": ("retrieval", 0.4),
            "qa_toefl": ("retrieval", 0.8),
            "ruler_cwe": ("high_scope", -0.6),
            "ruler_niah": ("retrieval", 2.0),
            "ruler_vt": ("high_dispersion", -1.2),
            "story_filtering": ("high_scope", -1.5),
            "story_multihop": ("high_dispersion", -1.0),
            "story_retrieval": ("retrieval", 0.3),
        }
    )
    lengths: tuple[int, ...] = (16384, 32768, 65536, 131072)
    n_samples: int = 100
    a: float = 0.6
    b: float = -0.35
    c: float = -0.45
    e: float = 2.0
    seed: int = 0

    def logit(self, params_b, length, cr, d_task, sensitivity):
        """The true logit of accuracy for arrays of cell coordinates."""
        return (
            self.a * np.log(params_b)
            + self.b * np.log(length)
            + self.c * sensitivity * np.log(cr)
            + d_task
            + self.e
        )


def synthetic_scores(study: SyntheticStudy | None = None) -> pd.DataFrame:
    """A long score table with the columns of ``results/tables/scores.parquet`` (one row per sample).

    Dense cells (method "dense", phase "dense", CR 1) come first, then every sparse method at every
    compression ratio. Size: (1 + methods x CRs) x models x tasks x lengths x n_samples rows.
    """
    s = study or SyntheticStudy()
    rng = np.random.default_rng(s.seed)
    cells = [("dense", "dense", 1.0, 1.0)] + [
        (m, phase, cr, sens) for m, (phase, sens) in s.methods.items() for cr in s.compression_ratios
    ]
    cell = pd.DataFrame(cells, columns=["method", "phase", "compression_ratio", "sensitivity"])
    models = pd.DataFrame({"model": list(s.models), "params_b": list(s.models.values())})
    tasks = pd.DataFrame(
        [(t, cat, d) for t, (cat, d) in s.tasks.items()], columns=["task", "task_category", "d_task"]
    )
    lengths = pd.DataFrame({"length": np.asarray(s.lengths, dtype=np.int64)})
    grid = models.merge(cell, how="cross").merge(tasks, how="cross").merge(lengths, how="cross")
    p = 1.0 / (
        1.0
        + np.exp(
            -s.logit(
                grid["params_b"],
                grid["length"],
                grid["compression_ratio"],
                grid["d_task"],
                grid["sensitivity"],
            )
        )
    )
    grid["p_true"] = p
    n = s.n_samples
    rep = grid.loc[grid.index.repeat(n)].reset_index(drop=True)
    rep["sample_id"] = np.tile(np.arange(n, dtype=np.int64), len(grid))
    rep["seed"] = np.int64(s.seed)
    rep["score"] = (rng.random(len(rep)) < rep["p_true"].to_numpy()).astype(float)
    target = rep["compression_ratio"].to_numpy()
    jitter = np.where(target > 1, rng.normal(1.0, 0.03, len(rep)), 1.0)
    rep["achieved_compression"] = target * jitter
    rep["density"] = 1.0 / rep["achieved_compression"]
    rep["n_prompt_tokens"] = (rep["length"] * rng.uniform(0.95, 1.0, len(rep))).astype(np.int64)
    rep["n_output_tokens"] = rng.integers(50, 300, len(rep))
    rep["prefill_ms"] = rep["length"] * 0.01 / rep["achieved_compression"]
    rep["decode_ms"] = rep["n_output_tokens"] * 20.0
    rep["engine"] = "synthetic"
    cols = [
        "model",
        "method",
        "phase",
        "compression_ratio",
        "task",
        "task_category",
        "length",
        "sample_id",
        "seed",
        "score",
        "density",
        "achieved_compression",
        "n_prompt_tokens",
        "n_output_tokens",
        "prefill_ms",
        "decode_ms",
        "engine",
    ]
    return rep[cols]


def true_cell_accuracy(
    study: SyntheticStudy, params_b: float, length: int, cr: float, task: str, method: str
) -> float:
    """The accuracy the law assigns to one cell (what a perfect fit would predict)."""
    sens = 1.0 if method == "dense" else study.methods[method][1]
    z = study.logit(params_b, length, cr, study.tasks[task][1], sens)
    return float(1.0 / (1.0 + np.exp(-z)))
