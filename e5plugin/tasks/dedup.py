"""Near-duplicate detection through the cluster: kNN neighbours above a similarity threshold, grouped into
clusters with union-find (connected components), then reported or tagged in the index.

How it runs (bounded memory, no all-pairs in Python):

1. the stored vectors are read page by page with a scroll (``Backend.scan_vectors``: ``batch_size`` vectors in
   memory at a time; Elasticsearch 9.1+ is asked to include vectors in ``_source``);
2. each page becomes one ``_msearch`` of kNN queries, one per vector, ``neighbors + 1`` hits each (the document
   finds itself), ``_source: false``: the engine's HNSW index does the neighbour search;
3. every hit at or above the threshold joins the two documents in a union-find over document positions.
   A pair needs to be found from one side only (similarity is symmetric), and a cluster larger than
   ``neighbors + 1`` is still connected through chains.

Memory is O(number of documents): the id table (id -> position) and four int32/float32 arrays (union-find parent
and set size, each document's best score and best neighbour: 16 bytes per document), plus one page of vectors
and its responses; clusters (documents with at least one neighbour above the threshold) are materialized only
for the report.

Prefixes: nothing is embedded here; documents are compared as the index stores them, all in one form (the prefix
plan's task ``dedup``: symmetric, the passage form of the index on both sides). A threshold for it is therefore
calibrated on pairs embedded the same way (``calibrate --side passage``).

Threshold: the caller's, else the calibration stored in the index (``e5plugin calibrate --index``), else
:data:`~e5plugin.tasks.calibrate.DEFAULT_THRESHOLDS` (``dedup``: 0.97 for E5 models, 0.90 for others).

Tagging (``tag_duplicates``) writes, with bulk partial updates (the vectors are left as they are):
``e5plugin_duplicate_cluster`` (keyword, on every member: the cluster id = its smallest document id),
``e5plugin_duplicate_of`` (keyword, on every member but that one: the cluster id) and
``e5plugin_duplicate_score`` (float: the member's best similarity within the cluster). Tags of documents that are
no longer in a cluster are cleared, so re-running after new data or with another threshold leaves no stale tags.
Searches can then hide duplicates with ``must_not: {exists: {field: e5plugin_duplicate_of}}``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..backfill import has_vector_query
from ..engines.base import Backend
from ..errors import ConfigurationError, IngestFailedError
from ..search import IndexSetup
from .calibrate import default_threshold

DUPLICATE_OF = "e5plugin_duplicate_of"
DUPLICATE_CLUSTER = "e5plugin_duplicate_cluster"
DUPLICATE_SCORE = "e5plugin_duplicate_score"
META_KEY = "dedup"
TAG_MAPPING = {
    "properties": {
        DUPLICATE_OF: {"type": "keyword"},
        DUPLICATE_CLUSTER: {"type": "keyword"},
        DUPLICATE_SCORE: {"type": "float"},
    }
}


class UnionFind:
    """Disjoint sets over positions 0..n-1 that grow on demand (int32 parent array, union by size, path halving)."""

    def __init__(self, capacity: int = 1024) -> None:
        self.parent = np.arange(max(capacity, 1), dtype=np.int32)
        self.size = np.ones(max(capacity, 1), dtype=np.int32)
        self.count = 0

    def add(self) -> int:
        if self.count == len(self.parent):
            grown = len(self.parent) * 2
            self.parent = np.concatenate([self.parent, np.arange(len(self.parent), grown, dtype=np.int32)])
            self.size = np.concatenate([self.size, np.ones(grown - len(self.size), dtype=np.int32)])
        self.count += 1
        return self.count - 1

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = int(parent[x])
        return x

    def union(self, a: int, b: int) -> bool:
        """Join the sets of ``a`` and ``b``; False when they were already one."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        return True

    def roots(self) -> np.ndarray:
        """The root of every position (fully compressed)."""
        return np.array([self.find(i) for i in range(self.count)], dtype=np.int32)

    def components(self, min_size: int = 2) -> list[list[int]]:
        """Groups of positions with at least ``min_size`` members, each sorted, ordered by first member."""
        roots = self.roots()
        sizes = np.bincount(roots, minlength=self.count) if self.count else np.zeros(0, dtype=np.int64)
        groups: dict[int, list[int]] = {}
        for position in np.flatnonzero(sizes[roots] >= min_size):
            groups.setdefault(int(roots[position]), []).append(int(position))
        return sorted(groups.values(), key=lambda g: g[0])


