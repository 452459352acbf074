"""Every sparse method through the reference engine on the tiny model: it runs, and the density
the engine records is the target (the engine aggregates each layer's AttentionResult)."""

from __future__ import annotations

import pytest

from sparse_frontier.attention import get_method
from sparse_frontier.engines import load_engine

SPARSE = ["block_sparse", "vertical_slash", "flexprefill", "snapkv", "ada_snapkv", "quest"]


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return load_engine("hf", str(tiny_model_dir))


@pytest.fixture(scope="module")
def prompt(engine) -> list[int]:
    text = "In chapter seven the traveller met a merchant who sold blue lanterns by the river. " * 60
    ids = engine.tokenizer(text, add_special_tokens=False).input_ids
    assert len(ids) > 1500
    return ids[:1500]


@pytest.mark.slow
@pytest.mark.parametrize("name", SPARSE)
def test_engine_records_the_target_density(engine, prompt, name):
    generation = engine.generate([prompt], get_method(name, 3.0), 4)[0]
    assert len(generation.output_ids) == 4
    assert generation.density == pytest.approx(1 / 3, rel=0.05)
    if name in ("vertical_slash", "flexprefill"):
        # Both countings of the same prefill, summed over layers; calibrated on the paper kernel's.
        assert generation.densities["kernel"] == pytest.approx(generation.density)
        assert generation.densities["exact"] < generation.densities["kernel"]
    else:
        assert generation.densities == {}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vertical_slash", "flexprefill"])
def test_engine_records_the_exact_density_when_calibrated_on_it(engine, prompt, name):
    generation = engine.generate([prompt], get_method(name, 3.0, density="exact"), 4)[0]
    assert generation.density == generation.densities["exact"] == pytest.approx(1 / 3, rel=0.05)
    assert generation.densities["kernel"] > generation.densities["exact"]
