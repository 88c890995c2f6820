"""Evaluation harness: how well retrieval (and, optionally, answering) works on a SQuAD-format dataset.

The dataset's contexts are ingested as documents (through the real pipeline) into a temporary knowledge base;
every question is then asked. Retrieval is scored per mode (``vector``, ``bm25`` and the configured
``default``) by the rank of the first chunk from the question's own passage: hit@1, hit@4, hit@10 and MRR.
``refused`` is the share of these answerable questions on which the relevance threshold said "nothing
relevant" (false refusals). With answers: exact match, F1 (characters for Chinese, words for English) and
"answer contained", against the best-matching gold answer.
"""

from __future__ import annotations

import json
import logging
import re
import string
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings

from rag_app.errors import EvalDatasetError
from rag_app.settings import Settings

logger = logging.getLogger(__name__)

RANKS = (1, 4, 10)
EVAL_KB = "eval"
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Question:
    passage: int
    text: str
    answers: tuple[str, ...]


@dataclass(frozen=True)
class Dataset:
    passages: list[str]
    questions: list[Question]


def load_squad(path: str | Path) -> Dataset:
    """Read a SQuAD-format JSON file (``data[].paragraphs[].{context, qas[].{question, answers[].text}}``)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        passages: list[str] = []
        questions: list[Question] = []
        for article in raw["data"]:
            for paragraph in article["paragraphs"]:
                passages.append(str(paragraph["context"]))
                for qa in paragraph["qas"]:
                    answers = tuple(str(a["text"]) for a in qa.get("answers", []))
                    questions.append(Question(len(passages) - 1, str(qa["question"]), answers))
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalDatasetError(f"{path}: cannot read ({exc})") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise EvalDatasetError(f"{path}: not a SQuAD-format JSON file ({exc!r})") from exc
    if not questions:
        raise EvalDatasetError(f"{path}: no questions")
    return Dataset(passages, questions)


# --- answer metrics --------------------------------------------------------------------------------

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_PUNCT = set(string.punctuation) | set("，。！？；：、“”‘’（）《》【】—…·「」『』〈〉　")


def _is_chinese(text: str) -> bool:
    return bool(_CJK.search(text))


def answer_tokens(text: str, chinese: bool) -> list[str]:
    """SQuAD normalisation (lower case, no punctuation or articles) in words, or characters for Chinese."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if ch in _PUNCT else ch for ch in text)
    if chinese:
        return [ch for ch in text if not ch.isspace()]
    return [w for w in text.split() if w not in ("a", "an", "the")]


def exact_match(prediction: str, gold: str) -> float:
    chinese = _is_chinese(gold)
    return float(answer_tokens(prediction, chinese) == answer_tokens(gold, chinese))


def f1(prediction: str, gold: str) -> float:
    chinese = _is_chinese(gold)
    pred, ref = answer_tokens(prediction, chinese), answer_tokens(gold, chinese)
    common = sum((Counter(pred) & Counter(ref)).values())
    if not pred or not ref or common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def contained(prediction: str, gold: str) -> float:
    chinese = _is_chinese(gold)
    sep = "" if chinese else " "
    ref = sep.join(answer_tokens(gold, chinese))
    return float(bool(ref) and ref in sep.join(answer_tokens(prediction, chinese)))


def best_over_golds(metric: Callable[[str, str], float], prediction: str, golds: tuple[str, ...]) -> float:
    return max((metric(prediction, g) for g in golds), default=0.0)


# --- retrieval metrics -----------------------------------------------------------------------------


def retrieval_metrics(ranks: list[int | None], refused: int = 0) -> dict[str, float]:
    """hit@k and MRR from the rank (1-based) of the gold passage per question (None: not in the top 10)."""
    n = max(1, len(ranks))
    out = {f"hit@{k}": round(sum(1 for r in ranks if r is not None and r <= k) / n, 4) for k in RANKS}
    out["mrr"] = round(sum(1.0 / r for r in ranks if r is not None) / n, 4)
    out["refused"] = round(refused / n, 4)
    return out


def _gold_rank(docs: list[Any], gold: set[str]) -> int | None:
    for rank, doc in enumerate(docs, 1):
        if doc.metadata.get("source") in gold:
            return rank
    return None


