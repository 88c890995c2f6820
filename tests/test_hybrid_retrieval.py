"""Hybrid retrieval: fusion, calibration of the embedder's weight, relevance threshold, MMR, reranker.

The key claim: the default fusion follows whichever side works. With an embedder that is blind to Chinese it
is as good as BM25; with an embedder that understands Chinese (here an oracle that knows synonyms, which
BM25 cannot match) it becomes better than BM25 alone.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings

from ingest.store import KnowledgeBase, open_client
from rag_app.calibrate import calibrate, chunk_language, pseudo_question
from rag_app.chain import build_retriever
from rag_app.errors import EmptyKnowledgeBaseError
from rag_app.retrieve import HybridRetriever, fuse
from rag_app.settings import Settings

# Pairs of Chinese synonyms: documents use the first word, some questions the second.
SYNONYMS = [
    ("电脑", "计算机"), ("医生", "大夫"), ("老师", "教师"), ("城市", "都市"), ("快乐", "高兴"),
    ("美丽", "漂亮"), ("购买", "采购"), ("价格", "价钱"), ("公司", "企业"), ("朋友", "伙伴"),
    ("房子", "住宅"), ("孩子", "儿童"), ("母亲", "妈妈"), ("父亲", "爸爸"), ("汽车", "轿车"),
    ("医院", "诊所"), ("学校", "学堂"), ("河流", "江河"), ("森林", "树林"), ("海洋", "大海"),
    ("音乐", "乐曲"), ("电影", "影片"), ("书籍", "图书"), ("餐厅", "饭馆"), ("衣服", "服装"),
    ("天气", "气候"), ("道路", "马路"), ("工厂", "厂房"), ("农民", "农夫"), ("士兵", "军人"),
]


class OracleChineseEmbedding(Embeddings):
    """Understands Chinese perfectly for this vocabulary: a word and its synonym map to the same concept."""

    def _embed(self, text: str) -> list[float]:
        vec = [0.0] * len(SYNONYMS)
        for i, words in enumerate(SYNONYMS):
            vec[i] = float(sum(text.count(w) for w in words))
        norm = math.sqrt(sum(x * x for x in vec)) or 1.0
        return [x / norm for x in vec]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._embed(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._embed(text)


def synthetic_set(seed: int = 7) -> tuple[list[str], list[tuple[int, str]]]:
    """40 passages of 6 concepts each; per passage two questions naming 3 of its concepts, only one of them
    with the passage's own word (the others by synonym)."""
    rng = random.Random(seed)
    passages, questions = [], []
    for p in range(40):
        concepts = rng.sample(range(len(SYNONYMS)), 6)
        sentences = [f"这里说到{SYNONYMS[c][0]}的情况。" for c in concepts]
        passages.append("".join(sentences))
        for _ in range(2):
            a, b, c = rng.sample(concepts, 3)
            questions.append((p, f"关于{SYNONYMS[a][0]}、{SYNONYMS[b][1]}和{SYNONYMS[c][1]}的是哪一段？"))
    return passages, questions


def build_kb(root: Path, passages: list[str], embeddings: Embeddings) -> KnowledgeBase:
    kb = KnowledgeBase(open_client(root / "data"), "syn", embeddings)
    docs = [Document(page_content=t, metadata={"source": f"p{i}"}) for i, t in enumerate(passages)]
    kb.add_chunks(docs, [f"id{i}" for i in range(len(docs))], batch_size=100)
    return kb


def hit_at_1(retriever: HybridRetriever, questions: list[tuple[int, str]]) -> float:
    hits = 0
    for p, q in questions:
        docs = retriever.invoke(q)
        hits += bool(docs) and docs[0].metadata["source"] == f"p{p}"
    return hits / len(questions)


