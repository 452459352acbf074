"""Is a dense score the model's own? Stock transformers, greedy, against the pipeline's dense answers.

A study's dense row comes from the project's engine (its own attention, its KV cache, on a GPU in
bf16). This reruns some of the same prompts through stock transformers (``generate``, greedy, its
own SDPA attention and sliding windows, on this machine) and prints each prompt's answers side by
side, the gold answer, and how many tokens agree. If stock transformers makes the same mistakes,
a low dense score is the model at that length, not the engine.

Run:  PYTHONPATH=src python benchmarks/dense_vs_transformers.py MODEL_DIR DATA.parquet SCORES.parquet
          [--samples 0 1 2] [--dtype float32] [--device cuda] [--json out.json]
  DATA: the task data the study ran (results/data/TOKENIZER/TASK/LENGTH.parquet);
  SCORES: its scores (results/scores/MODEL/LENGTH.parquet), whose dense rows are compared.
"""

from __future__ import annotations

import argparse
import json
import time

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sparse_frontier.agreement import common_prefix


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dir")
    parser.add_argument("data")
    parser.add_argument("scores")
    parser.add_argument("--samples", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()

    data = pd.read_parquet(args.data).set_index("sample_id")
    scores = pd.read_parquet(args.scores)
    dense = scores[scores.method == "dense"].set_index("sample_id")
    missing = sorted(set(args.samples) - (set(data.index) & set(dense.index)))
    if missing:
        raise SystemExit(
            f"samples {missing} are not in both {args.data} and the dense rows of {args.scores}; "
            "pick --samples from both."
        )
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = (
        AutoModelForCausalLM.from_pretrained(
            args.model_dir, dtype=getattr(torch, args.dtype), attn_implementation="sdpa"
        )
        .to(args.device)
        .eval()
    )
    rows = []
    for sample in args.samples:
        prompt = data.loc[sample, "prompt"]
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids.to(args.device)
        pipeline_ids = [int(t) for t in dense.loc[sample, "output_ids"]]
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                ids, max_new_tokens=len(pipeline_ids), do_sample=False, top_p=None, top_k=None
            )
        stock_ids = out[0, ids.shape[1] :].tolist()
        row = {
            "sample_id": sample,
            "prompt_tokens": ids.shape[1],
            "gold": str(dense.loc[sample, "gold"]),
            "pipeline": dense.loc[sample, "output"],
            "transformers": tokenizer.decode(stock_ids, skip_special_tokens=True),
            "same_prefix_tokens": common_prefix(pipeline_ids, stock_ids),
            "of": len(pipeline_ids),
            "seconds": round(time.perf_counter() - start, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
