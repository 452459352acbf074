"""QA tasks and their sources: normalisation of the raw formats, the answer document, scoring."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from task_helpers import assert_deterministic, assert_lengths, context_of

from sparse_frontier.tasks import get_task
from sparse_frontier.tasks.qa import sentence_ends
from sparse_frontier.tasks.qa_sources import (
    COLUMNS,
    normalize_quality,
    normalize_squad,
    normalize_toefl,
    toefl_files_from_dir,
    write_parquet_atomic,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "qa"
# Lengths the fixtures can fill (they are small; real sources fill 128K).
LENGTHS = {"qa_squad": [1536, 2048], "qa_quality": [1536, 2048], "qa_toefl": [1536, 1664]}


def _normalized():
    return {
        "squad": normalize_squad(json.loads((FIXTURES / "squad_dev_sample.json").read_text()), check=False),
        "quality": normalize_quality(
            (FIXTURES / "quality_dev_sample.jsonl").read_text().splitlines(), check=False
        ),
        "toefl": normalize_toefl(toefl_files_from_dir(FIXTURES / "toefl"), check=False),
    }


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("qa")
    paths = {}
    for dataset, frame in _normalized().items():
        paths[dataset] = root / f"{dataset}.parquet"
        write_parquet_atomic(frame, paths[dataset])
    return paths


def _task(name, sources):
    return get_task(name, source=str(sources[name.removeprefix("qa_")]))


def test_normalisation_of_each_raw_format():
    frames = _normalized()
    for frame in frames.values():
        assert list(frame.columns) == COLUMNS
        assert frame.question_id.is_unique
        key = frame.question.str.lower().str.strip() + "|" + frame.doc_id
        assert key.is_unique  # duplicate question-context pairs removed
    squad = frames["squad"]
    assert len(squad) == 26  # 28 raw - 1 unanswerable - 1 duplicate
    assert (squad.answer_index == -1).all() and squad.options.map(len).eq(0).all()
    assert "fx0004" not in set(squad.question_id)  # the unanswerable one
    quality = frames["quality"]
    assert len(quality) == 9 and quality.doc_id.nunique() == 3  # one duplicate across writers
    for row in quality.itertuples():
        assert row.options[row.answer_index] == row.answers[0]
    toefl = frames["toefl"]
    assert len(toefl) == 5  # the two-answer question is dropped
    assert toefl.doc_id.nunique() == 3
    assert toefl.question.str.endswith("?").all()
    assert not toefl.document.str.contains("SENTENCE").any()


def test_published_row_counts_are_checked():
    with pytest.raises(ValueError, match="published release has 11873"):
        normalize_squad(json.loads((FIXTURES / "squad_dev_sample.json").read_text()))


@pytest.mark.parametrize("name", ["qa_squad", "qa_quality", "qa_toefl"])
def test_missing_source_names_file_and_command(tmp_path, tiny_tokenizer, name):
    missing = tmp_path / "absent.parquet"
    task = get_task(name, source=str(missing))
    with pytest.raises(FileNotFoundError) as err:
        task.generate(tiny_tokenizer, 2048, 1, seed=0)
    message = str(err.value)
    assert str(missing) in message
    assert f"snakemake --cores 1 resources/qa/{name.removeprefix('qa_')}.parquet" in message


@pytest.mark.parametrize("name", ["qa_squad", "qa_quality", "qa_toefl"])
def test_answer_document_present_once_and_named(sources, tiny_tokenizer, name):
    task = _task(name, sources)
    frame = task.load().set_index("question_id")
    for length in LENGTHS[name]:
        samples = task.generate(tiny_tokenizer, length, 4, seed=0)
        assert_lengths(samples, tiny_tokenizer, length)
        assert len({s.meta["question_id"] for s in samples}) == len(samples)  # no repeated question
        for sample in samples:
            row = frame.loc[sample.meta["question_id"]]
            blocks = re.split(r"(?:^|\n\n)Document (\d+):\n", context_of(sample.prompt))[1:]
            documents = dict(zip(map(int, blocks[::2]), blocks[1::2], strict=True))
            assert list(documents) == list(range(1, len(documents) + 1)) and len(documents) >= 2
            number = sample.meta["answer_document"]
            assert documents[number] == row.document
            assert sum(text == row.document for text in documents.values()) == 1
            assert sample.prompt.count(row.document) == 1
            assert sample.prompt.count(f"Question about document {number}:\n") == 2
            if name == "qa_squad":
                assert sample.gold == tuple(row.answers)
            else:
                assert sample.gold == ("ABCD"[row.answer_index], row.answers[0])


def test_determinism(sources, tiny_tokenizer):
    assert_deterministic(_task("qa_squad", sources), tiny_tokenizer, 1536)


def test_too_short_length_is_a_clear_error(sources, tiny_tokenizer):
    with pytest.raises(ValueError, match="longer target length"):
        _task("qa_quality", sources).generate(tiny_tokenizer, 512, 1, seed=0)


def test_sentence_ends_cover_text():
    text = 'One. "Two!" Three?\nFour'
    ends = sentence_ends(text)
    assert [text[:e].rstrip() for e in ends] == ["One.", 'One. "Two!"', 'One. "Two!" Three?', text]


def test_authors_multiple_choice_scoring(sources):
    task = _task("qa_quality", sources)
    gold = ("C", "Lightning")
    explained = "<explanation>B is wrong.</explanation><answer>C</answer>"
    for output in ["<answer>C</answer>", "<answer>\n(c)\n</answer>", explained]:
        assert task.score(output, gold) == 1.0, output
    # every A-D counts, as the authors read it; tags must be lower case
    for output in ["<answer>C. Cloud</answer>", "<ANSWER>C</ANSWER>", "Answer: C", "<answer>B</answer>"]:
        assert task.score(output, gold) == 0.0, output


def test_authors_squad_scoring(sources):
    task = _task("qa_squad", sources)
    gold = ("salt traders", "the salt traders of the north")
    assert task.score("<answer>Salt traders.</answer>", gold) == 1.0
    assert task.score("<answer>traders</answer>", gold) == pytest.approx(0.67)
    # distinct words: {traders, of, north} against {salt, traders, of, north}
    assert task.score("<answer>traders traders of north</answer>", gold) == pytest.approx(0.86)
    assert task.score("Answer: salt traders", gold) == 0.0


def test_multiple_choice_scoring(sources):
    task = get_task("qa_quality", source=str(sources["quality"]), answer_format="structured")
    gold = ("C", "Lightning")
    for output in [
        "Answer: C",
        "answer: (c)",
        "**Answer:** C. Lightning",
        "Answer: Option C",
        "Answer: lightning",
    ]:
        assert task.score("Some reasoning.\n" + output, gold) == 1.0, output
    for output in ["Answer: B", "Answer: B) Rust", "Answer: rust", "no idea"]:
        assert task.score(output, gold) == 0.0, output


def test_squad_f1_scoring(sources):
    task = get_task("qa_squad", source=str(sources["squad"]), answer_format="structured")
    gold = ("salt traders", "the salt traders of the north")
    assert task.score("Answer: Salt traders.", gold) == 1.0
    assert task.score("Answer: traders", gold) == pytest.approx(2 / 3)
    assert task.score("Answer: fishermen", gold) == 0.0


def _raw_release_files(raw_dir: Path) -> None:
    """The fixtures packed the way each public release ships them, as a cached download."""
    import zipfile

    raw_dir.mkdir(parents=True, exist_ok=True)
    (raw_dir / "squad-dev-v2.0.json").write_bytes((FIXTURES / "squad_dev_sample.json").read_bytes())
    with zipfile.ZipFile(raw_dir / "QuALITY.v1.0.1.zip", "w") as archive:
        archive.write(FIXTURES / "quality_dev_sample.jsonl", "QuALITY.v1.0.1/QuALITY.v1.0.1.htmlstripped.dev")
        archive.writestr("QuALITY.v1.0.1/QuALITY.v1.0.1.htmlstripped.train", "")
    with zipfile.ZipFile(raw_dir / "TOEFL-QA-master.zip", "w") as archive:
        archive.writestr("TOEFL-QA-master/README.md", "readme")
        for path in sorted((FIXTURES / "toefl").rglob("*")):
            if path.is_file():
                archive.write(path, "TOEFL-QA-master/" + path.relative_to(FIXTURES / "toefl").as_posix())


@pytest.mark.parametrize("dataset", ["squad", "quality", "toefl"])
def test_release_archives_normalise_like_fixtures(tmp_path, dataset):
    from sparse_frontier.tasks.qa_sources import SOURCES, build_source, normalize_raw

    _raw_release_files(tmp_path / "raw")
    data = (tmp_path / "raw" / SOURCES[dataset].raw_name).read_bytes()
    assert normalize_raw(dataset, data, check=False).equals(_normalized()[dataset])
    # build_source uses the cached download and refuses a file without the published row count
    with pytest.raises(ValueError, match=f"published release has {SOURCES[dataset].expected_raw_rows}"):
        build_source(dataset, tmp_path / f"{dataset}.parquet", tmp_path / "raw")
    assert not (tmp_path / f"{dataset}.parquet").exists()
