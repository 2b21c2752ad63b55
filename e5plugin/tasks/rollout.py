"""A new model version behind an alias, switched over without downtime.

Applications search an alias (``docs``), never a concrete index. A new model version (a fine-tuned model, a
bigger E5) gets a new index ``docs-v<N+1>`` deployed with it; the documents are copied in from the index the alias
points to now (re-embedded with the new model: by e5plugin in client mode, by the new index's pipeline in server
mode) or read from a file; once every document is in and a search answers, one ``_aliases`` request removes the
alias from the old index and adds it to the new one, atomically. Searches before the switch are answered by the
old index with the old model, after it by the new one; :class:`~e5plugin.search.SemanticSearch` notices the switch
(hits come from another index) and re-reads the setup, so a query is always embedded by the model of the index that
answers it. The old index is kept for a rollback (``switch_alias`` back) unless ``delete_old``.

Writes that reach the alias during the copy land in the old index only: pause writers, or replay them after the
switch (stable ids make a replay an overwrite).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from ..bodies import ERROR_FIELD, PASSAGE_TMP_FIELD
from ..deploy import DeployRequest, DeployResult, deploy
from ..embed import Embedder
from ..engines.base import TEXT_CHECK_PROCESSORS, Backend
from ..errors import ConfigurationError, IngestFailedError
from ..ingest import IngestReport, SourceDoc, ingest
from ..models import ModelSpec
from ..prefixes import Mode
from ..search import IndexSetup, SemanticSearch


@dataclass
class RolloutResult:
    alias: str
    index: str  # the new version
    previous: list[str] = field(default_factory=list)  # what the alias pointed to before
    copied: int = 0
    deployed: DeployResult | None = None
    ingest: IngestReport | None = None
    deleted: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "alias": self.alias,
            "index": self.index,
            "previous": self.previous,
            "copied": self.copied,
            "ingest": self.ingest.to_dict() if self.ingest else None,
            "model_id": self.deployed.setup.model_id if self.deployed else None,
            "deleted": self.deleted,
        }


def next_version(backend: Backend, alias: str) -> str:
    """``<alias>-v<N>``, one past the highest existing version."""
    pattern = re.compile(rf"^{re.escape(alias)}-v(\d+)$")
    numbers = [int(m.group(1)) for name in backend.list_indices(f"{alias}-v*") if (m := pattern.match(name))]
    return f"{alias}-v{max(numbers, default=0) + 1}"


def documents_of(backend: Backend, index: str, setup: IndexSetup, batch_size: int = 500) -> Iterator[SourceDoc]:
    """Every document of ``index`` under its own id, without what e5plugin computed (vectors, passages, marks)."""
    computed = {setup.vector_field.split(".")[0], ERROR_FIELD, PASSAGE_TMP_FIELD}
    if setup.chunking:
        computed.add(setup.chunking.field)
    hits = backend.scan_ahead(index, {"query": {"match_all": {}}}, size=batch_size)  # never waits for the embedder
    for number, hit in enumerate(hits, start=1):
        doc = {k: v for k, v in (hit.get("_source") or {}).items() if k not in computed}
        yield SourceDoc(number, doc, doc_id=hit["_id"])


def rollout(
    backend: Backend,
    spec: ModelSpec,
    alias: str,
    *,
    mode: Mode = Mode.CLIENT,
    documents: Iterable[dict | SourceDoc] | None = None,
    request: DeployRequest | None = None,
    embedder: Embedder | None = None,
    check_query: str | None = None,
    source_index: str | None = None,
    replicas: int | None = None,
    delete_old: bool = False,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> RolloutResult:
    """Deploy ``spec`` into a new versioned index, fill it, check it, then switch ``alias`` to it atomically.

    ``documents``: where the documents come from (default: ``source_index``, else the index the alias points to
    now; one of them is needed for a first version). ``request``: deploy settings for the new index (default:
    the current index's fields, chunking and keyword fields, in ``mode``). ``check_query``: a search that must
    return hits before the switch. Nothing is switched when a document fails.
    """
    if backend.index_exists(alias) and not backend.is_alias(alias):
        raise ConfigurationError(
            f"{alias!r} is an index, not an alias: a versioned rollout needs the name free for the alias. Copy it "
            f"once under an alias (e5plugin rollout --alias {alias}-live --from-index {alias} ...) and point "
            "applications at that alias."
        )
    previous = backend.alias_indices(alias)
    if len(previous) > 1:
        raise ConfigurationError(f"Alias {alias!r} points to several indices ({', '.join(previous)}); fix it first.")
    origin = source_index or (previous[0] if previous else None)
    current = IndexSetup.from_meta(backend.index_meta(origin)) if origin else None
    if documents is None and current is None:
        raise ConfigurationError(
            f"No alias {alias!r} yet: pass the documents of its first version (--source FILE or --from-index)."
        )
    new_index = next_version(backend, alias)
    request = request or _request_like(backend, new_index, mode, origin, current)
    request.index = new_index
    if replicas is not None:
        request.replicas = replicas
    result = RolloutResult(alias, new_index, previous)
    result.deployed = deploy(backend, spec, request)
    setup = result.deployed.setup
    if setup.mode is Mode.CLIENT and embedder is None:
        embedder = Embedder(spec, plan=setup.plan)
    source = documents if documents is not None else documents_of(backend, origin, current)  # type: ignore[arg-type]
    result.ingest = ingest(
        backend,
        new_index,
        source,
        text_field=setup.text_field,
        vector_field=setup.vector_field,
        embedder=embedder,
        batch_size=batch_size,
        progress=progress,
        refresh=True,
    )
    result.copied = result.ingest.indexed
    if not result.ingest.ok:
        raise IngestFailedError(
            f"{result.ingest.failed} documents failed to go into {new_index}; {alias!r} still points to "
            f"{', '.join(previous) or 'nothing'}. Fix them and run the rollout again (or delete {new_index})."
        )
    check_before_switch(backend, alias, new_index, setup, previous, origin if documents is None else None)
    if check_query:
        helper = SemanticSearch.for_index(new_index, backend=backend, embedder=embedder)
        if not helper.search(check_query, k=1):
            raise IngestFailedError(f"A test search on {new_index} found nothing; {alias!r} was not switched.")
    backend.switch_alias(alias, new_index)
    if delete_old:
        for old in previous:
            backend.delete_index(old)
            result.deleted.append(old)
    return result


def check_before_switch(
    backend: Backend,
    alias: str,
    new_index: str,
    setup: IndexSetup,
    previous: list[str],
    origin: str | None = None,
) -> None:
    """Refuse to point ``alias`` at ``new_index`` unless it holds documents, they have vectors, and none is marked
    as failed by the pipeline; with ``origin`` (copied from it): no fewer documents and vectors than it has."""
    backend.refresh(new_index)
    kept = f"{alias!r} still points to {', '.join(previous) or 'nothing'}"
    total = backend.count(new_index)
    if total == 0:
        raise IngestFailedError(f"{new_index} is empty; {kept}. Pass the documents (--source FILE or --from-index).")
    with_vectors = backend.count(new_index, _has_vector(setup))
    if with_vectors == 0:
        raise IngestFailedError(
            f"None of the {total} documents in {new_index} has a vector (field {setup.text_field!r} missing, or the "
            f"model failed); {kept}."
        )
    failed = backend.count(
        new_index,
        {
            "bool": {
                "filter": [{"exists": {"field": ERROR_FIELD}}],
                "must_not": [{"terms": {f"{ERROR_FIELD}.processor": list(TEXT_CHECK_PROCESSORS)}}],
            }
        },
    )
    if failed:
        raise IngestFailedError(
            f"{failed} documents in {new_index} were stored without a vector because the model failed; {kept}. "
            f"Fix the model (`e5plugin doctor`) and run the rollout again, or repair {new_index} with `e5plugin "
            f"reindex --index {new_index}` and switch with `e5plugin alias switch`."
        )
    if origin is not None:
        origin_setup = IndexSetup.from_meta(backend.index_meta(origin))
        before, before_vectors = backend.count(origin), backend.count(origin, _has_vector(origin_setup))
        if total < before or with_vectors < before_vectors:
            raise IngestFailedError(
                f"{new_index} has {total} documents ({with_vectors} with vectors), {origin} has {before} "
                f"({before_vectors}); {kept}."
            )


def _has_vector(setup: IndexSetup) -> dict:
    """Documents with a vector (chunked indices: at least one passage with a vector)."""
    exists = {"exists": {"field": setup.vector_field}}
    if setup.chunking:
        return {"nested": {"path": setup.chunking.field, "query": exists}}
    return exists


def _request_like(
    backend: Backend, index: str, mode: Mode, previous: str | None, current: IndexSetup | None
) -> DeployRequest:
    """Deploy settings for the new version: the same fields, chunking, keyword fields and index option (hnsw,
    int8_hnsw, ...) as the current one."""
    if current is None:
        return DeployRequest(index=index, mode=mode)
    vector_field = current.vector_field
    if current.chunking:
        vector_field = vector_field[len(current.chunking.field) + 1 :]
    mapping = backend.get_mapping(previous) if previous else {}
    properties = mapping.get("properties", {})
    keywords = tuple(name for name, node in properties.items() if node.get("type") == "keyword")
    option = backend.index_option(mapping, current.vector_field)
    return DeployRequest(
        index=index,
        mode=mode,
        index_options=option if option in backend.index_options else DeployRequest.index_options,
        text_field=current.text_field,
        vector_field=vector_field,
        chunking=current.chunking,
        keyword_fields=keywords or ("lang",),
    )