@pytest.mark.parametrize("embedder", ["oracle", "blind"])
def test_default_fusion_follows_the_side_that_works(tmp_path: Path, embedder: str) -> None:
    passages, questions = synthetic_set()
    emb: Embeddings = OracleChineseEmbedding() if embedder == "oracle" else DeterministicFakeEmbedding(size=32)
    kb = build_kb(tmp_path, passages, emb)
    scores = {
        mode: hit_at_1(HybridRetriever(knowledge_base=kb, k=4, mode=mode, relevance_threshold=False), questions)
        for mode in ("vector", "bm25", "hybrid")
    }
    weight = calibrate(kb).weight("zh")
    if embedder == "oracle":
        assert scores["vector"] > scores["bm25"] + 0.2  # the synonyms defeat BM25
        assert weight >= 0.8  # about as good as BM25 on the probe (ties make it vary a little)
        assert scores["hybrid"] > scores["bm25"] + 0.2  # and the default takes the embedder's side
    else:
        assert scores["vector"] < 0.2  # random vectors
        assert weight < 0.25
        assert scores["hybrid"] >= scores["bm25"]  # the blind embedder does not drag BM25 down
    assert scores["hybrid"] >= max(scores["vector"], scores["bm25"]) - 0.05


def test_calibration_is_cached_and_redone_when_the_embedder_changes(tmp_path: Path) -> None:
    passages, _ = synthetic_set()
    kb = build_kb(tmp_path, passages, OracleChineseEmbedding())
    first = calibrate(kb)
    assert kb.keywords.get_meta("calibration") is not None
    assert calibrate(kb) == first
    other = KnowledgeBase(open_client(tmp_path / "data"), "syn", DeterministicFakeEmbedding(size=len(SYNONYMS)))
    assert calibrate(other).fingerprint != first.fingerprint


def test_pseudo_question_and_language() -> None:
    rng = random.Random(0)
    text = "The quick brown fox jumps over the lazy dog near the river bank while birds sing in tall trees."
    q = pseudo_question(text, rng)
    assert 4 <= len(q.split()) <= 8 and all(w in text for w in q.split())
    assert chunk_language("这是中文的文字，有一些 English words。") == "zh"
    assert chunk_language("English text with 一 character") == "en"


def test_fuse_weights() -> None:
    vector = [("a", 0.9), ("b", 0.8)]
    keyword = [("b", 10.0), ("c", 5.0)]
    assert [c for c, _ in fuse(vector, keyword, 0.0)][:2] == ["b", "c"]  # BM25 only
    assert fuse(vector, keyword, 1e9)[0][0] == "a"  # vector only
    fused = dict(fuse(vector, keyword, 1.0))
    assert fused["b"] > fused["a"] and fused["b"] > fused["c"]  # found by both
    assert all(0.0 <= s <= 1.0 for s in fused.values())
    assert fuse([], keyword, 1.0)[0][0] == "b" and fuse(vector, [], 1.0)[0][0] == "a"


def test_flat_vector_scores_leave_bm25_order_alone() -> None:
    """A blind embedder gives every candidate about the same similarity: BM25's order must survive."""
    keyword = [(f"d{i}", 10.0 - i) for i in range(10)]
    vector = [(f"d{9 - i}", 0.71 - i * 0.001) for i in range(10)]  # reversed, but nearly flat
    assert [c for c, _ in fuse(vector, keyword, 0.1)] == [c for c, _ in keyword]


# --- relevance threshold, MMR, reranker, errors ------------------------------------------------------

DOCS = {
    "cats": "Cats are small furry animals. They purr when they are happy and sleep most of the day.",
    "dogs": "Dogs are loyal companions. They bark at strangers and love long walks in the park.",
    "import": "导入文档时运行 rag ingest 命令。系统会把文档切成小块并保存到本地知识库。",
    "privacy": "All data stays on this machine. Nothing is uploaded to any server, ever.",
}


@pytest.fixture
def small_kb(tmp_path: Path) -> KnowledgeBase:
    kb = KnowledgeBase(open_client(tmp_path / "data"), "small", DeterministicFakeEmbedding(size=16))
    kb.add_chunks(
        [Document(page_content=t, metadata={"source": k}) for k, t in DOCS.items()], list(DOCS), batch_size=10
    )
    return kb


@pytest.mark.parametrize("question", ["What is the moon made of?", "月亮是什么做的？", "Quantum chromodynamics"])
def test_nothing_relevant_returns_nothing(small_kb: KnowledgeBase, question: str) -> None:
    assert HybridRetriever(knowledge_base=small_kb).invoke(question) == []
    assert HybridRetriever(knowledge_base=small_kb, relevance_threshold=False).invoke(question) != []


