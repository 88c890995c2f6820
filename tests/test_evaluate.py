"""The evaluation harness: SQuAD loading, answer metrics, retrieval metrics, and `rag eval --json`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from rag_app.errors import EvalDatasetError
from rag_app.evaluate import contained, exact_match, f1, load_squad, retrieval_metrics

PASSAGES = [
    ("Cats purr when they are happy and sleep most of the day.", "When do cats purr?", "when they are happy"),
    ("Dogs bark at strangers and love long walks in the park.", "Where do dogs love long walks?", "in the park"),
    ("导入文档时运行 rag ingest 命令，系统会把文档切成小块。", "导入文档时运行什么命令？", "rag ingest"),
    ("The Eiffel Tower stands in Paris and was finished in 1889.", "When was the Eiffel Tower finished?", "1889"),
]


def squad_file(tmp_path: Path) -> Path:
    data = {
        "version": "test",
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {"context": c, "qas": [{"id": str(i), "question": q, "answers": [{"text": a, "answer_start": c.find(a)}]}]}
                    for i, (c, q, a) in enumerate(PASSAGES)
                ],
            }
        ],
    }
    path = tmp_path / "tiny.squad.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_load_squad(tmp_path: Path) -> None:
    ds = load_squad(squad_file(tmp_path))
    assert len(ds.passages) == 4 and len(ds.questions) == 4
    assert ds.questions[2].passage == 2 and ds.questions[2].answers == ("rag ingest",)


@pytest.mark.parametrize("content", ['{"data": [{"no": 1}]}', "not json", '{"data": []}'])
def test_bad_dataset_is_a_clear_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(EvalDatasetError, match="bad.json"):
        load_squad(path)


def test_answer_metrics_words_for_english_characters_for_chinese() -> None:
    assert exact_match("The Park!", "park") == 1.0
    assert f1("in the big park", "in the park") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert f1("北京大学", "北京") == pytest.approx(2 * 0.5 * 1 / 1.5)  # characters
    assert contained("It was finished in 1889, I think.", "1889") == 1.0
    assert contained("答案是北京大学。", "北京") == 1.0
    assert contained("nothing", "1889") == 0.0 and f1("", "x") == 0.0


def test_citations_are_not_words_of_the_answer() -> None:
    assert exact_match("The park [1].", "park") == 1.0
    assert exact_match("北京 [1, 2]", "北京") == 1.0 and exact_match("北京[2]。", "北京") == 1.0
    assert f1("1889 [3]", "1889") == 1.0


def test_retrieval_metrics() -> None:
    m = retrieval_metrics([1, 2, None, 5], refused=[False, True, False, False])
    assert m == {
        "hit@1": 0.25, "hit@4": 0.5, "hit@10": 0.75, "mrr": round((1 + 0.5 + 0.2) / 4, 4), "refused": 0.25,
        # what reaches the model: the refused question ranked 2nd is a miss there
        "hit@1_answered": 0.25, "hit@4_answered": 0.25, "hit@10_answered": 0.5,
    }
    assert retrieval_metrics([1, None])["refused"] == 0.0 and retrieval_metrics([1, None])["hit@1_answered"] == 0.5


def test_rag_eval_json(tmp_path: Path) -> None:
    from rag_app.cli import cli

    result = CliRunner().invoke(cli, ["--profile", "fake", "eval", str(squad_file(tmp_path)), "--json", "--answers"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(payload) == {"retrieval", "answers"}
    assert set(payload["retrieval"]) == {"vector", "bm25", "default"}
    for metrics in payload["retrieval"].values():
        assert {"hit@1", "hit@4", "hit@10", "mrr"} <= set(metrics)
        assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert payload["retrieval"]["bm25"]["hit@1"] == 1.0  # distinctive words: BM25 finds every passage
    assert payload["retrieval"]["default"]["hit@1"] == 1.0  # fake (blind) embedder does not drag it down
    assert payload["answers"]["questions"] == 4
    assert {"exact_match", "f1", "contained", "refused", "cited"} <= set(payload["answers"])


def test_rag_eval_table_and_limit(tmp_path: Path) -> None:
    from rag_app.cli import cli

    result = CliRunner().invoke(cli, ["--profile", "fake", "eval", str(squad_file(tmp_path)), "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert "2 questions over 4 passages" in result.stdout and "default" in result.stdout


def test_rag_eval_bad_file(tmp_path: Path) -> None:
    from rag_app.cli import cli

    bad = tmp_path / "bad.json"
    bad.write_text("{}", encoding="utf-8")
    result = CliRunner().invoke(cli, ["--profile", "fake", "eval", str(bad)])
    assert result.exit_code == 1 and "not a SQuAD-format" in result.output
