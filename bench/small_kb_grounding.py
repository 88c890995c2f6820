"""Answerability on small knowledge bases: one article (or one passage) of a SQuAD-format file per knowledge
base; its own questions must pass, questions drawn from other articles must be refused.

The knowledge base is only a keyword index here (the chunks as ingestion splits them, the tokens counted as
the embedder roughly counts them: a character per Chinese token, 1.3 tokens per English word): on a knowledge
base below ``grounding.SMALL_KB_CHUNKS`` the decision is lexical whichever embedder is configured, so no model
is needed. For each threshold, the share of foreign questions refused / of own questions refused, for

* ``kb-stats``: the big-knowledge-base share (``grounding.lexical_share`` over the knowledge base's own IDFs);
* ``small``: ``grounding.small_kb_share`` (IDFs smoothed to ``grounding.BACKGROUND_CHUNKS``), the shipped rule.

    .venv/bin/python bench/small_kb_grounding.py ../shared/eval/qa/cmrc2018_trial.squad.json [--unit passage]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

THRESHOLDS = [0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.56, 0.6]


def main(argv: list[str] | None = None) -> int:
    from ingest.keyword_index import KeywordIndex
    from ingest.split import make_splitter
    from rag_app.evaluate import load_squad
    from rag_app.grounding import lexical_share, small_kb_share

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--unit", choices=["article", "passage"], default="article")
    parser.add_argument("--kbs", type=int, default=40, help="knowledge bases to build")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    ds = load_squad(args.dataset)
    article_of = {p: a for a, ps in enumerate(ds.articles) for p in ps}
    units = ds.articles if args.unit == "article" else [[p] for p in range(len(ds.passages))]
    zh = any("\u4e00" <= c <= "\u9fff" for c in ds.passages[0])
    count = (lambda s: len(s)) if zh else (lambda s: int(len(s.split()) * 1.3))
    split = make_splitter(count, 200, 30)
    rng = random.Random(args.seed)
    order = list(range(len(units)))
    rng.shuffle(order)
    rows: list[dict[str, object]] = []
    sizes: list[int] = []
    for u in order[: args.kbs]:
        chunks = [c for p in units[u] for c in split.split_text(ds.passages[p])]
        own = [q.text for q in ds.questions if q.passage in units[u]]
        if not own:
            continue
        home = article_of[units[u][0]]
        others = [q.text for q in ds.questions if article_of[q.passage] != home]
        foreign = rng.sample(others, min(2 * len(own), len(others)))
        sizes.append(len(chunks))
        with tempfile.TemporaryDirectory() as tmp:
            index = KeywordIndex(Path(tmp) / "k.sqlite")
            index.add([f"c{i}" for i in range(len(chunks))], chunks)
            for label, questions in (("own", own), ("foreign", foreign)):
                for q in questions:
                    rows.append({
                        "label": label,
                        "kb-stats": lexical_share(index, q, index.search(q, 30)),
                        "small": small_kb_share(q, chunks),
                    })
            index.close()
    own_rows = [r for r in rows if r["label"] == "own"]
    foreign_rows = [r for r in rows if r["label"] == "foreign"]
    result: dict[str, object] = {
        "dataset": args.dataset, "unit": args.unit, "knowledge_bases": len(sizes),
        "chunks_per_kb": sorted(set(sizes)), "own": len(own_rows), "foreign": len(foreign_rows), "curves": {},
    }
    for feature in ("kb-stats", "small"):
        curve = {}
        for t in THRESHOLDS:
            refused_foreign = sum(float(r[feature]) < t for r in foreign_rows) / max(1, len(foreign_rows))  # type: ignore[arg-type]
            refused_own = sum(float(r[feature]) < t for r in own_rows) / max(1, len(own_rows))  # type: ignore[arg-type]
            curve[str(t)] = [round(100 * refused_foreign, 1), round(100 * refused_own, 1)]
        result["curves"][feature] = curve  # type: ignore[index]
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(f"{result['knowledge_bases']} knowledge bases of {result['chunks_per_kb']} chunks; "
              f"{result['own']} own / {result['foreign']} foreign questions; refused foreign / own (%)")
        for feature, curve in result["curves"].items():  # type: ignore[attr-defined]
            print(f"{feature:9s}", "  ".join(f"{t}: {a:.1f}/{b:.1f}" for t, (a, b) in curve.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
