"""The sample viewer and the speed benchmark run end to end (small lengths)."""

from __future__ import annotations

from sparse_frontier.tasks import bench, show


def test_show_prints_prompt_gold_and_meta(capsys):
    show.main(["ruler_vt", "--length", "2048", "--keep", "200", "--param", "chains=2", "--param", "hops=1"])
    out = capsys.readouterr().out
    assert "ruler_vt sample 0" in out and "characters omitted" in out and "----- gold: (" in out
    assert "'chains': 2, 'hops': 1, 'shuffle': True" in out


def test_bench_rows(tiny_tokenizer, tmp_path):
    table = bench.bench(tiny_tokenizer, ["ruler_niah", "qa_toefl"], 4096, 2, 0, None, tmp_path)
    assert list(table.task) == ["ruler_niah", "qa_toefl (synthetic source)"]
    assert (table.samples == 2).all()
    assert (table.length_min >= 0.95).all() and (table.length_max <= 1.0).all()
    assert table.calls_max.max() <= 8
    assert bench.markdown_table(table).count("\n") == 3
