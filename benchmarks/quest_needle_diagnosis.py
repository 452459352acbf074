"""Why Quest loses one needle: its page bound against an oracle ranking, layer by layer.

On ``ruler_niah_single`` (one 7-digit number in repeated noise) every variant generates the primed
answer greedily and is scored:

- ``dense``; ``quest`` (the default: pages shared by a KV group); ``quest-per-head`` (share_pages false);
- ``oracle``: Quest's plumbing and budget, but pages ranked by the exact max q.k in the page
  (``exact_page_scores``, summed over the group like the bound) instead of the min/max bound;
- ``quest-dense=L1,L2``: Quest with layers L1, L2 decoding dense (e.g. 0,1 as original Quest).

``--ranks ID ...`` then teacher-forces those samples on dense's answer and prints, per decode step,
the (layer, KV group) pairs whose needle page Quest leaves out although dense puts at least 10% of
the group's attention on it, with the needle page's rank under the bound and under the exact score.
Runs on the CPU. The record is in docs/methods.md ("Quest on one-needle retrieval"):

    python benchmarks/quest_needle_diagnosis.py MODEL --length 1024 --samples 8 --ratio 2 --ranks 1 6
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import torch

from sparse_frontier.attention import get_method
from sparse_frontier.attention.quest import Quest, exact_page_scores, page_bounds, page_scores
from sparse_frontier.engines.hf import HfEngine
from sparse_frontier.tasks import get_task


class OracleQuest(Quest):
    """Quest's budget, current page and plumbing; pages ranked by their best q.k, not its upper bound."""

    def page_ranking(self, q, k, low, high):
        return exact_page_scores(q, k, self.page_size)


class DenseLayers:
    """A decode method with some layers dense. The hf engine calls the layers in order at every
    step, so the call count modulo the number of layers is the layer."""

    def __init__(self, method, dense_layers: set[int], n_layers: int):
        self.method, self.dense_layers, self.n_layers, self.calls = method, dense_layers, n_layers, 0
        self.dense = get_method("dense")

    def __getattr__(self, name):
        return getattr(self.method, name)

    def decode(self, q, k, v, key_mask=None, memo=None):
        layer, self.calls = self.calls % self.n_layers, self.calls + 1
        return (self.dense if layer in self.dense_layers else self.method).decode(q, k, v, key_mask, memo)


@dataclass
class NeedleProbe(Quest):
    """Quest that logs, per (step, layer, KV group), where the needle's pages rank and if they are read."""

    needle_pages: tuple[int, ...] = ()
    n_layers: int = 1
    rows: list = field(default_factory=list)
    calls: int = 0

    def plan(self, q, k, key_mask=None, summaries=None):
        step, layer = divmod(self.calls, self.n_layers)
        self.calls += 1
        mask = super().plan(q, k, key_mask, summaries)
        hkv, s, d = k.shape
        group, current = q.shape[0] // hkv, (s - 1) // self.page_size
        head_bound = page_scores(q, *page_bounds(k, self.page_size)).view(hkv, group, -1)
        bound = head_bound.sum(1)
        exact = exact_page_scores(q, k, self.page_size).view(hkv, group, -1).sum(1)
        weights = torch.softmax((q.float().view(hkv, group, d) @ k.float().transpose(1, 2)) / d**0.5, -1)
        for h in range(hkv):
            size, pages = self.page_size, self.needle_pages
            needle_mass = sum(float(weights[h, :, p * size : (p + 1) * size].sum()) for p in pages)
            needle_mass /= group
            read = all(bool(mask[h * group, p]) for p in self.needle_pages)
            others = [p for p in range(bound.shape[1]) if p not in pages and p != current]
            best = max(pages, key=lambda p: float(exact[h, p]))
            # The group-summed bound and exact score: the needle's page against the median other page.
            scores = (float(bound[h, best]), float(exact[h, best]),
                      float(bound[h, others].median()), float(exact[h, others].median()))
            head_ranks = [_rank(head_bound[h, g], pages, current) for g in range(group)]
            self.rows.append(
                (step, layer, h, _rank(bound[h], pages, current), _rank(exact[h], pages, current),
                 read, needle_mass, int(mask[h * group].sum()), scores, head_ranks)
            )
        return mask


def _rank(scores: torch.Tensor, pages: tuple[int, ...], current: int) -> int:
    """Place of the best of ``pages`` among the pages other than the current one (1 = best); a
    selection of n pages reads the current page and places 1 to n - 1."""
    scores = scores.clone()
    scores[current] = float("inf")
    return min(int((scores > scores[p]).sum()) for p in pages)


