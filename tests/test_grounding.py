"""Answerability before generation (rag_app.grounding) and `rag eval --unanswerable`.

Unit tests compute the features on small constructed knowledge bases (English and Chinese); the CLI test runs
the split-half protocol on a tiny generated SQuAD file; the e2e tests assert the project's goal on the real
dev files and the refusal of an off-topic question on the shipped user guide.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding

from ingest.keyword_index import KeywordIndex
from ingest.store import KnowledgeBase, open_client
from rag_app.calibrate import Calibration, calibrate
from rag_app.evaluate import load_squad, split_articles
from rag_app.grounding import THRESHOLDS, Evidence, answerable, lexical_share, self_score
from rag_app.retrieve import HybridRetriever
from tests.conftest import REPO

# Six chunks of four index terms each (equal lengths: a chunk holding each query term once scores exactly
# the sum of their IDFs, the self-score).
EN_CHUNKS = [
    "alpha beta gamma delta", "kappa lambda sigma omega", "river mountain valley forest",
    "copper silver iron nickel", "violin piano trumpet guitar", "tiger zebra camel beaver",
]


def fts_idf(n: int, df: int) -> float:
    return max(1e-6, math.log((n - df + 0.5) / (df + 0.5)))


@pytest.fixture
def en_index() -> KeywordIndex:
    index = KeywordIndex(None)
    index.add([f"c{i}" for i in range(len(EN_CHUNKS))], EN_CHUNKS)
    return index


def test_self_score_is_the_sum_of_idfs_and_counts_absent_terms(en_index: KeywordIndex) -> None:
    n = len(EN_CHUNKS)
    assert self_score(en_index, "alpha beta") == pytest.approx(2 * fts_idf(n, 1))
    assert self_score(en_index, "alpha beta unknownium") == pytest.approx(2 * fts_idf(n, 1) + fts_idf(n, 0))


def test_lexical_share(en_index: KeywordIndex) -> None:
    # A chunk of average length holding every term once reaches the question's maximum...
    assert lexical_share(en_index, "alpha beta", en_index.search("alpha beta", 5)) == pytest.approx(1.0, abs=1e-3)
    # ...a term the knowledge base has never seen keeps it from it (the rare, specific part is missing)...
    absent = lexical_share(en_index, "alpha beta unknownium", en_index.search("alpha beta unknownium", 5))
    assert absent == pytest.approx(2 * fts_idf(6, 1) / (2 * fts_idf(6, 1) + fts_idf(6, 0)), abs=1e-3)
    # ...terms spread over different chunks do not add up, and nothing found is 0.
    spread = lexical_share(en_index, "alpha kappa river copper", en_index.search("alpha kappa river copper", 5))
    assert spread == pytest.approx(0.25, abs=1e-3)
    assert lexical_share(en_index, "quantum", en_index.search("quantum", 5)) == 0.0


def test_lexical_share_when_every_term_is_everywhere() -> None:
    """BM25 gives terms in half the chunks or more no weight: the question is about what the whole base is
    about, and the coverage decides (not the chunk lengths)."""
    index = KeywordIndex(None)
    index.add(["a", "b", "c"], ["alpha beta", "alpha beta gamma delta", "alpha kappa"])
    assert self_score(index, "alpha beta") < 1e-3
    assert lexical_share(index, "alpha beta", index.search("alpha beta", 5)) == pytest.approx(1.0)


ZH_CHUNKS = {
    "songping": "松平康忠是日本战国时代的武将，他的父亲是松平政忠，母亲是松平清康的女儿。",
    "park": "乍都节公园位于泰国曼谷，是一座大型的市民公园，园内有湖泊和花园。",
    "game": "泡泡战士是一款网络游戏，玩家以水枪或水炸弹泡封敌人，生命数耗完即算踢爆。",
    "kangaroo": "尤金袋鼠是一种小型袋鼠，生活在澳大利亚南部和附近的岛屿上。",
    "en": "Cats are small furry animals. They purr when they are happy and sleep most of the day.",
    "privacy": "All data stays on this machine. Nothing is uploaded to any server, ever.",
}


@pytest.fixture
def mixed_kb(tmp_path: Path) -> KnowledgeBase:
    kb = KnowledgeBase(open_client(tmp_path / "data"), "g", DeterministicFakeEmbedding(size=16))
    docs = [Document(page_content=t, metadata={"source": k}) for k, t in ZH_CHUNKS.items()]
    kb.add_chunks(docs, list(ZH_CHUNKS), batch_size=10)
    return kb


@pytest.mark.parametrize(
    ("question", "low"),
    [
        ("松平康忠的父亲是谁？", False),
        ("乍都节公园在哪个城市？", False),
        ("德川家康的父亲是谁？", True),  # the name is absent; only 父亲 is there
        ("北京故宫的湖泊有多大？", True),  # 湖泊 is there, 北京故宫 is not
        ("Why do cats purr?", False),
        ("What is the boiling point of mercury?", True),
        ("How many servers does the zoo own?", True),  # a word of the base, not its topic
    ],
)
def test_lexical_share_zh_and_en(mixed_kb: KnowledgeBase, question: str, low: bool) -> None:
    share = lexical_share(mixed_kb.keywords, question, mixed_kb.keywords.search(question, 30))
    assert (share < 0.35) if low else (share > 0.75), share
    language = "zh" if any("\u4e00" <= c <= "\u9fff" for c in question) else "en"
    assert answerable(Evidence(language, share, None, 1.0)) is (not low)
    retriever = HybridRetriever(knowledge_base=mixed_kb, mode="bm25")
    # Six chunks: the retriever judges by the smoothed small-knowledge-base share instead, which lets a
    # question sharing two ordinary English words with one chunk through (a known limit, docs/grounding.md).
    known_limit = question == "How many servers does the zoo own?"
    assert (retriever.invoke(question) == []) is (low and not known_limit)


def test_thresholds_are_settings(tmp_path: Path, mixed_kb: KnowledgeBase) -> None:
    """retrieval.answerable_thresholds lays a user's values over the measured ones, down to the retriever."""
    from rag_app.chain import build_retriever
    from rag_app.grounding import thresholds_with
    from rag_app.settings import Settings

    table = thresholds_with({"zh": {"lexical": 0.0}})
    assert table["zh"]["lexical"] == 0.0 and table["zh"]["hybrid"] == THRESHOLDS["zh"]["hybrid"]
    assert table["en"] == THRESHOLDS["en"] and THRESHOLDS["zh"]["lexical"] > 0  # the defaults are not touched
    question = "德川家康的父亲是谁？"  # refused by default (test above)
    lenient = HybridRetriever(knowledge_base=mixed_kb, mode="bm25", answerable_thresholds=table, min_keyword_coverage=0)
    assert lenient.invoke(question) != []
    settings = Settings.load(
        data_dir=tmp_path / "data", knowledge_base="g",
        retrieval={"mode": "bm25", "answerable_thresholds": {"zh": {"lexical": 0.0}}},
    )
    built = build_retriever(settings, DeterministicFakeEmbedding(size=16))
    assert built.answerable_thresholds == table  # type: ignore[attr-defined]
    assert build_retriever(  # type: ignore[attr-defined]
        Settings.load(data_dir=tmp_path / "data", knowledge_base="g"), DeterministicFakeEmbedding(size=16)
    ).answerable_thresholds is None
    with pytest.raises(Exception, match="answerable_thresholds"):
        Settings.load(retrieval={"answerable_thresholds": {"zh": {"lexicon": 0.5}}})


