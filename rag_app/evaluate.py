"""Evaluation harness: how well retrieval (and, optionally, answering) works on a SQuAD-format dataset.

The dataset's contexts are ingested as documents (through the real pipeline) into a temporary knowledge base;
every question is then asked. Retrieval is scored per mode (``vector``, ``bm25`` and the configured
``default``) by the rank of the first chunk from the question's own passage: hit@1, hit@4, hit@10 and MRR.
``refused`` is the share of these answerable questions on which the relevance threshold said "nothing
relevant" (false refusals). With answers: exact match, F1 (characters for Chinese, words for English) and
"answer contained", against the best-matching gold answer, and the distribution of the support check's scores
(:mod:`rag_app.support`: how much of each answer its cited sources back; refusals are not checked).

``evaluate_long`` (``rag eval DATASET --long``) tests the long window without generating anything: each
article becomes one long document (short articles are grouped into documents of about ``doc_tokens``), and for
each question and token budget it assembles the context the chain would send (:mod:`rag_app.context`) and
checks whether the gold answer is in it, beside today's ``k`` chunks.

``evaluate_unanswerable`` (``rag eval DATASET --unanswerable``) tests the refusal of questions the knowledge
base cannot answer: half the articles are ingested, and questions on the other half must be refused while
those on the ingested half must not (docs/grounding.md).
"""

from __future__ import annotations

import json
import logging
import re
import string
import tempfile
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings

from rag_app.errors import EvalDatasetError
from rag_app.settings import Settings

logger = logging.getLogger(__name__)

RANKS = (1, 4, 10)
EVAL_KB = "eval"
#: Token budgets ``--long`` compares by default: a quarter of a 4K window, a 4K and a 16K window.
LONG_BUDGETS = (1024, 4096, 16384)
#: Articles shorter than this (in LLM tokens) are grouped with the next ones into one document.
LONG_DOC_TOKENS = 8000
#: Characters of its own paragraph on each side that must come with an answer to count as found in place.
IN_PLACE_CHARS = 20
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Question:
    passage: int
    text: str
    answers: tuple[str, ...]
    #: Where each answer starts in its passage (-1: not given).
    starts: tuple[int, ...] = ()


@dataclass(frozen=True)
class Dataset:
    passages: list[str]
    questions: list[Question]
    #: The passages of each article, in order.
    articles: list[list[int]] = field(default_factory=list)


def load_squad(path: str | Path) -> Dataset:
    """Read a SQuAD-format JSON file (``data[].paragraphs[].{context, qas[].{question, answers[].text}}``)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        passages: list[str] = []
        questions: list[Question] = []
        articles: list[list[int]] = []
        for article in raw["data"]:
            articles.append([])
            for paragraph in article["paragraphs"]:
                passages.append(str(paragraph["context"]))
                articles[-1].append(len(passages) - 1)
                for qa in paragraph["qas"]:
                    answers = tuple(str(a["text"]) for a in qa.get("answers", []))
                    starts = tuple(int(a.get("answer_start", -1)) for a in qa.get("answers", []))
                    questions.append(Question(len(passages) - 1, str(qa["question"]), answers, starts))
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalDatasetError(f"{path}: cannot read ({exc})") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise EvalDatasetError(f"{path}: not a SQuAD-format JSON file ({exc!r})") from exc
    if not questions:
        raise EvalDatasetError(f"{path}: no questions")
    return Dataset(passages, questions, articles)


# --- answer metrics --------------------------------------------------------------------------------

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_PUNCT = set(string.punctuation) | set("，。！？；：、“”‘’（）《》【】—…·「」『』〈〉　")


def _is_chinese(text: str) -> bool:
    return bool(_CJK.search(text))


#: An inline citation, ``[1]`` or ``[1, 2]``: not part of the answer's words.
CITATION = re.compile(r"\[\s*\d+(?:\s*[,，、]\s*\d+)*\s*\]")


def answer_tokens(text: str, chinese: bool) -> list[str]:
    """SQuAD normalisation (lower case, no punctuation or articles, no ``[n]`` citations) in words, or
    characters for Chinese."""
    text = CITATION.sub(" ", unicodedata.normalize("NFKC", text)).lower()
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


def retrieval_metrics(ranks: list[int | None], refused: Sequence[bool] = ()) -> dict[str, float]:
    """hit@k and MRR of the ranking from the rank (1-based) of the gold passage per question (None: not in the
    top 10); ``refused``: per question, whether the answerability check refused it. Refusals are a decision
    taken after the ranking and are counted apart (``refused``); ``hit@k_answered`` counts them as misses: what
    reaches the model."""
    n = max(1, len(ranks))
    out = {f"hit@{k}": round(sum(1 for r in ranks if r is not None and r <= k) / n, 4) for k in RANKS}
    out["mrr"] = round(sum(1.0 / r for r in ranks if r is not None) / n, 4)
    no = list(refused) or [False] * len(ranks)
    out["refused"] = round(sum(no) / n, 4)
    for k in RANKS:
        kept = sum(1 for r, x in zip(ranks, no, strict=True) if r is not None and r <= k and not x)
        out[f"hit@{k}_answered"] = round(kept / n, 4)
    return out


def _refused(docs: list[Any]) -> bool:
    """The answerability check's verdict on a result of a retriever with ``annotate_evidence`` on."""
    return not docs or docs[0].metadata.get("answerable") is False