@dataclass
class DuplicateCluster:
    id: str  # the smallest member id: stable across runs whatever the scan order
    members: list[dict]  # {"id", "score": best similarity to another member, "nearest": that member's id}

    @property
    def size(self) -> int:
        return len(self.members)

    def to_dict(self) -> dict:
        return {"cluster": self.id, "size": self.size, "members": self.members}


@dataclass
class DedupReport:
    index: str
    threshold: float
    threshold_source: str
    neighbors: int
    documents: int = 0  # documents with a vector that were queried
    queries: int = 0
    pairs_above_threshold: int = 0  # hits >= threshold (each pair may be seen from both sides)
    clusters: list[DuplicateCluster] = field(default_factory=list)
    seconds: float = 0.0
    tagged: int | None = None
    cleared: int | None = None

    @property
    def duplicates(self) -> int:
        """Documents that could be dropped: cluster members other than one per cluster."""
        return sum(c.size - 1 for c in self.clusters)

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "neighbors": self.neighbors,
            "documents": self.documents,
            "queries": self.queries,
            "pairs_above_threshold": self.pairs_above_threshold,
            "clusters_found": len(self.clusters),
            "duplicates": self.duplicates,
            "seconds": round(self.seconds, 2),
            **({"tagged": self.tagged, "cleared": self.cleared} if self.tagged is not None else {}),
            "clusters": [c.to_dict() for c in self.clusters],
        }


def find_duplicates(
    backend: Backend,
    index: str,
    *,
    threshold: float | None = None,
    neighbors: int = 10,
    num_candidates: int | None = None,
    batch_size: int = 200,
    progress: Callable[[int, int], None] | None = None,
) -> DedupReport:
    """Clusters of near-duplicates in ``index`` (see the module docstring). ``progress(done, total)``."""
    meta = backend.index_meta(index) if backend.index_exists(index) else {}
    if not meta:
        raise ConfigurationError(f"Index {index!r} was not set up by e5plugin: run `e5plugin deploy` first.")
    if neighbors < 1 or batch_size < 1:
        raise ConfigurationError("--neighbors and --batch-size must be at least 1.")
    setup = IndexSetup.from_meta(meta)
    limit, source = default_threshold(meta, "dedup", threshold)
    report = DedupReport(index, limit, source, neighbors)
    started = time.perf_counter()
    nested = setup.chunking.field if setup.chunking else None  # chunked index: vectors are in nested passages
    has_vector = has_vector_query(setup.vector_field, nested)
    total = backend.count(index, has_vector)
    k = neighbors + 1
    candidates = max(num_candidates or 0, 2 * k, 50)

    ids: list[str] = []
    positions: dict[str, int] = {}
    sets = UnionFind(total + 16)
    best_score = np.full(total + 16, -np.inf, dtype=np.float32)
    best_nearest = np.full(total + 16, -1, dtype=np.int32)

    def position(doc_id: str) -> int:
        nonlocal best_score, best_nearest
        found = positions.get(doc_id)
        if found is None:
            found = positions[doc_id] = sets.add()
            ids.append(doc_id)
            if found >= len(best_score):  # documents added while the run goes on
                best_score = np.concatenate([best_score, np.full(len(best_score), -np.inf, dtype=np.float32)])
                best_nearest = np.concatenate([best_nearest, np.full(len(best_nearest), -1, dtype=np.int32)])
        return found

    def note(a: int, b: int, similarity: float) -> None:
        for x, y in ((a, b), (b, a)):
            if similarity > best_score[x]:
                best_score[x], best_nearest[x] = similarity, y

    page: list[tuple[str, list[float]]] = []

    def flush() -> None:
        search_body = backend.nested_knn_body if nested else backend.knn_body
        options = {"path": nested} if nested else {}
        bodies = [
            search_body(
                vector_field=setup.vector_field, k=k, num_candidates=candidates, vector=vector, source=False, **options
            )
            for _, vector in page
        ]
        for (doc_id, _), response in zip(page, backend.msearch(index, bodies), strict=True):
            me = position(doc_id)
            for hit in backend.hits(response):
                if hit.id == doc_id:
                    continue
                similarity = hit.similarity
                if similarity < limit:
                    continue
                report.pairs_above_threshold += 1
                other = position(hit.id)
                sets.union(me, other)
                note(me, other, similarity)
        report.queries += len(page)
        if progress:
            progress(report.queries, total)
        page.clear()

    vectors = (
        _first_passage_vectors(backend, index, nested, setup.vector_field, has_vector, batch_size)
        if nested
        else backend.scan_vectors(index, setup.vector_field, query=has_vector, size=batch_size)
    )
    for doc_id, vector in vectors:
        position(doc_id)
        page.append((doc_id, vector))
        if len(page) >= batch_size:
            flush()
    if page:
        flush()
    report.documents = report.queries
    for group in sets.components(min_size=2):
        members = sorted(
            (
                {
                    "id": ids[p],
                    "score": round(float(best_score[p]), 6),
                    "nearest": ids[int(best_nearest[p])],
                }
                for p in group
            ),
            key=lambda m: m["id"],
        )
        report.clusters.append(DuplicateCluster(members[0]["id"], members))
    report.clusters.sort(key=lambda c: (-c.size, c.id))
    report.seconds = time.perf_counter() - started
    return report


