"""A model's context: its limit, the check that every length fits, and the RoPE overrides of a job."""

from __future__ import annotations

import json

import pytest

from sparse_frontier.context import (
    check_lengths_fit,
    context_limit,
    local_model_config,
    rope_overrides,
    study_model_config,
)
from sparse_frontier.models import TINY_MAX_POSITIONS

YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
# Qwen2.5-7B-Instruct's config.json as published (legacy RoPE keys) and as transformers 5 writes it.
QWEN_LEGACY = {"max_position_embeddings": 32768, "rope_theta": 1000000.0, "rope_scaling": None}
QWEN_V5 = {
    "max_position_embeddings": 32768,
    "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"},
}


def test_limit_from_positions_scaling_and_override():
    assert context_limit({}, {"max_position_embeddings": 1024}) == (1024, "its max_position_embeddings")
    assert context_limit({}, {"text_config": {"max_position_embeddings": 2048}})[0] == 2048
    assert context_limit({"rope_scaling": YARN}, QWEN_LEGACY)[0] == 131072
    # without original_max_position_embeddings the factor multiplies the config's positions
    linear = {"rope_scaling": {"rope_type": "linear", "factor": 2}}
    assert context_limit(linear, {"max_position_embeddings": 4096})[0] == 8192
    both = {"max_context": 5000, "rope_scaling": YARN}
    assert context_limit(both, QWEN_LEGACY) == (5000, "its max_context")
    assert context_limit({"max_context": 5000}, None)[0] == 5000
    assert context_limit({"rope_scaling": YARN}, None)[0] == 131072  # the scaling names its positions
    assert context_limit({}, None) is None  # a hub id not downloaded: unknown
    assert context_limit({}, {"hidden_size": 8}) is None


def test_a_too_long_length_is_refused_with_model_length_and_fix():
    models = {"small": {"path": "x"}, "big": {"path": "y"}}
    configs = {"small": {"max_position_embeddings": 1024}, "big": {"max_position_embeddings": 32768}}
    check_lengths_fit(models, [512, 768], 256, configs)  # 768 + 256 = 1024 fits exactly
    with pytest.raises(ValueError) as err:
        check_lengths_fit(models, [512, 1024, 2048], 256, configs)
    message = str(err.value)
    assert "Model 'small'" in message and "1024 tokens" in message
    assert "length 2048 needs 2304" in message and "drop 1024, 2048 from `lengths`" in message
    assert "rope_scaling" in message and "max_context" in message
    assert "big" not in message
    # an unknown limit is not checked; max_context both refuses and allows
    check_lengths_fit(models, [100000], 256, {"small": None, "big": None})
    with pytest.raises(ValueError, match="'small' takes at most 4096 tokens \\(its max_context\\)"):
        check_lengths_fit({"small": {"path": "x", "max_context": 4096}}, [4096], 256, {"small": None})
    check_lengths_fit({"small": {"path": "x", "max_context": 4352}}, [4096], 256, configs)


def test_study_config_reads_local_folders_builds_and_not_the_hub(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 1024}))
    assert local_model_config(str(tmp_path)) == {"max_position_embeddings": 1024}
    assert study_model_config({"path": str(tmp_path)})["max_position_embeddings"] == 1024
    assert local_model_config(str(tmp_path / "missing")) is None
    # a hub id that is not in the cache is not fetched
    assert local_model_config("sparse-frontier-tests/not-a-model") is None
    build = {"path": "results/models/tiny", "build": {"hidden_size": 64}}
    assert study_model_config(build) == {"max_position_embeddings": TINY_MAX_POSITIONS}
    build["build"]["max_position_embeddings"] = 512
    assert study_model_config(build) == {"max_position_embeddings": 512}


@pytest.mark.parametrize("config", [QWEN_LEGACY, QWEN_V5])
def test_rope_overrides_scale_only_beyond_the_trained_context(config):
    assert rope_overrides(config, None, 100000) == {}
    assert rope_overrides(config, YARN, 32768) == {}  # fits: the model runs as released
    over = rope_overrides(config, YARN, 65536 + 512)
    assert over == {
        "rope_parameters": {
            "rope_theta": 1000000.0,  # the model's own base is kept
            "rope_type": "yarn",
            "factor": 4.0,
            "original_max_position_embeddings": 32768,
        },
        "max_position_embeddings": 131072,
    }


def test_rope_overrides_of_other_types():
    small = {"max_position_embeddings": 4096, "rope_theta": 10000.0}
    linear = rope_overrides(small, {"type": "linear", "factor": 2.0}, 8000)
    # linear keeps max_position_embeddings (vLLM multiplies it by the factor itself); legacy "type"
    assert linear == {"rope_parameters": {"rope_theta": 10000.0, "rope_type": "linear", "factor": 2.0}}
    yarn = rope_overrides(small, {"rope_type": "yarn", "factor": 2.0}, 8000)
    assert yarn["rope_parameters"]["original_max_position_embeddings"] == 4096
    assert yarn["max_position_embeddings"] == 8192


def test_a_hub_id_already_in_the_cache_is_read(tmp_path, monkeypatch):
    from huggingface_hub import constants

    # the Hugging Face cache layout: refs/main names the snapshot that holds the files
    repo = tmp_path / "models--some-org--some-model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text('{"max_position_embeddings": 4096}')
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert local_model_config("some-org/some-model") == {"max_position_embeddings": 4096}
    assert local_model_config("some-org/other-model") is None
    with pytest.raises(ValueError, match="'m' takes at most 4096 tokens"):
        check_lengths_fit({"m": {"path": "some-org/some-model"}}, [4096], 256)
    check_lengths_fit({"m": {"path": "some-org/some-model", "max_context": 8192}}, [4096], 256)