def test_the_verdict_can_annotate_instead_of_refusing(mixed_kb: KnowledgeBase) -> None:
    """With the threshold off and annotate_evidence on, the ranking comes back whole with the verdict on it:
    what `rag eval` scores apart (hit@k of the ranking, refusals on their own)."""
    judge = HybridRetriever(knowledge_base=mixed_kb, mode="bm25", relevance_threshold=False, annotate_evidence=True)
    refused = judge.invoke("德川家康的父亲是谁？")
    assert refused and all(d.metadata["answerable"] is False for d in refused)
    answered = judge.invoke("松平康忠的父亲是谁？")
    assert answered and answered[0].metadata["answerable"] is True and answered[0].metadata["evidence"] > 0.75
    plain = HybridRetriever(knowledge_base=mixed_kb, mode="bm25", relevance_threshold=False)
    assert "answerable" not in plain.invoke("松平康忠的父亲是谁？")[0].metadata


def test_evidence_is_the_weighted_mean_of_what_the_mode_has() -> None:
    assert Evidence("en", 0.3, 0.9, 0.5).score() == pytest.approx((0.3 + 0.5 * 0.9) / 1.5)
    assert Evidence("en", 0.3, None, 0.5).score() == 0.3  # no vector side (uncalibrated language, bm25 mode)
    assert Evidence("en", 0.3, 0.9, 0.0).score() == 0.3  # an embedder with no say
    assert Evidence("zh", 0.3, 0.9, 0.2).kind == "lexical"  # nor one below MIN_TRUSTED_WEIGHT (blind to Chinese)
    assert Evidence("en", None, 0.9, math.inf).score() == 0.9  # vector mode
    assert Evidence("zh", None, None, math.inf).score() is None
    assert answerable(Evidence("zh", None, None, math.inf))  # nothing to judge by: benefit of the doubt
    kinds = [Evidence("en", 0.3, None, 1.0), Evidence("en", None, 0.3, math.inf), Evidence("en", 0.3, 0.3, 1.0)]
    assert [e.kind for e in kinds] == ["lexical", "vector", "hybrid"]
    # monotone in each share, with a threshold per language and kind of evidence
    for language in ("zh", "en"):
        t = THRESHOLDS[language]
        for kind, make in (
            ("lexical", lambda x: Evidence(language, x, None, 1.0)),
            ("vector", lambda x: Evidence(language, None, x, math.inf)),
            ("hybrid", lambda x: Evidence(language, x, x, 0.5)),
        ):
            assert answerable(make(t[kind])) and not answerable(make(t[kind] - 0.01)), (language, kind)
    assert THRESHOLDS["zh"]["lexical"] != THRESHOLDS["en"]["lexical"]
    custom = {"en": {"lexical": 0.5, "vector": 0.5, "hybrid": 0.5}}
    assert answerable(Evidence("en", 0.9, 0.1, 1.0), custom)
    assert not answerable(Evidence("en", 0.9, 0.1, 1.0), {"en": {**custom["en"], "hybrid": 0.6}})


