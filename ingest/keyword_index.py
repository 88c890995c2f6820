"""The BM25 keyword index of a knowledge base: SQLite FTS5 over pre-segmented tokens.

Why FTS5: it is persistent and incremental (ingestion adds, replaces and deletes chunks in place; nothing is
rebuilt per question), ranks with ``bm25()`` and answers in milliseconds on 100k chunks. FTS5's own
tokenizers cannot segment Chinese, so text is segmented here (jieba for Chinese, Traditional converted to
Simplified first so that one dictionary serves both; lower-cased, lightly stemmed words without stop words for English and other scripts) and
stored as space-separated tokens. One SQLite file per knowledge base, beside the Chroma folder.
"""

from __future__ import annotations

import logging
import math
import re
import sqlite3
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

KEYWORD_DIR = "keyword"
MIN_MATCH_TERMS = 2
MAX_POSTINGS = 5000
#: On a large knowledge base the MATCH takes the rarest terms whose posting lists add up to at most this many
#: entries (FTS5's cost grows with them), and the RESCORE_CANDIDATES best chunks it finds are then ranked
#: on every term of the question (:meth:`KeywordIndex._rescore`).
MATCH_BUDGET = 8_000
RESCORE_CANDIDATES = 100
BM25_K1, BM25_B = 1.2, 0.75  # FTS5's bm25() constants
_CACHE_LIMIT = 200_000
_CJK_CHARS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_RUNS = re.compile(rf"[{_CJK_CHARS}]+|[^\W_{_CJK_CHARS}]+")
_CJK_RUN = re.compile(rf"[{_CJK_CHARS}]")

# Frequent English function words: they carry no topic and make every query match every chunk.
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having
    he her here hers herself him himself his how i if in into is it its itself just me more most my myself no
    nor not now of off on once only or other our ours ourselves out over own same she should so some such than
    that the their theirs them themselves then there these they this those through to too under until up very
    was we were what when where which while who whom why will with would you your yours yourself yourselves
    s t""".split()
)
# Chinese function words and question words: in nearly every question, rarely what it is about.
STOP_WORDS_ZH = frozenset(
    """的 了 着 过 是 在 有 和 与 及 或 吗 呢 吧 啊 么 什么 哪 哪个 哪些 哪里 哪儿 哪一 为什么 为何 怎么 怎样 怎么样
    如何 多少 几 谁 何 何时 是否 这 那 这个 那个 这些 那些 其 之 也 都 就 把 被 对 从 向 给 而 又 还 并 等 个 一个
    我 你 他 她 它 我们 你们 他们 请问""".split()
)
_STOP_CHARS_ZH = frozenset("".join(STOP_WORDS_ZH))


@cache
def _jieba() -> Any:
    """jieba's tokenizer, dictionary loaded once on first use (about a second), not at import."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    tokenizer = jieba.Tokenizer()
    tokenizer.initialize()
    return tokenizer


@cache
def _to_simplified() -> Any:
    """Traditional → Simplified conversion (zhconv's phrase table, loaded once on first use)."""
    import zhconv

    return lambda text: zhconv.convert(text, "zh-hans")


def _stem(word: str) -> str:
    """A light English stemmer (plurals, -ing, -ed): enough to match 'cats'/'cat', 'installed'/'install'."""
    if len(word) <= 3 or not word.isalpha():
        return word
    for suffix, keep in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            if suffix == "s" and word.endswith(("ss", "us", "is")):
                return word
            if suffix == "es" and not word.endswith(("ches", "shes", "xes", "zes", "sses")):
                continue
            return word[: -len(suffix)] + keep
    return word


def tokenize(text: str) -> list[str]:
    """Index terms of a text: for Chinese, jieba's words plus the single characters (so that a question
    segmented differently from the document, or a name jieba does not know, still matches); stemmed lower-case
    words otherwise."""
    text = unicodedata.normalize("NFKC", text).lower()
    out: list[str] = []
    for run in _RUNS.findall(text):
        if _CJK_RUN.match(run):
            simplified = _to_simplified()(run)
            out.extend(w for w in _jieba().cut_for_search(simplified) if w not in STOP_WORDS_ZH)
            if len(simplified) > 1:
                out.extend(ch for ch in simplified if ch not in _STOP_CHARS_ZH)
        elif run not in STOP_WORDS:
            out.append(_stem(run))
    return out