def _first_passage_vectors(
    backend: Backend, index: str, path: str, vector_field: str, query: dict, size: int
) -> Iterator[tuple[str, list[float]]]:
    """Chunked index: each document's first passage vector (its opening, which near-duplicates share); the kNN then
    scores other documents by their best passage against it."""
    leaf = vector_field[len(path) + 1 :]
    for hit in backend.scan(index, {"_source": backend.vector_source(vector_field), "query": query}, size=size):
        passages = (hit.get("_source") or {}).get(path) or []
        vector = next((p.get(leaf) for p in passages if isinstance(p, dict) and p.get(leaf)), None)
        if vector:
            yield hit["_id"], vector


def tag_duplicates(backend: Backend, report: DedupReport, *, batch_size: int = 500) -> DedupReport:
    """Write the cluster fields into the documents of ``report.index`` and clear stale ones (see module doc)."""
    index = report.index
    backend.put_mapping(index, TAG_MAPPING)
    wanted: dict[str, dict] = {}
    for cluster in report.clusters:
        for member in cluster.members:
            wanted[member["id"]] = {
                DUPLICATE_CLUSTER: cluster.id,
                DUPLICATE_OF: cluster.id if member["id"] != cluster.id else None,
                DUPLICATE_SCORE: member["score"],
            }
    cleared = {DUPLICATE_CLUSTER: None, DUPLICATE_OF: None, DUPLICATE_SCORE: None}
    stale = [
        hit["_id"]
        for hit in backend.scan(
            index, {"_source": False, "query": {"exists": {"field": DUPLICATE_CLUSTER}}}, size=batch_size
        )
        if hit["_id"] not in wanted
    ]

    def actions():
        for doc_id, fields in wanted.items():
            yield {"_op_type": "update", "_index": index, "_id": doc_id, "doc": fields}
        for doc_id in stale:
            yield {"_op_type": "update", "_index": index, "_id": doc_id, "doc": cleared}

    failed = []
    with backend.errors():
        for ok, item in backend.streaming_bulk(
            actions(), chunk_size=batch_size, raise_on_error=False, max_retries=8, initial_backoff=1.0
        ):
            if not ok:
                info = next(iter(item.values()))
                failed.append(f"{info.get('_id')}: {info.get('error')}")
    backend.refresh(index)
    if failed:
        raise IngestFailedError(
            f"{len(failed)} documents could not be tagged (first: {failed[0]}); re-run `e5plugin dedup --tag`."
        )
    report.tagged, report.cleared = len(wanted), len(stale)
    backend.update_index_meta(
        index,
        {
            META_KEY: {
                "threshold": report.threshold,
                "threshold_source": report.threshold_source,
                "neighbors": report.neighbors,
                "clusters": len(report.clusters),
                "duplicates": report.duplicates,
                "tagged_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        },
    )
    return report