def _judging(settings: Settings) -> Settings:
    """The retrieval as configured, but returning its ranking with the answerability verdict on each hit
    instead of refusing: the ranking and the decision are scored apart (:func:`retrieval_metrics`)."""
    return settings.model_copy(
        update={"retrieval": settings.retrieval.model_copy(update={"k": max(RANKS), "relevance_threshold": False})}
    )


def _gold_rank(docs: list[Any], gold: set[str]) -> int | None:
    for rank, doc in enumerate(docs, 1):
        if doc.metadata.get("source") in gold:
            return rank
    return None


def build_eval_kb(
    settings: Settings, dataset: Dataset, embeddings: Embeddings, workdir: Path, passages: set[int] | None = None
) -> dict[int, set[str]]:
    """Ingest every passage (or only ``passages``) as a text file; map each ingested passage to the sources
    that hold its text."""
    from ingest.pipeline import ingest_paths

    folder = workdir / "docs"
    folder.mkdir(parents=True, exist_ok=True)
    by_text: dict[str, set[str]] = {}
    for i, text in enumerate(dataset.passages):
        if passages is not None and i not in passages:
            continue
        name = f"passage{i:05d}.txt"
        (folder / name).write_text(text, encoding="utf-8")
        by_text.setdefault(text, set()).add(f"docs/{name}")  # identical passages are stored once
    report = ingest_paths(settings, [folder], embeddings=embeddings, knowledge_base=EVAL_KB)
    if report.failed:
        logger.warning("%d passage(s) failed to ingest", len(report.failed))
    return {i: by_text[text] for i, text in enumerate(dataset.passages) if text in by_text}


