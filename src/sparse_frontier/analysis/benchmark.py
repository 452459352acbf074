"""Time the whole analysis on a paper-sized synthetic score table (issue 5, point 9).

    python -m sparse_frontier.analysis.benchmark                  # library: every step + every figure
    python -m sparse_frontier.analysis.benchmark --snakemake      # the same through the Snakemake rules

The table follows the paper's grid (4 Qwen-2.5 sizes x (dense + 6 methods x 9 compressions) x
9 tasks x 4 lengths x 100 samples, ~0.8M rows; ``--methods 7`` adds a seventh method for ~0.9M) and
is drawn from a known scaling law (analysis/synthetic.py). Each step is timed on its own; the total
is the wall time from reading the Parquet file to the last figure written.
"""

from __future__ import annotations

import os

# As in the scaling-law script: L-BFGS-B makes BLAS calls on tiny matrices, where extra BLAS threads
# only contend for the cores. BLAS reads these when it loads, so they come before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from sparse_frontier.analysis.flops import ModelShape  # noqa: E402
from sparse_frontier.analysis.run import (  # noqa: E402
    cells_step,
    flops_step,
    isoflops_step,
    max_compression_step,
    methods_step,
    scaling_step,
    write_step,
)
from sparse_frontier.analysis.synthetic import SyntheticStudy, synthetic_scores  # noqa: E402
from sparse_frontier.analysis.tables import read_scores  # noqa: E402
from sparse_frontier.analysis.targets import DATA_TABLES, FIGURES, TABLES, figure_paths, table_paths  # noqa: E402

#: Qwen2.5 Instruct shapes (hidden, layers, heads, kv heads, MLP), vocabulary 152064, head dim 128.
QWEN25 = {
    "qwen2.5-7b": (7.6, 3584, 28, 28, 4, 18944),
    "qwen2.5-14b": (14.7, 5120, 48, 40, 8, 13824),
    "qwen2.5-32b": (32.5, 5120, 64, 40, 8, 27648),
    "qwen2.5-72b": (72.7, 8192, 80, 64, 8, 29568),
}


def hf_config(hidden: int, layers: int, heads: int, kv: int, mlp: int) -> dict:
    return {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "intermediate_size": mlp,
        "vocab_size": 152064,
    }


def make_study(n_methods: int, n_samples: int) -> SyntheticStudy:
    study = SyntheticStudy(models={m: v[0] for m, v in QWEN25.items()}, n_samples=n_samples)
    if n_methods > len(study.methods):
        study.methods["block_sparse_64"] = ("prefill", 1.8)
    study.methods = dict(list(study.methods.items())[:n_methods])
    return study


class Outputs:
    """Attribute access to named output paths, like Snakemake's ``snakemake.output``."""

    def __init__(self, paths: dict[str, str], root: Path):
        for key, path in paths.items():
            setattr(self, key, str(root / path))


def run_library(root: Path, scores_path: Path, study: SyntheticStudy) -> dict[str, float]:
    """Every analysis step and figure in-process; returns seconds per step."""
    from sparse_frontier.figures.flops import flops_vs_length_chart
    from sparse_frontier.figures.isoflops import isoflops_chart
    from sparse_frontier.figures.max_compression import max_compression_chart
    from sparse_frontier.figures.save import save_all
    from sparse_frontier.figures.scaling import scaling_predictions_chart
    from sparse_frontier.figures.score_compression import (
        score_vs_compression_chart,
        score_vs_compression_data,
    )

    times: dict[str, float] = {}
    outputs = Outputs({k: v for name in [*TABLES, *DATA_TABLES] for k, v in table_paths(name).items()}, root)

    def timed(name, fn):
        t0 = time.perf_counter()
        out = fn()
        times[name] = time.perf_counter() - t0
        return out

    scores = timed(
        "read scores + cell statistics", lambda: cells_step(read_scores(scores_path)).tables["cells"]
    )
    shapes = {m: ModelShape.from_hf_config(hf_config(*v[1:])) for m, v in QWEN25.items()}
    timed("flops", lambda: write_step(flops_step(scores, shapes), outputs))
    flops = pd.read_parquet(outputs.flops_parquet)
    timed("isoflops (RQ1)", lambda: write_step(isoflops_step(scores, flops, None), outputs))
    timed("max compression (RQ2)", lambda: write_step(max_compression_step(scores), outputs))
    timed("methods (RQ3)", lambda: write_step(methods_step(scores), outputs))
    timed("scaling laws (RQ4)", lambda: write_step(scaling_step(scores, study.models), outputs))

    def fig(name, chart):
        save_all(chart, {k: root / v for k, v in figure_paths(name).items()})

    timed(
        "figure flops_vs_length",
        lambda: fig(
            "flops_vs_length",
            flops_vs_length_chart(
                pd.read_parquet(outputs.flops_by_length_parquet),
                pd.read_parquet(outputs.flops_crossover_parquet),
            ),
        ),
    )
    timed(
        "figure isoflops", lambda: fig("isoflops", isoflops_chart(pd.read_parquet(outputs.isoflops_parquet)))
    )
    timed(
        "figure max_compression",
        lambda: fig(
            "max_compression", max_compression_chart(pd.read_parquet(outputs.max_compression_summary_parquet))
        ),
    )
    timed(
        "figure score_vs_compression",
        lambda: fig("score_vs_compression", score_vs_compression_chart(score_vs_compression_data(scores))),
    )
    timed(
        "figure scaling_predictions",
        lambda: fig(
            "scaling_predictions",
            scaling_predictions_chart(pd.read_parquet(outputs.scaling_predictions_parquet)),
        ),
    )
    return times