def build_eval_kb(settings: Settings, dataset: Dataset, embeddings: Embeddings, workdir: Path) -> dict[int, set[str]]:
    """Ingest every passage as a text file; map each passage to the sources that hold its text."""
    from ingest.pipeline import ingest_paths

    folder = workdir / "docs"
    folder.mkdir(parents=True, exist_ok=True)
    by_text: dict[str, set[str]] = {}
    for i, text in enumerate(dataset.passages):
        name = f"passage{i:05d}.txt"
        (folder / name).write_text(text, encoding="utf-8")
        by_text.setdefault(text, set()).add(f"docs/{name}")  # identical passages are stored once
    report = ingest_paths(settings, [folder], embeddings=embeddings, knowledge_base=EVAL_KB)
    if report.failed:
        logger.warning("%d passage(s) failed to ingest", len(report.failed))
    return {i: by_text[text] for i, text in enumerate(dataset.passages)}


def evaluate(
    settings: Settings,
    dataset_path: str | Path,
    *,
    embeddings: Embeddings,
    llm: Any = None,
    limit: int | None = None,
    answers: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the evaluation; returns ``{"retrieval": {mode: metrics}, "answers": {...}, "dataset": {...}}``."""
    from ingest.store import KnowledgeBase, open_client
    from rag_app.chain import build_chain, build_retriever
    from rag_app.prompting import chat_format_for, no_answer_text

    dataset = load_squad(dataset_path)
    questions = dataset.questions[:limit] if limit else dataset.questions
    notify = progress or (lambda stage, done, total: None)
    with tempfile.TemporaryDirectory(prefix="rag-eval-") as tmp:
        kb_settings = settings.model_copy(update={"data_dir": Path(tmp) / "data", "knowledge_base": EVAL_KB})
        notify("ingest", 0, len(dataset.passages))
        gold = build_eval_kb(kb_settings, dataset, embeddings, Path(tmp))
        notify("ingest", len(dataset.passages), len(dataset.passages))
        retrievers = {
            "vector": _mode_settings(kb_settings, "vector"),
            "bm25": _mode_settings(kb_settings, "bm25"),
            "default": kb_settings.model_copy(
                update={"retrieval": kb_settings.retrieval.model_copy(update={"k": max(RANKS)})}
            ),
        }
        retrieval: dict[str, dict[str, float]] = {}
        for mode, mode_settings in retrievers.items():
            retriever = build_retriever(mode_settings, embeddings)
            ranks: list[int | None] = []
            refused = 0
            for n, q in enumerate(questions, 1):
                docs = retriever.invoke(q.text)
                refused += not docs
                ranks.append(_gold_rank(docs, gold[q.passage]))
                if n % 50 == 0 or n == len(questions):
                    notify(f"retrieval:{mode}", n, len(questions))
            retrieval[mode] = retrieval_metrics(ranks, refused)
        result: dict[str, Any] = {
            "retrieval": retrieval,
            "answers": {},
            "dataset": {"file": str(dataset_path), "passages": len(dataset.passages), "questions": len(questions)},
        }
        if answers:
            if llm is None:
                from rag_app.llm import create_llm

                llm = create_llm(settings.llm)
            kb = KnowledgeBase(open_client(kb_settings.data_dir), EVAL_KB, embeddings)
            fmt = chat_format_for(settings.llm.prompt_format, settings.llm.system_prompt, llm)
            chain = build_chain(llm, build_retriever(kb_settings, embeddings), fmt, chain_type=settings.retrieval.chain_type)
            sums = {"exact_match": 0.0, "f1": 0.0, "contained": 0.0, "refused": 0.0}
            for n, q in enumerate(questions, 1):
                out = chain.invoke(q.text)
                prediction = str(out["answer"])
                sums["exact_match"] += best_over_golds(exact_match, prediction, q.answers)
                sums["f1"] += best_over_golds(f1, prediction, q.answers)
                sums["contained"] += best_over_golds(contained, prediction, q.answers)
                sums["refused"] += prediction.strip() == no_answer_text(q.text)
                notify("answers", n, len(questions))
            result["answers"] = {key: round(value / len(questions), 4) for key, value in sums.items()}
            result["answers"]["questions"] = len(questions)
            kb.keywords.close()
    return result


def _mode_settings(settings: Settings, mode: str) -> Settings:
    """A pure mode for comparison: no relevance threshold, no reranker, no MMR."""
    retrieval = settings.retrieval.model_copy(
        update={"mode": mode, "k": max(RANKS), "relevance_threshold": False, "reranker_path": None, "mmr": False}
    )
    return settings.model_copy(update={"retrieval": retrieval})
