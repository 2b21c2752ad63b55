"""An Elasticsearch client that records every request instead of sending it, for contract tests.

It answers with minimal canned bodies so e5plugin and eland run their real code paths; what is checked is the
requests themselves, against the official specification. Cluster *behaviour* is tested on real nodes elsewhere.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from elastic_transport import ApiResponseMeta, HeadApiResponse, HttpHeaders, NodeConfig, ObjectApiResponse
from elasticsearch import Elasticsearch, NotFoundError
from elasticsearch._sync.client._base import NamespacedClient


@dataclass
class Recorded:
    method: str
    path: str
    params: dict
    body: Any
    request_timeout: Any = None  # the client-side timeout the request was sent with (``options()``)
    retry_on_timeout: Any = None


def _meta(status: int = 200) -> ApiResponseMeta:
    return ApiResponseMeta(
        status=status,
        http_version="1.1",
        headers=HttpHeaders({"x-elastic-product": "Elasticsearch"}),
        duration=0.0,
        node=NodeConfig("http", "localhost", 9200),
    )


class RecordingElasticsearch(Elasticsearch):
    def __init__(self, version: str = "9.5.4", licence: str = "trial") -> None:
        super().__init__("http://localhost:9200")
        self.recorded: list[Recorded] = []
        self._version = version
        self._licence = licence
        self._models: dict[str, dict] = {}

    def perform_request(self, method: str, path: str, *, params=None, headers=None, body=None, **_: Any):  # type: ignore[override]
        self.recorded.append(
            Recorded(method, path, dict(params or {}), body, self._request_timeout, self._retry_on_timeout)
        )
        if method == "HEAD":  # "does it exist?": nothing exists in a fresh recording
            return HeadApiResponse(meta=_meta(404))
        return ObjectApiResponse(body=self._answer(method, path, body), meta=_meta())

    def options(self, **kwargs: Any) -> RecordingElasticsearch:  # type: ignore[override]
        """A view with other transport options that records into the same list (``Elasticsearch.options`` would
        construct a plain client)."""
        clone = copy.copy(self)
        for name, value in vars(self).items():
            if isinstance(value, NamespacedClient):
                setattr(clone, name, type(value)(clone))
        clone._request_timeout = kwargs.get("request_timeout", self._request_timeout)
        clone._retry_on_timeout = kwargs.get("retry_on_timeout", self._retry_on_timeout)
        return clone

    def _answer(self, method: str, path: str, body: Any) -> Any:
        if path.startswith("/_nodes"):
            modules = [{"name": n} for n in ("x-pack-ml", "rank-rrf", "ingest-common", "lang-painless")]
            return {"nodes": {"n1": {"version": self._version, "modules": modules, "plugins": []}}}
        if path == "/_license":
            return {"license": {"type": self._licence, "status": "active"}}
        if path.startswith("/_ml/trained_models/") and path.endswith("/_stats"):
            return {"count": 1, "trained_model_stats": [{"deployment_stats": {"state": "started"}}]}
        if path.startswith("/_ml/trained_models/") and path.endswith("/_infer"):  # a unit vector of the model's size
            config = self._models.get(path.split("/")[3], {}).get("inference_config", {})
            size = config.get("text_embedding", {}).get("embedding_size") or 384
            return {"inference_results": [{"predicted_value": [1.0] + [0.0] * (size - 1)}]}
        if path.startswith("/_ml/trained_models/") and method == "GET":
            model_id = path.split("/")[3]
            if model_id not in self._models:
                raise NotFoundError("not found", _meta(404), {"error": {"type": "resource_not_found_exception"}})
            return {"count": 1, "trained_model_configs": [self._models[model_id]]}
        if path.startswith("/_ml/trained_models/") and method == "PUT" and path.count("/") == 3:
            self._models[path.split("/")[3]] = {"model_id": path.split("/")[3], **(body or {})}
            return {"model_id": path.split("/")[3]}
        if path.startswith("/_ingest/pipeline/") and method == "GET":
            raise NotFoundError("not found", _meta(404), {})
        if path.endswith("/_bulk"):  # every action succeeds
            return {"errors": False, "items": _bulk_items(body)}
        if path.endswith("/_settings") and method == "GET":  # no index has explicit settings in a recording
            return {}
        if path.endswith("/_mapping"):
            return {}
        return {"acknowledged": True, "hits": {"hits": []}}


def _bulk_items(body: Any) -> list[dict]:
    """One successful item per action line of a bulk body (NDJSON lines, as text or as a list)."""
    lines = body.splitlines() if isinstance(body, str | bytes) else list(body or [])
    items = []
    for line in lines:
        entry = json.loads(line) if isinstance(line, str | bytes) else line
        kind = next(iter(entry), None) if isinstance(entry, dict) and len(entry) == 1 else None
        if kind in ("index", "create", "update", "delete"):
            meta = entry[kind] or {}
            items.append({kind: {"_index": meta.get("_index"), "_id": meta.get("_id"), "status": 201}})
    return items