def split_articles(dataset: Dataset, seed: int) -> set[int]:
    """The passages of the ingested half for ``--unanswerable``: the articles (SQuAD ``data[]`` entries) are
    shuffled with ``seed`` and the first half (rounded up) is ingested. By article, not by paragraph: a
    question about an unseen paragraph of an ingested article may well be answered by its siblings (the
    English file has 12 articles of 16–42 paragraphs); where every article is one paragraph (cmrc2018) the
    two are the same. A passage whose text is also in the ingested half counts as ingested."""
    import random

    order = list(range(len(dataset.articles)))
    random.Random(seed).shuffle(order)
    ingested = {p for a in order[: (len(order) + 1) // 2] for p in dataset.articles[a]}
    texts = {dataset.passages[p] for p in ingested}
    return ingested | {i for i, text in enumerate(dataset.passages) if text in texts}


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
    from rag_app.support import score_distribution

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
            "default": _judging(kb_settings),
        }
        retrieval: dict[str, dict[str, float]] = {}
        for mode, mode_settings in retrievers.items():
            retriever = build_retriever(mode_settings, embeddings)
            # The configured check judges the default mode (as in the chain); the pure modes run without it.
            retriever.annotate_evidence = mode == "default" and settings.retrieval.relevance_threshold  # type: ignore[attr-defined]
            ranks: list[int | None] = []
            refused: list[bool] = []
            for n, q in enumerate(questions, 1):
                docs = retriever.invoke(q.text)
                refused.append(_refused(docs) if mode == "default" else not docs)
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
            sums = {"exact_match": 0.0, "f1": 0.0, "contained": 0.0, "refused": 0.0, "cited": 0.0}
            support: list[float | None] = []  # the support check's score per answer (None: a refusal)
            for n, q in enumerate(questions, 1):
                out = chain.invoke(q.text)
                prediction = str(out["answer"])
                sums["exact_match"] += best_over_golds(exact_match, prediction, q.answers)
                sums["f1"] += best_over_golds(f1, prediction, q.answers)
                sums["contained"] += best_over_golds(contained, prediction, q.answers)
                refused = prediction.strip() == no_answer_text(q.text)
                sums["refused"] += refused
                sums["cited"] += not refused and bool(CITATION.search(prediction))
                support.append(out["grounding"]["score"])
                notify("answers", n, len(questions))
            answered = len(questions) - sums["refused"]
            result["answers"] = {key: round(value / len(questions), 4) for key, value in sums.items()}
            #: of the answers given (refusals aside), the share with at least one inline [n]
            result["answers"]["cited"] = round(sums["cited"] / answered, 4) if answered else 0.0
            result["answers"]["questions"] = len(questions)
            result["answers"]["support"] = score_distribution(support)
            kb.keywords.close()
    return result


def _mode_settings(settings: Settings, mode: str) -> Settings:
    """A pure mode for comparison: no reranker, no MMR, no relevance threshold."""
    retrieval = settings.retrieval.model_copy(
        update={"mode": mode, "k": max(RANKS), "relevance_threshold": False, "reranker_path": None, "mmr": False}
    )
    return settings.model_copy(update={"retrieval": retrieval})


# --- answerability (--unanswerable) ----------------------------------------------------------------


def evaluate_unanswerable(
    settings: Settings,
    dataset_path: str | Path,
    *,
    embeddings: Embeddings,
    seed: int = 0,
    limit: int | None = None,
    progress: Progress | None = None,
    answers: bool = False,
    llm: Any = None,
) -> dict[str, Any]:
    """Does retrieval refuse what the knowledge base does not hold? The split-half protocol.

    Half the articles are ingested (:func:`split_articles`); questions on the other half must be refused
    ("nothing relevant"), questions on the ingested half must not. Per mode (``vector``, ``bm25`` and the
    configured ``default``, each with the relevance threshold on): ``refused_unanswerable`` (should be high),
    ``refused_answerable`` (false refusals, should be low) and their question counts, plus hit@k and MRR of
    the answerable questions (``"retrieval"``, :func:`retrieval_metrics`). ``limit``: the first ``limit // 2``
    questions of each half. ``answers``: also the support check's score distribution for the model's answers
    (:func:`support_by_half`).
    """
    from rag_app.chain import build_retriever

    started = time.perf_counter()
    dataset = load_squad(dataset_path)
    ingested = split_articles(dataset, seed)
    answerable = [q for q in dataset.questions if q.passage in ingested]
    unanswerable = [q for q in dataset.questions if q.passage not in ingested]
    if limit:
        answerable, unanswerable = answerable[: (limit + 1) // 2], unanswerable[: limit // 2]
    notify = progress or (lambda stage, done, total: None)
    with tempfile.TemporaryDirectory(prefix="rag-eval-unanswerable-") as tmp:
        kb_settings = settings.model_copy(update={"data_dir": Path(tmp) / "data", "knowledge_base": EVAL_KB})
        notify("ingest", 0, len(ingested))
        gold = build_eval_kb(kb_settings, dataset, embeddings, Path(tmp), ingested)
        notify("ingest", len(ingested), len(ingested))
        modes = {
            "vector": _judging(_mode_settings(kb_settings, "vector")),
            "bm25": _judging(_mode_settings(kb_settings, "bm25")),
            "default": _judging(kb_settings),
        }
        result: dict[str, Any] = {"retrieval": {}, "unanswerable": {}}
        for mode, mode_settings in modes.items():
            retriever = build_retriever(mode_settings, embeddings)
            retriever.annotate_evidence = True  # type: ignore[attr-defined]
            ranks: list[int | None] = []
            refused: dict[bool, list[bool]] = {True: [], False: []}
            questions = [(q, True) for q in answerable] + [(q, False) for q in unanswerable]
            for n, (q, is_answerable) in enumerate(questions, 1):
                docs = retriever.invoke(q.text)
                refused[is_answerable].append(_refused(docs))
                if is_answerable:
                    ranks.append(_gold_rank(docs, gold[q.passage]))
                if n % 50 == 0 or n == len(questions):
                    notify(f"unanswerable:{mode}", n, len(questions))
            result["retrieval"][mode] = retrieval_metrics(ranks, refused[True])
            result["unanswerable"][mode] = {
                "refused_unanswerable": round(sum(refused[False]) / max(1, len(unanswerable)), 4),
                "refused_answerable": round(sum(refused[True]) / max(1, len(answerable)), 4),
                "questions": len(questions),
                "unanswerable_questions": len(unanswerable),
                "answerable_questions": len(answerable),
            }
            retriever.knowledge_base.keywords.close()  # type: ignore[attr-defined]
        result["answers"] = support_by_half(kb_settings, embeddings, llm, answerable, unanswerable, notify) if answers else {}
    result["dataset"] = {
        "file": str(dataset_path),
        "seed": seed,
        "passages": len(dataset.passages),
        "ingested_passages": len(ingested),
        "articles": len(dataset.articles),
        "questions": len(answerable) + len(unanswerable),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return result


def support_by_half(
    settings: Settings,
    embeddings: Embeddings,
    llm: Any,
    answerable: Sequence[Question],
    unanswerable: Sequence[Question],
    notify: Progress,
) -> dict[str, Any]:
    """The support check's scores (:mod:`rag_app.support`) for the model's answers through the real chain:
    to the questions the knowledge base holds, and to those it does not with the relevance threshold off (the
    model made to answer from unrelated chunks — what the check exists to catch). Refusals are not scored."""
    from rag_app.chain import build_rag_chain
    from rag_app.support import score_distribution

    if llm is None:
        from rag_app.llm import create_llm

        llm = create_llm(settings.llm)
    forced = settings.model_copy(
        update={"retrieval": settings.retrieval.model_copy(update={"relevance_threshold": False})}
    )
    out: dict[str, Any] = {}
    for name, questions, conf in (("answerable", answerable, settings), ("unanswerable_forced", unanswerable, forced)):
        chain = build_rag_chain(conf, llm=llm, embeddings=embeddings)
        scores = []
        for n, q in enumerate(questions, 1):
            scores.append(chain.invoke(q.text)["grounding"]["score"])
            notify(f"answers:{name}", n, len(questions))
        out[name] = score_distribution(scores, settings.retrieval.support_threshold)
    return out


# --- the long window (--long) ----------------------------------------------------------------------


def long_documents(dataset: Dataset, count_tokens: Callable[[str], int], doc_tokens: int) -> list[str]:
    """One document per article (its paragraphs joined); consecutive articles shorter than ``doc_tokens``
    are grouped up to about that length, so that one-paragraph articles still make long documents."""
    docs: list[str] = []
    group: list[str] = []
    size = 0
    for article in dataset.articles:
        text = "\n\n".join(dataset.passages[i] for i in article)
        tokens = count_tokens(text)
        if group and size + tokens > doc_tokens:
            docs.append("\n\n".join(group))
            group, size = [], 0
        group.append(text)
        size += tokens
    if group:
        docs.append("\n\n".join(group))
    return docs


def _squeeze(text: str) -> str:
    """Compare texts as ingestion stores them: NFKC, whitespace ignored (chunks are joined at whitespace)."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


def answer_in_context(question: Question, passage: str, context: str) -> tuple[bool, bool]:
    """(any gold answer's text is in the context, one is there with ``IN_PLACE_CHARS`` of its own paragraph
    on each side — so it is the gold occurrence, not a namesake elsewhere)."""
    ctx = _squeeze(context)
    found = in_place = False
    for i, answer in enumerate(question.answers):
        if not _squeeze(answer) or _squeeze(answer) not in ctx:
            continue
        found = True
        start = question.starts[i] if i < len(question.starts) else -1
        if passage[start : start + len(answer)] != answer:
            start = passage.find(answer)
        if start < 0:
            continue
        window = passage[max(0, start - IN_PLACE_CHARS) : start + len(answer) + IN_PLACE_CHARS]
        in_place = in_place or _squeeze(window) in ctx
    return found, in_place


class _Tally:
    """Sums of one configuration's results over the questions."""

    def __init__(self) -> None:
        self.n = self.found = self.in_place = self.refused = self.context = self.prompt = 0

    def add(self, found: bool, in_place: bool, refused: bool, context_tokens: int, prompt_tokens: int) -> None:
        self.n += 1
        self.found += found
        self.in_place += in_place
        self.refused += refused
        self.context += context_tokens
        self.prompt += prompt_tokens

    def result(self) -> dict[str, float]:
        n = max(1, self.n)
        return {
            "recall": round(self.found / n, 4),
            "recall_in_place": round(self.in_place / n, 4),
            "context_tokens": round(self.context / n, 1),
            "prompt_tokens": round(self.prompt / n, 1),
            "refused": round(self.refused / n, 4),
        }


def evaluate_long(
    settings: Settings,
    dataset_path: str | Path,
    *,
    embeddings: Embeddings,
    budgets: Sequence[int] = LONG_BUDGETS,
    limit: int | None = None,
    doc_tokens: int = LONG_DOC_TOKENS,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Recall of the assembled context per token budget, beside today's ``k`` chunks; no LLM generation.

    Returns ``{"long": {"baseline": {...}, "budgets": {"1024": {...}, ...}}, "dataset": {...}}``: per
    configuration ``recall`` (an answer's text is in the context), ``recall_in_place`` (with its own
    surroundings), mean ``context_tokens`` / ``prompt_tokens`` (the LLM's tokenizer) and ``refused``.
    The assemblies share one retrieval with enough candidates for the largest budget (the chain asks for
    fewer at a smaller budget; the assembly takes hits in rank order and stops when full, so the extra
    candidates only come in where a smaller budget's would have run out). The baseline is the configured
    retriever as it is.
    """
    from ingest.pipeline import ingest_paths
    from rag_app.chain import build_retriever
    from rag_app.context import ContextAssembler, candidates
    from rag_app.llm import token_counter
    from rag_app.prompting import chat_format_for, format_context, qa_instruction

    started = time.perf_counter()
    dataset = load_squad(dataset_path)
    questions = dataset.questions[:limit] if limit else dataset.questions
    notify = progress or (lambda stage, done, total: None)
    count = token_counter(settings.llm)
    docs = long_documents(dataset, count, doc_tokens)
    fmt = chat_format_for(settings.llm.prompt_format, settings.llm.system_prompt, None)
    conf = settings.retrieval
    with tempfile.TemporaryDirectory(prefix="rag-eval-long-") as tmp:
        kb_settings = settings.model_copy(update={"data_dir": Path(tmp) / "data", "knowledge_base": EVAL_KB})
        folder = Path(tmp) / "docs"
        folder.mkdir()
        for i, text in enumerate(docs):
            (folder / f"doc{i:04d}.txt").write_text(text, encoding="utf-8")
        notify("ingest", 0, len(docs))
        report = ingest_paths(kb_settings, [folder], embeddings=embeddings, knowledge_base=EVAL_KB)
        if report.failed:
            logger.warning("%d document(s) failed to ingest", len(report.failed))
        notify("ingest", len(docs), len(docs))
        baseline = build_retriever(kb_settings, embeddings)
        n = candidates(max(budgets), settings.ingest.chunk_size, conf.k)
        wide = build_retriever(
            kb_settings.model_copy(update={"retrieval": conf.model_copy(update={"k": n})}), embeddings
        )
        kb = baseline.knowledge_base  # type: ignore[attr-defined]
        assemblers = {
            b: ContextAssembler(
                kb, count, b, neighbours=conf.neighbours, whole_documents=conf.whole_documents, k=conf.k
            )
            for b in budgets
        }
        tallies = {"baseline": _Tally(), **{str(b): _Tally() for b in budgets}}
        for done, q in enumerate(questions, 1):
            hits = wide.invoke(q.text)
            base = baseline.invoke(q.text)
            contexts = {"baseline": (base, not base)}
            contexts |= {str(b): (a.assemble(hits), not hits) for b, a in assemblers.items()}
            for name, (ctx, refused) in contexts.items():
                text = format_context(ctx)
                found, in_place = answer_in_context(q, dataset.passages[q.passage], text)
                prompt = fmt.render(qa_instruction(q.text, ctx))
                tallies[name].add(found, in_place, refused, count(text) if ctx else 0, count(prompt))
            if done % 50 == 0 or done == len(questions):
                notify("long", done, len(questions))
        kb.keywords.close()
    return {
        "long": {
            "baseline": {"k": conf.k, **tallies.pop("baseline").result()},
            "budgets": {name: tally.result() for name, tally in tallies.items()},
        },
        "dataset": {
            "file": str(dataset_path),
            "documents": len(docs),
            "document_tokens": round(sum(count(d) for d in docs) / max(1, len(docs))),
            "questions": len(questions),
            "seconds": round(time.perf_counter() - started, 1),
        },
    }
