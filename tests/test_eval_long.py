"""``rag eval DATASET --long``: articles as long documents, answer recall of the context per token budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rag_app.cli import cli
from rag_app.evaluate import Question, answer_in_context, load_squad, long_documents

TOPICS = ["cats", "rivers", "engines"]


def article(topic: str, n: int) -> dict[str, Any]:
    paragraphs = []
    for p in range(n):
        code = f"{topic[:3].upper()}{p:02d}X"
        context = (
            f"The {topic} paragraph {p} opens with general remarks about {topic}. "
            f"Its registry code is {code} and nobody else uses that code. "
            f"It closes with more remarks about {topic} number {p}."
        )
        qa = {"id": f"{topic}{p}", "question": f"What registry code does the {topic} paragraph {p} have?",
              "answers": [{"text": code, "answer_start": context.find(code)}]}
        paragraphs.append({"context": context, "qas": [qa]})
    return {"title": topic, "paragraphs": paragraphs}


def squad_file(tmp_path: Path) -> Path:
    path = tmp_path / "long.squad.json"
    data = {"version": "test", "data": [article(t, 6) for t in TOPICS]}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def run_long(path: Path, *args: str) -> Any:
    result = CliRunner().invoke(cli, ["--profile", "fake", "eval", str(path), "--long", *args])
    assert result.exit_code == 0, result.output
    return result


def test_long_documents_join_articles_and_group_short_ones(tmp_path: Path) -> None:
    ds = load_squad(squad_file(tmp_path))
    assert ds.articles == [list(range(0, 6)), list(range(6, 12)), list(range(12, 18))]
    words = lambda text: len(text.split())  # noqa: E731
    one_each = long_documents(ds, words, doc_tokens=10)  # every article is longer: one document each
    assert one_each == ["\n\n".join(ds.passages[i] for i in a) for a in ds.articles]
    together = long_documents(ds, words, doc_tokens=10_000)
    assert together == ["\n\n".join(one_each)]
    pairs = long_documents(ds, words, doc_tokens=2 * words(one_each[0]) + 5)
    assert len(pairs) == 2 and pairs[0] == "\n\n".join(one_each[:2])


def test_answer_in_context_tells_the_gold_occurrence_from_a_namesake() -> None:
    passage = "Alice was born in Paris in 1990 and moved away."
    q = Question(0, "Where was Alice born?", ("Paris",), (passage.find("Paris"),))
    assert answer_in_context(q, passage, "[1] (a.txt)\nAlice was born in Paris in 1990 and moved away.") == (True, True)
    assert answer_in_context(q, passage, "Bob lives in Paris.") == (True, False)
    spaced = "Alice was born in\n\nParis in   1990 and moved away"  # chunks joined at other whitespace
    assert answer_in_context(q, passage, spaced) == (True, True)
    assert answer_in_context(q, passage, "born in Paris in 1990") == (True, False)  # too little of its paragraph
    assert answer_in_context(q, passage, "nothing here") == (False, False)


def test_rag_eval_long_json(tmp_path: Path) -> None:
    result = run_long(squad_file(tmp_path), "--budgets", "250,100000", "--json")
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(payload) == {"long", "dataset"}
    long, info = payload["long"], payload["dataset"]
    assert info["questions"] == 18 and info["documents"] == 1  # three short articles grouped into one document
    assert set(long["budgets"]) == {"250", "100000"} and long["baseline"]["k"] == 4
    keys = {"recall", "recall_in_place", "context_tokens", "prompt_tokens", "refused"}
    for m in [long["baseline"], *long["budgets"].values()]:
        assert keys <= set(m) and 0 <= m["recall_in_place"] <= m["recall"] <= 1
        assert m["prompt_tokens"] > m["context_tokens"]
    small, whole = long["budgets"]["250"], long["budgets"]["100000"]
    assert small["context_tokens"] <= 250  # the budget holds
    assert whole["recall"] == whole["recall_in_place"] == 1.0  # the whole document fits: every answer is in
    assert whole["context_tokens"] > 2 * small["context_tokens"]
    assert small["recall"] < 1.0


def test_rag_eval_long_table_and_limit(tmp_path: Path) -> None:
    result = run_long(squad_file(tmp_path), "--limit", "3")
    out = result.stdout
    assert "3 questions over 1 documents" in out
    assert "k=4 chunks" in out and "budget 1024" in out and "budget 16384" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--budgets", "1024"], "--budgets goes with --long"),
    (["--long", "--budgets", "a,b"], "not a list of token counts"),
    (["--long", "--budgets", "0"], "not a list of token counts"),
    (["--long", "--answers"], "generates no answers"),
])
def test_rag_eval_long_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["--profile", "fake", "eval", str(squad_file(tmp_path)), *args])
    assert result.exit_code == 2 and message in result.output


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["cmrc2018_trial.squad.json", "expmrc-squad-dev.json"])
def test_long_window_beats_four_chunks_on_real_data(shared_eval: Path, real_embeddings: Any, name: str) -> None:
    """The real embedder and the default GGUF's tokenizer: 4K tokens of assembled context hold at least as
    many answers as today's four chunks (first 40 questions; `rag eval --long` runs the whole files)."""
    pytest.importorskip("llama_cpp")
    from rag_app.evaluate import evaluate_long
    from rag_app.settings import Settings

    result = evaluate_long(
        Settings.load(), shared_eval / "qa" / name, embeddings=real_embeddings,
        budgets=(4096, 16384), limit=40,
    )["long"]
    assert result["budgets"]["4096"]["recall"] >= result["baseline"]["recall"]
    assert result["budgets"]["16384"]["recall"] >= result["budgets"]["4096"]["recall"]
    assert result["budgets"]["4096"]["context_tokens"] <= 4096