def run_snakemake(root: Path, study: SyntheticStudy, cores: int) -> dict[str, float]:
    """The analysis and figure rules through Snakemake, on a throw-away Snakefile that includes them."""
    repo = Path(__file__).resolve().parents[3]
    rules = repo / "workflow" / "rules"
    snakefile = root / "Snakefile"
    models = {m: {"params_b": v[0]} for m, v in QWEN25.items()}
    snakefile.write_text(
        f"config['models'] = {models!r}\n"
        "config['analysis'] = {}\n"
        "model_configs = lambda: [f'results/model_configs/{m}.json' for m in config['models']]\n"
        f"include: {str(rules / 'analysis.smk')!r}\n"
        f"include: {str(rules / 'figures.smk')!r}\n"
        "rule all:\n    input: analysis_targets()\n"
    )
    del study
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(snakefile),
            "-d",
            str(root),
            "--cores",
            str(cores),
            "-q",
        ],
        check=True,
    )
    return {"snakemake (all analysis + figure rules)": time.perf_counter() - t0}


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (Snakemake jobs), user + system."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=100, help="samples per cell (paper: 100)")
    parser.add_argument("--methods", type=int, default=7, help="sparse methods (paper: 6; 7 for ~1M rows)")
    parser.add_argument(
        "--snakemake", action="store_true", help="run through the rules instead of in-process"
    )
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="write the outputs here and keep them")
    args = parser.parse_args(argv)

    root = args.keep or Path(tempfile.mkdtemp(prefix="sf-analysis-bench-"))
    study = make_study(args.methods, args.samples)
    t0 = time.perf_counter()
    scores = synthetic_scores(study)
    scores_path = root / "results" / "tables" / "scores.parquet"
    scores_path.parent.mkdir(parents=True, exist_ok=True)
    scores.to_parquet(scores_path, index=False)
    (root / "results" / "model_configs").mkdir(parents=True, exist_ok=True)
    for m, v in QWEN25.items():
        (root / "results" / "model_configs" / f"{m}.json").write_text(json.dumps(hf_config(*v[1:])))
    print(f"synthetic table: {len(scores):,} rows ({time.perf_counter() - t0:.1f} s to generate, not timed)")

    start = time.perf_counter()
    cpu_start = _cpu_seconds()
    times = (
        run_snakemake(root, study, args.cores) if args.snakemake else run_library(root, scores_path, study)
    )
    total = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu_start
    width = max(map(len, times))
    for name, secs in times.items():
        print(f"  {name:<{width}}  {secs:6.2f} s")
    print(f"  {'total (wall)':<{width}}  {total:6.2f} s")
    print(f"  {'total (CPU, user+sys, children included)':<{width}}  {cpu:6.2f} s")
    print(f"  load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    missing = [p for name in FIGURES for p in figure_paths(name).values() if not (root / p).exists()]
    missing += [p for name in TABLES for p in table_paths(name).values() if not (root / p).exists()]
    print("all outputs written" if not missing else f"MISSING: {missing}")
    if args.keep is None:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
