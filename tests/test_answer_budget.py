"""Answer budgets and stopping at the answer: decoding ends at the configured budget or once the
answer is complete, and the pipeline hands each task its own."""

from __future__ import annotations

import pytest

from sparse_frontier.attention import get_method
from sparse_frontier.engines import load_engine
from sparse_frontier.engines.base import Generation
from sparse_frontier.pipeline import Cell, answer_budget, build_task_data, run_inference, task_answer_budget
from sparse_frontier.tasks import get_task


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return load_engine("hf", str(tiny_model_dir))


def test_generation_stops_once_its_text_holds_a_stop_string(engine):
    text = "Grass is green, the sky is blue, here we go. " * 20
    prompt = engine.tokenizer(text, add_special_tokens=False).input_ids
    dense = get_method("dense")
    free = engine.generate([prompt], dense, 24)[0].output_ids
    assert len(free) == 24  # the random-weight model never emits its end token this early
    decode = engine.tokenizer.decode
    stop = decode(free[:6])[-2:]  # the text the first six tokens end with
    expected = next(k for k in range(1, 25) if stop in decode(free[:k]))  # the first step it is there
    stopped = engine.generate([prompt], dense, 24, stop=(stop,))[0]
    assert stopped.output_ids == free[:expected]  # the same greedy tokens, cut where the answer ends
    assert stop in stopped.text and expected < 24


def test_a_task_stops_at_the_authors_closing_tag_only_in_their_format():
    assert get_task("ruler_vt").stop_strings == ("</answer>",)
    assert get_task("ruler_vt", answer_format="structured").stop_strings == ()


def test_configured_budgets_override_the_tasks_own_and_reach_the_engine(tiny_tokenizer):
    assert task_answer_budget("ruler_vt") == get_task("ruler_vt").max_new_tokens
    assert task_answer_budget("ruler_vt", {"ruler_vt": 32}) == 32
    assert answer_budget(["ruler_vt", "story_retrieval"], {"story_retrieval": 40}) == 256

    calls = []

    class Recording:
        name = "recording"
        tokenizer = tiny_tokenizer

        def generate(self, prompts, method, max_new_tokens, stop=()):
            calls.append((max_new_tokens, stop))
            return [Generation([1, 2], "x", 1.0, len(p), 1.0, 1.0) for p in prompts]

    data = build_task_data("ruler_vt", tiny_tokenizer, 2048, 2, seed=0)
    rows = run_inference(Recording(), data, [Cell("dense", 1.0)], model="m", max_new_tokens={"ruler_vt": 16})
    assert calls == [(16, ("</answer>",))]
    assert rows.output_ids.tolist() == [[1, 2], [1, 2]]  # the tokens are recorded for the agreement
