"""The memory search planner: which words FTS5 ranks, and how the scope is applied.

Scope isolation: every statement filters on ``scope = ?``. Search may also
put the scope's token into the MATCH expression (``scope_key : "<digits>"
AND {text tags_text} : (...)``) so the full-text engine ranks only that
scope's rows; the user's words are always quoted strings restricted to
``text``/``tags_text`` and can never name a column or an operator.

Search cost: bm25 costs about 0.6 us for every matching row plus 0.03 us for
every row containing each query word anywhere in the table. A search is
planned against a budget (3 ms by default): per-word document counts (capped,
cached) decide whether to put the scope in MATCH and which words to rank,
rarest first; words too common to fit (in a very large scope) are used only
to fill the result up, newest first, with score 0. Below 2000 memories in the
database every search is exact.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Literal

from .query import MatchMode, build_match, is_plain_ascii_word, query_terms, quote_term, tokenize
from .schema import MEMORY_COLUMNS
from .scope import scope_token

__all__ = ["ScopeStrategy", "SearchPlanner", "score", "tag_clause", "tag_prefilter"]

log = logging.getLogger(__name__)

ScopeStrategy = Literal["auto", "match", "filter"]

# Column weights: text 1.0, tags 0.75, the scope token 0 (it is in every row
# of the scope, and must not move scores). Same as the configured ``rank``.
_BM25 = "bm25(memories_fts, 1.0, 0.75, 0.0)"


def tag_clause(tags: Sequence[str], params: list[Any]) -> str:
    """SQL condition: the memory carries at least one of ``tags`` (exact)."""
    if not tags:
        return ""
    params.extend(tags)
    marks = ",".join("?" * len(tags))
    return f" AND EXISTS (SELECT 1 FROM json_each(m.tags) WHERE json_each.value IN ({marks}))"


def tag_prefilter(tags: Sequence[str]) -> str | None:
    """FTS5 condition that every memory carrying one of ``tags`` satisfies.

    Each tag becomes a phrase in the ``tags_text`` column; the exact
    (``json_each``) check still follows in SQL. None unless every tag is made
    of plain ASCII words, where FTS5's tokenization is certain (a tag FTS5
    might not index must not filter anything out).
    """
    phrases = []
    for tag in tags:
        words = tokenize(tag)
        if not words or not all(is_plain_ascii_word(w) for w in words):
            return None
        phrases.append(quote_term(" ".join(words)))
    return "tags_text : (" + " OR ".join(phrases) + ")" if phrases else None


class _DfCache:
    """Small LRU of per-word document counts (capped), shared by all threads.

    Only used to plan a search (which words are too common to rank), so a
    stale entry costs a little speed or recall, never correctness.
    """

    def __init__(self, size: int = 8192, ttl: float = 300.0) -> None:
        self._size = size
        self._ttl = ttl
        self._data: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, term: str) -> int | None:
        with self._lock:
            item = self._data.get(term)
            if item is None:
                return None
            if item[1] < time.monotonic():
                del self._data[term]
                return None
            self._data.move_to_end(term)
            return item[0]

    def put(self, term: str, df: int) -> None:
        with self._lock:
            self._data[term] = (df, time.monotonic() + self._ttl)
            self._data.move_to_end(term)
            while len(self._data) > self._size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


def score(bm25: float) -> float:
    """``-bm25`` to 6 significant digits (higher is better; 0.0 when unranked)."""
    return float(f"{-float(bm25):.6g}") + 0.0


class SearchPlanner:
    """Plans and runs the FTS5 queries of one search against a cost budget.

    ``scope_strategy`` (for benchmarks; keep ``"auto"``): ``"match"`` always
    puts the scope token into the FTS5 query, ``"filter"`` only filters the
    joined rows on ``scope = ?``; ``"auto"`` picks the cheaper per query.
    The SQL ``scope = ?`` filter is applied in every case. Safe to share
    between threads (the word-count cache has its own lock).
    """

    # Search cost model, microseconds per row, measured with SQLite 3.40 on
    # a 2-core x86 box (bench/memory_search.py). bm25 first counts, for each
    # phrase of the query, every row of the whole table containing it (its
    # idf), then scores every matching row.
    IDF_US = 0.03  # per row of a phrase's doclist (also what count(*) costs)
    RANK_US = 0.6  # per matching row scored by bm25 (+ the top-k sorter)
    RANK_PER_TERM = 0.05  # relative extra per additional word in the query
    #: Planned cost above which the most common words are not ranked.
    SEARCH_BUDGET_US = 3000.0
    #: Per-word document counts are counted up to this many rows ...
    DF_CAP = 8000
    #: ... and at most this many rows are counted per search (cold cache).
    DF_COUNT_BUDGET = 24000
    #: Below this many memories in the database, every search is exact.
    EXACT_BELOW_ROWS = 2000

    def __init__(self, *, scope_strategy: ScopeStrategy = "auto", search_budget_ms: float | None = None) -> None:
        if scope_strategy not in ("auto", "match", "filter"):
            raise ValueError("scope_strategy must be 'auto', 'match' or 'filter'")
        self.scope_strategy = scope_strategy
        if search_budget_ms is not None:
            self.SEARCH_BUDGET_US = float(search_budget_ms) * 1000.0
        self.df_cache = _DfCache()

    def _stats(self, db: sqlite3.Connection, scope: str) -> tuple[int, int]:
        """(memories in the database, memories in ``scope``)."""
        got = dict(db.execute("SELECT scope, n FROM memory_counts WHERE scope IN ('', ?)", (scope,)).fetchall())
        return int(got.get("", 0)), int(got.get(scope, 0))

    def _estimates(self, db: sqlite3.Connection, terms: Sequence[str], total: int) -> tuple[dict[str, int], int]:
        """Rows of the whole table containing each term; ``total`` for common ones.

        Counts stop at DF_CAP (a word that common is not worth ranking in a
        big scope) and are cached. Uncached words share a counting budget of
        DF_COUNT_BUDGET rows per search, so a long message full of common
        words cannot spend milliseconds on counting; words left uncounted
        are treated as common. Returns the estimates and the rows counted.
        """
        est: dict[str, int] = {}
        todo: list[str] = []
        for t in terms:
            df = self.df_cache.get(t.lower())
            if df is None:
                todo.append(t)
            else:
                est[t] = df if df < self.DF_CAP else total
        budget = self.DF_COUNT_BUDGET
        for t in todo:
            cap = min(self.DF_CAP, budget)
            if cap <= 0:
                est[t] = total
                continue
            df = db.execute(
                "SELECT count(*) FROM (SELECT 1 FROM memories_fts WHERE memories_fts MATCH ? LIMIT ?)",
                (build_match([t]), cap),
            ).fetchone()[0]
            budget -= df
            if df < cap or cap == self.DF_CAP:
                self.df_cache.put(t.lower(), df)
            est[t] = df if df < cap else total
        return est, self.DF_COUNT_BUDGET - budget

    def _run_fts(
        self,
        db: sqlite3.Connection,
        scope: str,
        terms: Sequence[str],
        mode: MatchMode,
        scoped: bool,
        tags: Sequence[str],
        limit: int,
        *,
        newest_first: bool = False,
    ) -> list[tuple[Any, ...]]:
        """One FTS5 query, filtered on scope (always in SQL, optionally in MATCH)."""
        expr = build_match(
            list(terms),
            mode=mode,
            scope_column="scope_key" if scoped else None,
            scope_token=scope_token(scope) if scoped else None,
        )
        if expr is None:
            return []
        prefilter = tag_prefilter(tags)
        if prefilter:
            expr = f"{expr} AND {prefilter}"
        try:
            # Fast path: rank inside FTS5 alone (explicit bm25() with SQLite's
            # top-k sorter is ~25% cheaper than ORDER BY rank), take a few
            # spare rows, then join and filter on scope and tags.
            spare = limit + 8 if scoped else 4 * limit + 16
            order = "rowid DESC" if newest_first else "s"
            score = "0.0" if newest_first else _BM25
            ranked = db.execute(
                f"SELECT rowid, {score} AS s FROM memories_fts WHERE memories_fts MATCH ? ORDER BY {order} LIMIT ?",
                (expr, spare),
            ).fetchall()
            if not ranked:
                return []
            params: list[Any] = [r[0] for r in ranked]
            params.append(scope)
            sql = f"SELECT {MEMORY_COLUMNS}, m.seq FROM memories m WHERE m.seq IN ({','.join('?' * len(ranked))}) AND +m.scope = ?"
            sql += tag_clause(tags, params)
            found = {row[-1]: row for row in db.execute(sql, params)}
            rows = [(*found[seq][:6], s, seq) for seq, s in ranked if seq in found][:limit]
            if len(rows) == limit or len(ranked) < spare:
                return rows  # enough, or every match was looked at
            # Other scopes' rows or the tag filter used up the spare rows:
            # let SQLite walk the ranked matches until ``limit`` pass.
            order = "memories_fts.rowid DESC" if newest_first else "memories_fts.rank"
            score = "0.0" if newest_first else "memories_fts.rank"
            params = [expr, scope]
            sql = (
                f"SELECT {MEMORY_COLUMNS}, {score}, m.seq FROM memories_fts "
                "JOIN memories m ON m.seq = memories_fts.rowid "
                "WHERE memories_fts MATCH ? AND m.scope = ?"
            )
            sql += tag_clause(tags, params) + f" ORDER BY {order} LIMIT ?"
            params.append(limit)
            return db.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            # The expression holds quoted words only, so this is not expected;
            # an FTS5 complaint must not turn into a server error though.
            if "fts5" in str(exc).lower():
                log.warning("memory search: FTS5 rejected %r: %s", expr[:200], exc)
                return []
            raise

    def rows(
        self,
        db: sqlite3.Connection,
        scope: str,
        query: str,
        limit: int,
        tags: Sequence[str],
        mode: MatchMode,
    ) -> list[tuple[Any, ...]]:
        terms = query_terms(query)
        if not terms:
            return self.newest_with_tags(db, scope, tags, limit) if tags else []
        total, in_scope = self._stats(db, scope)
        if in_scope == 0:
            return []
        frac = in_scope / max(total, 1)
        strategy = self.scope_strategy
        if mode == "all" or total < self.EXACT_BELOW_ROWS:
            scoped = strategy == "match" or (strategy == "auto" and frac < 0.5)
            return self._run_fts(db, scope, terms, mode, scoped, tags, limit)

        # Plan: est[t] is how many rows contain t (the whole table when the
        # count hit the cap). Scoping in MATCH costs the scope's own doclist
        # once but then only ranks the scope's rows.
        est, counted = self._estimates(db, terms, total)
        by_rarity = sorted(terms, key=est.__getitem__)
        # Counting (cold cache) already spent part of the budget.
        budget = max(self.SEARCH_BUDGET_US - counted * self.IDF_US, self.SEARCH_BUDGET_US / 3)

        def plan(scoped: bool) -> tuple[int, float]:
            """(how many of the rarest words fit the budget, planned cost)."""
            fixed = in_scope * self.IDF_US if scoped else 0.0
            share = frac if scoped else 1.0
            rows = 0
            n, spent = 0, fixed
            for i, t in enumerate(by_rarity):
                # Scoring a row costs a little more for every phrase in the query.
                per_row = self.RANK_US * (1.0 + self.RANK_PER_TERM * i)
                cost = fixed + (rows + est[t]) * (self.IDF_US + share * per_row)
                if cost > budget:
                    break
                rows += est[t]
                n, spent = i + 1, cost
            return n, spent

        if strategy == "auto":
            n_match, cost_match = plan(True)
            n_filter, cost_filter = plan(False)
            scoped = (n_match, -cost_match) > (n_filter, -cost_filter)
            n = n_match if scoped else n_filter
        else:
            scoped = strategy == "match"
            n = plan(scoped)[0]
        ranked, common = by_rarity[:n], by_rarity[n:]
        rows = self._run_fts(db, scope, ranked, "any", scoped, tags, limit) if ranked else []
        if common and len(rows) < limit:
            seen = {r[7] for r in rows}
            more = self._run_fts(db, scope, common, "any", scoped, tags, limit, newest_first=True)
            rows += [r for r in more if r[7] not in seen][: limit - len(rows)]
        return rows

    def newest_with_tags(self, db: sqlite3.Connection, scope: str, tags: Sequence[str], limit: int) -> list[tuple[Any, ...]]:
        prefilter = tag_prefilter(tags)
        params: list[Any]
        if prefilter:
            params = [f"scope_key : {quote_term(scope_token(scope))} AND {prefilter}", scope]
            sql = (
                f"SELECT {MEMORY_COLUMNS}, 0.0, m.seq FROM memories_fts "
                "JOIN memories m ON m.seq = memories_fts.rowid "
                "WHERE memories_fts MATCH ? AND m.scope = ?"
            )
            order = " ORDER BY memories_fts.rowid DESC LIMIT ?"
        else:
            params = [scope]
            sql = f"SELECT {MEMORY_COLUMNS}, 0.0, m.seq FROM memories m WHERE m.scope = ?"
            order = " ORDER BY m.id DESC LIMIT ?"
        sql += tag_clause(tags, params) + order
        params.append(limit)
        return db.execute(sql, params).fetchall()