@pytest.mark.parametrize(
    ("question", "source"),
    [("Why do cats purr?", "cats"), ("怎样导入文档？", "import"), ("Is my data uploaded to a server?", "privacy")],
)
def test_relevant_questions_are_answered(small_kb: KnowledgeBase, question: str, source: str) -> None:
    docs = HybridRetriever(knowledge_base=small_kb, k=2).invoke(question)
    assert docs and docs[0].metadata["source"] == source
    meta = docs[0].metadata
    assert 0.0 <= meta["score"] <= 1.0 and "bm25_score" in meta and "keyword_coverage" in meta


def test_empty_knowledge_base_is_an_error(tmp_path: Path) -> None:
    kb = KnowledgeBase(open_client(tmp_path / "data"), "empty", DeterministicFakeEmbedding(size=8))
    with pytest.raises(EmptyKnowledgeBaseError):
        HybridRetriever(knowledge_base=kb).invoke("anything")


def test_mmr_prefers_diverse_chunks(tmp_path: Path) -> None:
    emb = OracleChineseEmbedding()
    kb = KnowledgeBase(open_client(tmp_path / "data"), "mmr", emb)
    texts = ["电脑电脑医生。", "电脑电脑医生！", "电脑老师。", "城市快乐。"]
    kb.add_chunks([Document(page_content=t, metadata={"source": str(i)}) for i, t in enumerate(texts)],
                  [f"m{i}" for i in range(4)], batch_size=10)
    plain = HybridRetriever(knowledge_base=kb, k=2, vector_weight=1.0).invoke("电脑医生")
    diverse = HybridRetriever(knowledge_base=kb, k=2, vector_weight=1.0, mmr=True, mmr_lambda=0.3).invoke("电脑医生")
    assert {d.metadata["source"] for d in plain} == {"0", "1"}  # the near-duplicates
    assert [d.metadata["source"] for d in diverse][0] in {"0", "1"}
    assert {d.metadata["source"] for d in diverse} != {"0", "1"}


def test_settings_build_the_configured_retriever(tmp_path: Path) -> None:
    settings = Settings.load(
        data_dir=tmp_path / "data", retrieval={"mode": "bm25", "k": 3, "vector_weight": 0.5, "mmr": True}
    )
    retriever = build_retriever(settings, DeterministicFakeEmbedding(size=8))
    assert isinstance(retriever, HybridRetriever)
    assert (retriever.mode, retriever.k, retriever.vector_weight, retriever.mmr) == ("bm25", 3, 0.5, True)
    assert retriever.reranker is None
    default = build_retriever(Settings.load(data_dir=tmp_path / "data"), DeterministicFakeEmbedding(size=8))
    assert default.mode == "hybrid" and default.vector_weight is None and default.relevance_threshold


def build_tiny_cross_encoder(path: Path) -> Path:
    """A 2-layer random BERT CrossEncoder (one relevance logit) with a character vocabulary, saved to ``path``."""
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from tests.tiny_models import char_vocab

    raw = path.parent / (path.name + "-bert")
    raw.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [c for c in char_vocab()[4:] if c.strip()]
    (raw / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(raw / "vocab.txt"), do_lower_case=False)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=256, num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    CrossEncoder(str(raw), num_labels=1, device="cpu").save(str(path))
    return path


def test_cross_encoder_reranker(tmp_path: Path, small_kb: KnowledgeBase) -> None:
    from rag_app.rerank import Reranker

    folder = build_tiny_cross_encoder(tmp_path / "ce")
    reranker = Reranker.load(folder)
    docs = HybridRetriever(knowledge_base=small_kb, k=4, relevance_threshold=False, reranker=reranker).invoke("cats")
    scores = [d.metadata["rerank_score"] for d in docs]
    assert len(docs) == 4 and scores == sorted(scores, reverse=True)
    settings = Settings.load(data_dir=tmp_path / "data2", retrieval={"reranker_path": str(folder)})
    assert isinstance(build_retriever(settings, DeterministicFakeEmbedding(size=8)).reranker, Reranker)


def test_missing_reranker_is_a_clear_error(tmp_path: Path) -> None:
    from rag_app.errors import RerankerError
    from rag_app.rerank import Reranker

    with pytest.raises(RerankerError, match="not found"):
        Reranker.load(tmp_path / "nope")