def make_method(spec: str, ratio: float, n_layers: int):
    if spec == "dense":
        return get_method("dense")
    if spec == "quest":
        return get_method("quest", ratio)
    if spec == "quest-per-head":
        return get_method("quest", ratio, share_pages=False)
    if spec == "oracle":
        return OracleQuest(compression_ratio=ratio)
    if spec.startswith("quest-dense="):
        layers = {int(x) for x in spec.removeprefix("quest-dense=").split(",")}
        return DenseLayers(get_method("quest", ratio), layers, n_layers)
    raise SystemExit(f"Unknown variant {spec!r}: use dense, quest, quest-per-head, oracle, quest-dense=L,L.")


def needle_pages(tokenizer, prompt: list[int], value: str, page_size: int) -> tuple[int, ...]:
    """The pages holding the needle's value tokens in the prompt."""
    ids = tokenizer(" " + value, add_special_tokens=False).input_ids
    ids = [t for t in ids if tokenizer.decode([t]).strip()]
    start = next(i for i in range(len(prompt)) if prompt[i : i + len(ids)] == ids)
    return tuple(sorted({i // page_size for i in range(start, start + len(ids))}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--ratio", type=float, default=2.0)
    parser.add_argument(
        "--variants", nargs="*", default=["dense", "quest", "quest-per-head", "quest-dense=0,1", "oracle"]
    )
    parser.add_argument("--ranks", nargs="*", type=int, default=[], help="sample ids to probe step by step")
    args = parser.parse_args()

    # The CPU path: on CUDA, Quest's fused step selects inside its kernel and never calls ``plan``.
    engine = HfEngine(args.model, device="cpu")
    tokenizer, n_layers = engine.tokenizer, engine.model.config.num_hidden_layers
    task = get_task("ruler_niah_single")
    samples = task.generate(tokenizer, args.length, args.samples, seed=0)
    prompts = [tokenizer(s.prompt, add_special_tokens=False).input_ids for s in samples]
    totals = dict.fromkeys(args.variants, 0.0)
    for sample, prompt in zip(samples, prompts, strict=True):
        cells = []
        for spec in args.variants:
            out = engine.generate([prompt], make_method(spec, args.ratio, n_layers), task.max_new_tokens,
                                  task.stop_strings)[0]
            score = task.score(out.text, sample.gold)
            totals[spec] += score
            cells.append(f"{spec} {score:.0f} {out.text!r}")
        print(f"#{sample.sample_id} gold {sample.gold[0]}: " + " | ".join(cells), flush=True)
    print("mean score at CR", args.ratio, {k: round(v / len(samples), 3) for k, v in totals.items()})

    for i in args.ranks:
        sample, prompt = samples[i], prompts[i]
        pages = needle_pages(tokenizer, prompt, sample.gold[0], 16)
        dense = engine.generate([prompt], get_method("dense"), task.max_new_tokens, task.stop_strings)[0]
        dense = dense.output_ids
        probe = NeedleProbe(compression_ratio=args.ratio, needle_pages=pages, n_layers=n_layers)
        hits = engine.forced_agreement(prompt, probe, dense)
        print(f"\n#{i}: {len(prompt)} tokens, needle on page(s) {pages}; dense answer "
              f"{[tokenizer.decode([t]) for t in dense]}")
        for step in range(len(dense) - 1):
            rows = [r for r in probe.rows if r[0] == step]
            lost = [f"L{r[1]}/kv{r[2]} rank {r[3]} (exact {r[4]}, mass {r[6]:.2f}; bound/exact needle "
                    f"{r[8][0]:.0f}/{r[8][1]:.0f}, median other page {r[8][2]:.0f}/{r[8][3]:.0f}; "
                    f"per-head bound ranks {'/'.join(map(str, r[9]))})"
                    for r in rows if not r[5] and r[6] >= 0.1]
            n_pages = (len(prompt) + step) // 16 + 1
            print(f"  step {step}: next {tokenizer.decode([dense[step + 1]])!r} "
                  f"{'kept' if hits[step + 1] else 'LOST'}; reads {rows[0][7]} of {n_pages} pages; "
                  f"needle page unread where it matters: {', '.join(lost) or 'none'}", flush=True)


if __name__ == "__main__":
    main()
