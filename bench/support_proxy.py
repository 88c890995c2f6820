"""Where the support check's threshold stands on Chinese (and English) text, without a model that writes it.

The default model (SmolLM2-135M) cannot write Chinese, so the threshold (rag_app/support.py, 0.5) was measured
on English answers only. This benchmark measures the support score (the share of an answer's content units —
Chinese character bigrams, English stemmed words — found in the passages it cites) on answers *built* from the
dataset, the way a model that answers from the context writes them, in both languages:

* ``copy``: the sentence of the gold passage that holds the gold answer (a model quoting its source);
* ``restate``: the question restated with the gold answer ("四川地区将五月艾称之为 X"), the usual shape of a
  short Chinese-Alpaca answer, and the hard case for a support check: the question's own words are, by
  construction, in whatever retrieval found.

Each answer is checked against the top-``k`` chunks retrieval returns for its question (relevance threshold
off) in the split-half knowledge base of ``rag eval --unanswerable``: *grounded* when the question's article is
ingested (the passages support it), *ungrounded* when it is not (what a model answering anyway would cite). The
share of each group under a threshold is then the share flagged: high for ungrounded, low for grounded.

    .venv/bin/python bench/support_proxy.py ../shared/eval/qa/cmrc2018_trial.squad.json [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine  # noqa: E402

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
_SENTENCE_END = re.compile(r"(?<=[。！？!?；;])|(?<=\.)\s+")
_QUESTION_WORDS_ZH = re.compile(r"(是)?(什么|哪些|哪个|哪里|哪儿|哪|谁|多少|几|怎么样|怎样|如何|为什么|吗|呢)")
_QUESTION_WORDS_EN = re.compile(r"^(what|which|who|whom|whose|when|where|why|how)( (is|are|was|were|did|does|do))?\b", re.I)


def copy_answer(passage: str, answer: str, start: int) -> str:
    """The sentence of ``passage`` holding the gold answer (at ``start`` when known)."""
    at = start if start >= 0 and passage[start : start + len(answer)] == answer else passage.find(answer)
    if at < 0:
        return answer
    begin = 0
    for m in _SENTENCE_END.finditer(passage):
        if m.end() > at:
            return passage[begin : m.start() if m.start() > begin else m.end()].strip() or answer
        begin = m.end()
    return passage[begin:].strip()


def restate_answer(question: str, answer: str) -> str:
    """The question turned into a statement with the answer in place of its question word."""
    q = question.strip().rstrip("？?").strip()
    if _QUESTION_WORDS_ZH.search(q):
        return _QUESTION_WORDS_ZH.sub(answer, q, count=1) + "。"
    return f"{_QUESTION_WORDS_EN.sub('', q).strip()} {answer}."


def quantiles(scores: list[float]) -> dict[str, Any]:
    s = sorted(scores)
    if not s:
        return {"n": 0}
    q = {f"p{p}": round(s[min(len(s) - 1, int(p / 100 * len(s)))], 3) for p in (10, 25, 50, 75, 90)}
    q["n"] = len(s)
    q["below"] = {str(t): round(sum(x < t for x in s) / len(s), 3) for t in THRESHOLDS}
    return q


def run(path: Path, seed: int, k: int, limit: int | None) -> dict[str, Any]:
    from ingest.embed import build_embeddings
    from rag_app.chain import build_retriever
    from rag_app.evaluate import EVAL_KB, build_eval_kb, load_squad, split_articles
    from rag_app.settings import Settings
    from rag_app.support import support_score

    settings = Settings.load()
    embeddings = build_embeddings(settings.embedding)
    dataset = load_squad(path)
    ingested = split_articles(dataset, seed)
    questions = dataset.questions[:limit] if limit else dataset.questions
    scores: dict[str, dict[str, list[float]]] = {
        kind: {"grounded": [], "ungrounded": []} for kind in ("copy", "restate")
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rag-support-proxy-") as tmp:
        retrieval = settings.retrieval.model_copy(update={"relevance_threshold": False, "k": k})
        kb_settings = settings.model_copy(
            update={"data_dir": Path(tmp) / "data", "knowledge_base": EVAL_KB, "retrieval": retrieval}
        )
        build_eval_kb(kb_settings, dataset, embeddings, Path(tmp), ingested)
        retriever = build_retriever(kb_settings, embeddings)
        for q in questions:
            passages = [d.page_content for d in retriever.invoke(q.text)]
            if not passages or not q.answers:
                continue
            group = "grounded" if q.passage in ingested else "ungrounded"
            start = q.starts[0] if q.starts else -1
            answers = {
                "copy": copy_answer(dataset.passages[q.passage], q.answers[0], start),
                "restate": restate_answer(q.text, q.answers[0]),
            }
            for kind, answer in answers.items():
                scores[kind][group].append(support_score(answer, passages))
        retriever.knowledge_base.keywords.close()  # type: ignore[attr-defined]
    return {
        "dataset": str(path), "seed": seed, "k": k, "questions": len(questions), "machine": machine(),
        "seconds": round(time.perf_counter() - started, 1),
        "support": {kind: {g: quantiles(v) for g, v in groups.items()} for kind, groups in scores.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = run(args.dataset, args.seed, args.k, args.limit)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return
    print(f"{result['dataset']} seed {result['seed']}, top {result['k']} chunks, {result['seconds']} s")
    print("answer   group       n     p10   p25   p50   p75   p90   " + "  ".join(f"<{t}" for t in THRESHOLDS))
    for kind, groups in result["support"].items():
        for group, q in groups.items():
            if not q["n"]:
                continue
            cells = "  ".join(f"{q[f'p{p}']:.2f}" for p in (10, 25, 50, 75, 90))
            below = "  ".join(f"{100 * q['below'][str(t)]:4.0f}%" for t in THRESHOLDS)
            print(f"{kind:<8} {group:<10} {q['n']:>4}   {cells}   {below}")


if __name__ == "__main__":
    main()
