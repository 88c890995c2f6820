"""The BM25 keyword index: segmentation, ranking, and staying in step with Chroma through ingestion."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding

from ingest.keyword_index import KeywordIndex, index_path, sync_from_collection, tokenize
from ingest.pipeline import ingest_paths
from ingest.store import KnowledgeBase, open_client
from rag_app.settings import Settings


def test_tokenize_english_lowercases_stems_and_drops_stop_words() -> None:
    assert tokenize("The Cats are purring loudly!") == ["cat", "purr", "loudly"]
    assert tokenize("installed installs install") == ["install", "install", "install"]
    assert tokenize("class bus analysis") == ["class", "bus", "analysis"]
    assert tokenize("ＡＢＣ１２３") == ["abc123"]  # full-width folded by NFKC


def test_tokenize_chinese_simplified_and_traditional_with_jieba() -> None:
    simplified = tokenize("我们在北京大学学习自然语言处理")
    assert "北京大学" in simplified and "自然语言" in simplified
    assert "北京" in simplified  # search-mode segmentation also yields the shorter words
    # Traditional text is indexed as Simplified: either script finds the other
    assert tokenize("我們在北京大學學習自然語言處理") == simplified


def test_tokenize_mixed_text() -> None:
    tokens = tokenize("用 rag ingest 命令导入文档")
    assert "rag" in tokens and "ingest" in tokens and "导入" in tokens and "文档" in tokens


def index_with(tmp_path: Path, texts: dict[str, str]) -> KeywordIndex:
    index = KeywordIndex(tmp_path / "kw.sqlite3")
    index.add(list(texts), list(texts.values()))
    return index


TEXTS = {
    "a": "Cats purr when they are happy.",
    "b": "Dogs bark at strangers and love walks.",
    "c": "导入文档时运行 rag ingest 命令。",
    "d": "The privacy policy: all data stays on this machine.",
}


def test_search_ranks_by_bm25_with_coverage(tmp_path: Path) -> None:
    index = index_with(tmp_path, TEXTS)
    hits = index.search("why do cats purr?", 3)
    assert hits[0].chunk_id == "a"
    assert hits[0].coverage == pytest.approx(1.0)
    assert [h.chunk_id for h in index.search("怎样导入文档", 3)][0] == "c"
    assert index.search("moon", 3) == []
    assert index.search("the and of", 3) == []  # stop words only
    assert index.search("", 3) == []
    partial = index.search("cats and the moon", 3)[0]
    assert 0 < partial.coverage < 1


def test_add_replaces_and_delete_removes(tmp_path: Path) -> None:
    index = index_with(tmp_path, TEXTS)
    index.add(["a"], ["Parrots talk."])
    assert index.count() == 4
    assert index.search("cats purr", 3) == []
    assert index.search("parrot", 3)[0].chunk_id == "a"
    index.delete(["a", "unknown"])
    assert index.count() == 3 and index.search("parrot", 3) == []
    index.close()
    reopened = KeywordIndex(tmp_path / "kw.sqlite3")  # persistent
    assert reopened.ids() == {"b", "c", "d"}


def write(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")


def test_ingestion_keeps_index_in_step_with_chroma(tmp_path: Path) -> None:
    """Added, replaced and deleted documents reach the keyword index without any rebuild."""
    emb = DeterministicFakeEmbedding(size=16)
    settings = Settings.load(data_dir=tmp_path / "data", llm={"backend": "fake"}, embedding={"backend": "fake"})
    docs = tmp_path / "docs"
    write(docs, {"cats.txt": "Cats purr when happy.", "dogs.txt": "Dogs bark loudly at night."})
    ingest_paths(settings, [docs], embeddings=emb)
    kb = KnowledgeBase(open_client(settings.data_dir), "default", emb)
    assert kb.keywords.path == index_path(settings.chroma_dir, kb.collection_name)
    assert kb.keywords.path is not None and kb.keywords.path.is_file()
    chroma_ids = set(kb._collection.get(include=[])["ids"])
    assert kb.keywords.ids() == chroma_ids and len(chroma_ids) == 2

    write(docs, {"cats.txt": "Parrots talk all day."})  # replaced
    ingest_paths(settings, [docs], embeddings=emb)
    kb = KnowledgeBase(open_client(settings.data_dir), "default", emb)
    assert kb.keywords.ids() == set(kb._collection.get(include=[])["ids"])
    assert kb.keywords.search("cats purr", 4) == []
    (hit,) = kb.keywords.search("parrots", 4)
    assert kb._collection.get(ids=[hit.chunk_id])["metadatas"][0]["source"] == "docs/cats.txt"

    removed = kb.delete_ids(kb.chunk_ids_where({"source": "docs/dogs.txt"}))
    assert removed == 1
    assert kb.keywords.search("dogs bark", 4) == []
    assert kb.keywords.count() == kb.count() == 1


def test_sync_rebuilds_a_missing_or_stale_index(tmp_path: Path) -> None:
    emb = DeterministicFakeEmbedding(size=16)
    kb = KnowledgeBase(open_client(tmp_path / "data"), "kb", emb)
    kb.add_chunks(
        [Document(page_content=t, metadata={"source": k}) for k, t in TEXTS.items()], list(TEXTS), batch_size=10
    )
    assert sync_from_collection(kb.keywords, kb._collection) == 0  # already in step: nothing done
    kb.keywords.clear()
    kb.keywords.add(["stale"], ["old text"])
    assert sync_from_collection(kb.keywords, kb._collection) == 5
    assert kb.keywords.ids() == set(TEXTS)
    assert kb.keywords.search("cats", 2)[0].chunk_id == "a"


def test_common_terms_are_left_out_of_the_match_only_while_rarer_ones_remain(tmp_path: Path) -> None:
    texts = {f"c{i}": f"common words everywhere number{i}" for i in range(6)} | {"r": "common rare special"}
    index = KeywordIndex(tmp_path / "kw.sqlite3", max_postings=2)
    index.add(list(texts), list(texts.values()))
    assert index.search("common rare special", 3)[0].chunk_id == "r"  # 'common' (7 chunks) skipped
    hits = index.search("common everywhere", 10)  # only common terms: the rarest ones are used anyway
    assert len(hits) == 7 and hits[-1].chunk_id == "r"
    one = KeywordIndex(None)
    one.add(["only"], ["a single chunk"])
    assert [h.chunk_id for h in one.search("single chunk", 3)] == ["only"]  # every term in every chunk


def test_large_index_leaves_characters_of_known_words_to_the_words(tmp_path: Path) -> None:
    """Above 2 × max_postings chunks, a character inside a question word the index knows is not matched on
    its own (its postings are the longest); characters of unknown words still are."""
    texts = {f"w{i}": "模型训练需要数据" for i in range(3)} | {f"c{i}": f"型号{i}很多" for i in range(3)}
    texts |= {"z": "他们讨论了甄嬛"} | {f"f{i}": "今天天气很好" for i in range(6)}  # '型' in under half
    small = KeywordIndex(tmp_path / "small.sqlite3", max_postings=1000)
    large = KeywordIndex(tmp_path / "large.sqlite3", max_postings=2)
    for index in (small, large):
        index.add(list(texts), list(texts.values()))
    small_ids = {h.chunk_id for h in small.search("模型", 10)}
    large_ids = {h.chunk_id for h in large.search("模型", 10)}
    assert {"c0", "c1", "c2"} <= small_ids  # '型' alone matches 型号 on a small index
    assert large_ids == {"w0", "w1", "w2"}  # on a large one the known word 模型 carries the match
    # a name jieba does not know as a word is still found through its characters
    assert [h.chunk_id for h in large.search("嬛", 3)] == ["z"]


def test_budgeted_match_ranks_candidates_on_every_term_like_fts5(tmp_path: Path) -> None:
    """On a large index the MATCH uses only the rarest terms within the budget; the candidates it finds are
    ranked on every useful term with FTS5's own bm25 (scores equal to FTS5's, to rounding). A small index
    ranks with every term."""
    import random

    rng = random.Random(7)
    words = [f"w{i}" for i in range(400)]
    texts = {f"c{i}": " ".join(rng.choices(words, weights=[1 / (j + 1) for j in range(400)], k=30)) for i in range(300)}
    df = {w: sum(w in t.split() for t in texts.values()) for w in words}
    mid = sorted((w for w in words if 10 <= df[w] <= 90), key=df.get)[-4:]  # in fewer than half the chunks
    texts |= {"rare1": f"needle haystack {mid[0]} {mid[1]}", "rare2": f"needle {mid[3]} {mid[3]} {mid[2]}"}
    exact = KeywordIndex(tmp_path / "exact.sqlite3", max_postings=100, match_budget=10**9)
    budget = KeywordIndex(tmp_path / "budget.sqlite3", max_postings=100, match_budget=5)  # "large": > 200 chunks
    for index in (exact, budget):
        index.add(list(texts), list(texts.values()))
    query = " ".join(["needle", *mid])
    everything = {h.chunk_id: h for h in exact.search(query, 1000)}
    got = budget.search(query, 4)
    # only 'needle', the rarest term, is matched, so candidates are the chunks holding it ...
    candidates = {cid for cid, t in texts.items() if "needle" in t.split()}
    assert {h.chunk_id for h in got} <= candidates
    best = sorted((everything[c].score for c in candidates), reverse=True)[:4]
    assert [h.score for h in got] == pytest.approx(best, rel=1e-9)  # ... ranked on all five terms like FTS5
    for hit in got:
        assert hit.score == pytest.approx(everything[hit.chunk_id].score, rel=1e-9)
        assert hit.coverage == pytest.approx(everything[hit.chunk_id].coverage)
    assert exact.search(query, 4)[0].chunk_id in {"rare1", "rare2"} and got[0].chunk_id in {"rare1", "rare2"}
    small = KeywordIndex(tmp_path / "small.sqlite3", max_postings=1000, match_budget=5)
    unbudgeted = KeywordIndex(tmp_path / "unbudgeted.sqlite3", max_postings=1000, match_budget=10**9)
    for index in (small, unbudgeted):
        index.add(list(texts), list(texts.values()))
    assert [(h.chunk_id, h.score) for h in small.search(query, 10)] == [
        (h.chunk_id, h.score) for h in unbudgeted.search(query, 10)
    ]


def test_statistics_follow_writes_from_this_and_other_connections(tmp_path: Path) -> None:
    """Document frequencies are remembered between questions, and forgotten when the index changes."""
    index = index_with(tmp_path, TEXTS)
    assert [h.chunk_id for h in index.search("parrot", 3)] == []
    index.add(["p"], ["Parrots talk."])  # this connection
    assert [h.chunk_id for h in index.search("parrot", 3)] == ["p"]
    other = KeywordIndex(tmp_path / "kw.sqlite3")  # another connection, as another process would have
    other.add(["q"], ["A parrot sings."])
    other.delete(["p"])
    assert [h.chunk_id for h in index.search("parrot", 3)] == ["q"]
    assert index._statistics()[0] == index.count() == 5