def test_vector_share_uses_the_embedders_own_scale() -> None:
    cal = Calibration(similarity={"en": {"related": 0.5, "unrelated": 0.1}, "zh": {"related": 0.9, "unrelated": 0.7}})
    assert cal.vector_share("en", 0.3) == pytest.approx(0.5)
    assert cal.vector_share("zh", 0.8) == pytest.approx(0.5)  # the same share from an anisotropic embedder
    assert cal.vector_share("en", 0.05) == 0.0 and cal.vector_share("en", 0.8) == 1.0
    assert cal.vector_share("fr", 0.8) is None


def test_calibration_measures_the_similarity_scale(tmp_path: Path) -> None:
    from tests.test_hybrid_retrieval import OracleChineseEmbedding, build_kb, synthetic_set

    passages, _ = synthetic_set()
    scale = calibrate(build_kb(tmp_path, passages, OracleChineseEmbedding())).similarity["zh"]
    assert scale["related"] > scale["unrelated"] + 0.2  # an embedder that understands the language
    blind = KnowledgeBase(open_client(tmp_path / "data2"), "blind", DeterministicFakeEmbedding(size=32))
    blind.add_chunks([Document(page_content=p) for p in passages], [f"b{i}" for i in range(len(passages))], batch_size=50)
    scale = calibrate(blind).similarity["zh"]
    assert abs(scale["related"] - scale["unrelated"]) < 0.2  # random vectors: own chunk no closer than others


# --- rag eval --unanswerable ---------------------------------------------------------------------------

TOPICS = [
    ("Volcanoes", "Volcanoes erupt molten basalt lava from magma chambers beneath the crust.", "What do volcanoes erupt from magma chambers?"),
    ("Bees", "Honeybees build hexagonal wax combs and store nectar as honey inside hives.", "What shape are the wax combs honeybees build?"),
    ("Chess", "In chess a pawn reaching the last rank is promoted, usually to a queen.", "What is a pawn promoted to in chess?"),
    ("Glaciers", "Glaciers carve U-shaped valleys and leave moraines of gravel when they retreat.", "What do retreating glaciers leave behind?"),
    ("长城", "长城是中国古代修建的军事防御工程，东起山海关，西至嘉峪关。", "长城西至哪个关口？"),
    ("熊猫", "大熊猫主要生活在四川的竹林中，以竹子为主要食物。", "大熊猫主要吃什么食物？"),
    ("茶叶", "龙井茶产于杭州西湖一带，是著名的绿茶品种。", "龙井茶产于哪里？"),
    ("京剧", "京剧形成于北京，脸谱用不同颜色表示人物的性格。", "京剧脸谱的颜色表示什么？"),
]


def tiny_squad(tmp_path: Path) -> Path:
    data = {"data": [
        {"title": title, "paragraphs": [{"context": context, "qas": [
            {"id": str(i), "question": question, "answers": [{"text": context[:4], "answer_start": 0}]}
        ]}]}
        for i, (title, context, question) in enumerate(TOPICS)
    ]}
    path = tmp_path / "topics.squad.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_split_articles_is_a_seeded_half(tmp_path: Path) -> None:
    dataset = load_squad(tiny_squad(tmp_path))
    halves = [split_articles(dataset, seed) for seed in range(4)]
    assert all(len(h) == 4 for h in halves)
    assert split_articles(dataset, 0) == halves[0]  # deterministic
    assert len({frozenset(h) for h in halves}) > 1  # the seed chooses the half