def words(text: str) -> list[str]:
    """Words as written (jieba's precise mode for Chinese, no stemming or stop-word removal), punctuation left
    out: the unit for building probe questions (rag_app.calibrate)."""
    out: list[str] = []
    for run in _RUNS.findall(text):
        if _CJK_RUN.match(run):
            out.extend(w for w in _jieba().cut(run) if w.strip())
        else:
            out.append(run)
    return out


@dataclass(frozen=True)
class KeywordHit:
    """One BM25 match: ``score`` is FTS5's bm25 (higher is better); ``coverage`` is the IDF-weighted share of
    the query's terms that the chunk contains (0..1), the signal behind the relevance threshold."""

    chunk_id: str
    score: float
    coverage: float


def index_path(persist_directory: str | Path, collection: str) -> Path:
    """Where the keyword index of a collection lives: ``<data_dir>/keyword/<collection>.sqlite3``."""
    return Path(persist_directory).parent / KEYWORD_DIR / f"{collection}.sqlite3"


class KeywordIndex:
    """Persistent, incremental BM25 index of chunk texts, keyed by chunk ID (the Chroma ID)."""

    def __init__(
        self, path: Path | None, *, max_postings: int = MAX_POSTINGS, match_budget: int = MATCH_BUDGET
    ) -> None:
        """``path=None`` keeps the index in memory (an in-memory Chroma client)."""
        self.path = path
        self.max_postings = max_postings
        self.match_budget = match_budget
        # Statistics a question needs (chunk count, document frequencies, FTS5's averages) are remembered
        # until the index changes: this process's own writes, or another connection's (PRAGMA data_version).
        self._writes = 0
        self._seen_version: tuple[int, int] | None = None
        self._df_cache: dict[str, int] = {}
        self._stats_cache: tuple[int, int, float] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False, timeout=30)
        self._lock = threading.RLock()
        with self._lock, self._db:
            if path is not None:
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(
                """
                CREATE TABLE IF NOT EXISTS chunk_ids(rowid INTEGER PRIMARY KEY, chunk_id TEXT UNIQUE NOT NULL);
                CREATE VIRTUAL TABLE IF NOT EXISTS chunk_terms
                    USING fts5(body, tokenize = "unicode61 remove_diacritics 0");
                CREATE VIRTUAL TABLE IF NOT EXISTS chunk_vocab USING fts5vocab(chunk_terms, 'row');
                CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
                """
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def destroy(self) -> None:
        """Close and delete the index file (its knowledge base is being deleted)."""
        self.close()
        if self.path is not None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM chunk_ids").fetchone()[0])

    def ids(self) -> set[str]:
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT chunk_id FROM chunk_ids")}

    def add(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        """Insert or replace chunks (one transaction: a reader sees all of them or none)."""
        bodies = [" ".join(tokenize(t)) for t in texts]  # segment outside the lock
        with self._lock, self._db:
            self._writes += 1
            self._delete(ids)
            for chunk_id, body in zip(ids, bodies, strict=True):
                cur = self._db.execute("INSERT INTO chunk_ids(chunk_id) VALUES (?)", (chunk_id,))
                self._db.execute("INSERT INTO chunk_terms(rowid, body) VALUES (?, ?)", (cur.lastrowid, body))

    def delete(self, ids: Iterable[str]) -> None:
        with self._lock, self._db:
            self._writes += 1
            self._delete(list(ids))

    def clear(self) -> None:
        with self._lock, self._db:
            self._writes += 1
            self._db.execute("DELETE FROM chunk_ids")
            self._db.execute("DELETE FROM chunk_terms")
            self._db.execute("DELETE FROM meta")

    def _delete(self, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), 500):
            part = list(ids[start : start + 500])
            marks = ",".join("?" * len(part))
            rows = self._db.execute(f"SELECT rowid FROM chunk_ids WHERE chunk_id IN ({marks})", part).fetchall()
            if rows:
                rowids = [r[0] for r in rows]
                rmarks = ",".join("?" * len(rowids))
                self._db.execute(f"DELETE FROM chunk_terms WHERE rowid IN ({rmarks})", rowids)
                self._db.execute(f"DELETE FROM chunk_ids WHERE rowid IN ({rmarks})", rowids)

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def _refresh_statistics(self) -> None:
        """Forget remembered statistics when the index changed since they were read (call under the lock)."""
        version = (int(self._db.execute("PRAGMA data_version").fetchone()[0]), self._writes)
        if version != self._seen_version or len(self._df_cache) > _CACHE_LIMIT:
            self._seen_version = version
            self._df_cache.clear()
            self._stats_cache = None

    def _statistics(self) -> tuple[int, int, float]:
        """(chunks, FTS5's row count, FTS5's average chunk length in tokens) — the last two as its bm25()
        sees them, read from its 'averages' record."""
        if self._stats_cache is None:
            n = int(self._db.execute("SELECT count(*) FROM chunk_ids").fetchone()[0])
            row = self._db.execute("SELECT block FROM chunk_terms_data WHERE id = 1").fetchone()
            values = _varints(bytes(row[0])) if row and row[0] else []
            rows, tokens = (values[0], values[1]) if len(values) >= 2 else (n, 0)
            self._stats_cache = (n, rows, tokens / rows if rows else 0.0)
        return self._stats_cache

    def _document_frequencies(self, terms: list[str]) -> dict[str, int]:
        """How many chunks contain each term. fts5vocab walks a term's whole posting list to count it, so
        only the terms asked for are looked up, and each once until the index changes."""
        missing = [t for t in terms if t not in self._df_cache]
        if missing:
            sql = f"SELECT term, doc FROM chunk_vocab WHERE term IN ({','.join('?' * len(missing))})"
            found = {str(t): int(d) for t, d in self._db.execute(sql, missing).fetchall()}
            self._df_cache.update((t, found.get(t, 0)) for t in missing)
        return {t: self._df_cache[t] for t in terms}

    def term_statistics(self, terms: list[str]) -> tuple[int, int, dict[str, int]]:
        """(chunks, FTS5's row count, document frequency of each term): what BM25 weighs a question's terms by,
        from the caches a search has just filled (answerability uses them: rag_app/grounding.py)."""
        with self._lock:
            self._refresh_statistics()
            n, rows, _ = self._statistics()
            return n, rows or n, self._document_frequencies(terms)

    def search(self, query: str, k: int) -> list[KeywordHit]:
        """The ``k`` best chunks for ``query`` by BM25, best first."""
        terms = list(dict.fromkeys(tokenize(query)))
        if not terms or k <= 0:
            return []
        with self._lock:
            self._refresh_statistics()
            n = self._statistics()[0]
            if n == 0:
                return []
            df = self._document_frequencies([t for t in terms if len(t) > 1])
            if n > 2 * self.max_postings:
                # On a large knowledge base, a single character that is part of a word of the question found
                # in the index adds little to the ranking but brings the longest posting lists: leave it to
                # the word. Characters of words the index does not know stay, as the fallback they are for.
                covered = {ch for t in terms if len(t) > 1 and df.get(t, 0) > 0 and _CJK_RUN.match(t) for ch in t}
                terms = [t for t in terms if not (len(t) == 1 and t in covered)]
            df.update(self._document_frequencies([t for t in terms if len(t) == 1]))
            idf = {t: math.log(1 + (n - df.get(t, 0) + 0.5) / (df.get(t, 0) + 0.5)) for t in terms}
            # Terms in more than half the chunks get (almost) no weight in FTS5's bm25, and on a large knowledge
            # base a term in more than max_postings chunks costs more time than its small IDF is worth: both
            # are left out of the MATCH while MIN_MATCH_TERMS rarer ones remain (else the rarest are used).
            present = sorted((t for t in terms if df.get(t, 0) > 0), key=lambda t: df[t])
            useful = [t for t in present if df[t] <= min(n / 2, self.max_postings)]
            useful = useful if len(useful) >= min(MIN_MATCH_TERMS, len(present)) else present[:MIN_MATCH_TERMS]
            if not useful:
                return []
            # The MATCH costs time in proportion to the postings of its terms (about 2 µs each): on a large
            # knowledge base it takes the rarest terms within match_budget postings to find candidates, which
            # are then ranked on all the useful terms with FTS5's own formula. Below 2 * max_postings chunks
            # the ranking is exactly FTS5's over every useful term.
            matched = _within_budget(useful, df, self.match_budget) if n > 2 * self.max_postings else useful
            rescore = len(matched) < len(useful)
            match = " OR ".join('"' + t.replace('"', '""') + '"' for t in matched)
            # Rank in a subquery and read IDs and bodies for the winners only: reading every match's body
            # before sorting cost a third of the time.
            rows = self._db.execute(
                "SELECT c.chunk_id, best.s, t.body FROM (SELECT rowid AS r, -bm25(chunk_terms) AS s "
                "FROM chunk_terms WHERE chunk_terms MATCH ? ORDER BY bm25(chunk_terms), rowid LIMIT ?) best "
                "JOIN chunk_ids c ON c.rowid = best.r JOIN chunk_terms t ON t.rowid = best.r "
                "ORDER BY best.s DESC, best.r",  # ties: the earlier-indexed chunk first
                (match, max(k, RESCORE_CANDIDATES) if rescore else k),
            ).fetchall()
            if rescore:
                rows = self._rescore(rows, useful, df)[:k]
        total = sum(idf.values())
        hits = []
        for chunk_id, score, body in rows:
            present = set(body.split())
            covered = sum(w for t, w in idf.items() if t in present)
            hits.append(KeywordHit(str(chunk_id), float(score), covered / total if total else 0.0))
        return hits

    def _rescore(
        self, rows: list[tuple[str, float, str]], terms: list[str], df: dict[str, int]
    ) -> list[tuple[str, float, str]]:
        """FTS5's bm25() over ``terms`` for the candidate rows, recomputed here (same constants, IDF and
        average length), best first."""
        _, rows_total, avgdl = self._statistics()
        idf = {}
        for t in terms:
            value = math.log((rows_total - df[t] + 0.5) / (df[t] + 0.5))
            idf[t] = value if value > 0 else 1e-6
        out = []
        for chunk_id, _, body in rows:
            tokens = body.split()
            counts = Counter(tokens)
            norm = BM25_K1 * (1 - BM25_B + BM25_B * len(tokens) / avgdl) if avgdl else BM25_K1
            score = sum(idf[t] * counts[t] * (BM25_K1 + 1) / (counts[t] + norm) for t in terms if counts[t])
            out.append((chunk_id, score, body))
        return sorted(out, key=lambda row: -row[1])  # stable: ties keep FTS5's order


def _within_budget(terms: list[str], df: dict[str, int], budget: int) -> list[str]:
    """The rarest terms (``terms`` is sorted rarest first) whose postings add up to at most ``budget``; at
    least the rarest one, whatever its cost."""
    chosen: list[str] = []
    total = 0
    for t in terms:
        if chosen and total + df[t] > budget:
            break
        chosen.append(t)
        total += df[t]
    return chosen


def _varints(blob: bytes) -> list[int]:
    """SQLite's variable-length integers (the encoding of FTS5's 'averages' record)."""
    out: list[int] = []
    i = 0
    while i < len(blob):
        value = 0
        for j in range(9):
            byte = blob[i]
            i += 1
            if j == 8:
                value = (value << 8) | byte
                break
            value = (value << 7) | (byte & 0x7F)
            if not byte & 0x80:
                break
        out.append(value)
    return out


def sync_from_collection(index: KeywordIndex, collection: Any, *, page: int = 2000) -> int:
    """Rebuild the index from a Chroma collection when their chunk sets differ (an index created before this
    feature, or one interrupted by a crash). Returns how many chunks were (re)indexed; 0 when in sync."""
    total = int(collection.count())
    if index.count() == total:
        return 0
    chroma_ids: set[str] = set()
    done = 0
    known = index.ids()
    for offset in range(0, total, page):
        got = collection.get(include=["documents"], limit=page, offset=offset)
        ids, docs = list(got["ids"]), list(got["documents"] or [])
        chroma_ids.update(ids)
        missing = [(i, d or "") for i, d in zip(ids, docs, strict=True) if i not in known]
        if missing:
            index.add([i for i, _ in missing], [d for _, d in missing])
            done += len(missing)
    stale = known - chroma_ids
    index.delete(stale)
    logger.info("keyword index re-synchronised: %d chunk(s) indexed, %d removed", done, len(stale))
    return done + len(stale)