def test_rag_eval_unanswerable_json(tmp_path: Path) -> None:
    from rag_app.cli import cli

    env = {"RAG_EMBEDDING__BACKEND": "fake", "RAG_LLM__BACKEND": "fake", "RAG_DATA_DIR": str(tmp_path / "data")}
    args = ["eval", str(tiny_squad(tmp_path)), "--unanswerable", "--json", "--seed", "3"]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(payload) == {"retrieval", "answers", "unanswerable", "dataset"}
    assert set(payload["unanswerable"]) == {"vector", "bm25", "default"}
    assert payload["dataset"]["seed"] == 3 and payload["dataset"]["ingested_passages"] == 4
    for mode in ("bm25", "default"):  # distinct topics: each unseen one refused, each ingested one answered
        m = payload["unanswerable"][mode]
        assert m == {
            "refused_unanswerable": 1.0, "refused_answerable": 0.0, "questions": 8,
            "unanswerable_questions": 4, "answerable_questions": 4,
        }
        assert payload["retrieval"][mode]["hit@1"] == 1.0
    # Four chunks are too few to calibrate the (random) embedder: vector mode gives the benefit of the doubt.
    assert payload["unanswerable"]["vector"]["refused_unanswerable"] == 0.0
    table = CliRunner().invoke(cli, args[:-3], env=env)
    assert table.exit_code == 0 and "refused unanswerable" in table.output
    both = CliRunner().invoke(cli, [*args, "--long"], env=env)
    assert both.exit_code != 0 and "--unanswerable" in both.output


def test_rag_eval_unanswerable_answers_scores_support_on_both_halves(tmp_path: Path) -> None:
    """--answers: the support distribution of the model's answers on the ingested half, and on the unseen half
    with the model made to answer anyway (those would be refused: unchecked, were the threshold on)."""
    from rag_app.cli import cli

    env = {
        "RAG_EMBEDDING__BACKEND": "fake", "RAG_LLM__BACKEND": "fake", "RAG_DATA_DIR": str(tmp_path / "data"),
        "RAG_LLM__FAKE_RESPONSES": json.dumps(["Penguins are flightless birds of the southern hemisphere [1]."]),
    }
    args = ["eval", str(tiny_squad(tmp_path)), "--unanswerable", "--answers", "--json", "--seed", "3"]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    answers = json.loads(result.stdout.strip().splitlines()[-1])["answers"]
    assert set(answers) == {"answerable", "unanswerable_forced"}
    for dist in answers.values():
        assert dist["checked"] == 4 and dist["unchecked"] == 0 and dist["threshold"] == 0.5
    # One canned answer about one topic: supported by at most the one source that is about it.
    assert answers["answerable"]["flagged"] >= 0.75 and answers["unanswerable_forced"]["flagged"] >= 0.75
    table = CliRunner().invoke(cli, args[:-3], env=env)
    assert table.exit_code == 0 and "support of answers, unanswerable forced (4)" in table.output


# --- the goal, on real data ----------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize(("name", "hit_at_4"), [("cmrc2018_trial.squad.json", 0.994), ("expmrc-squad-dev.json", 0.956)])
def test_goal_on_the_dev_files(
    shared_eval: Path, real_embeddings: Any, tmp_path: Path, name: str, hit_at_4: float
) -> None:
    """With the shipped English MiniLM embedder and default settings: ≥ 80 % of the questions on unseen
    articles refused and ≤ 3 % of those on ingested ones (seed 0); with the whole file ingested, the ranking's
    hit@4 within 0.005 of what it was before the check, and what reaches the model (refusals counted as misses)
    within 0.01 (docs/grounding.md: it loses 0.006 / 0.008)."""
    from rag_app.evaluate import evaluate, evaluate_unanswerable
    from rag_app.settings import Settings

    settings = Settings.load(data_dir=tmp_path / "data")
    path = shared_eval / "qa" / name
    default = evaluate_unanswerable(settings, path, embeddings=real_embeddings)["unanswerable"]["default"]
    assert default["refused_unanswerable"] >= 0.8, default
    assert default["refused_answerable"] <= 0.03, default
    whole = evaluate(settings, path, embeddings=real_embeddings)["retrieval"]["default"]
    assert whole["hit@4"] >= hit_at_4 - 0.005, whole
    assert whole["hit@4_answered"] >= hit_at_4 - 0.01, whole
    assert whole["refused"] <= 0.015, whole


@pytest.mark.e2e
def test_the_guide_refuses_what_it_does_not_say(tmp_path: Path, real_embeddings: Any) -> None:
    from rag_app.chain import build_retriever
    from rag_app.service import RagService
    from rag_app.settings import Settings

    settings = Settings.load(data_dir=tmp_path / "data", llm={"backend": "fake"})
    report = RagService(settings, embeddings=real_embeddings).ingest([REPO / "samples" / "guide"])
    assert not report.failed, report.summary()
    retriever = build_retriever(settings, real_embeddings)
    assert retriever.invoke("What is the boiling point of mercury?") == []
    assert retriever.invoke("水银的沸点是多少？") == []
    assert retriever.invoke("How do I import documents?")
    assert retriever.invoke("如何导入文档？")
