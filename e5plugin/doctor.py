"""`doctor`: what the cluster is, what e5plugin set up there, and what is wrong with a concrete fix for each."""

from __future__ import annotations

from dataclasses import dataclass, field

from .bodies import ERROR_FIELD, META_KEY
from .bodies.opensearch import sq_encoder
from .engines.base import Backend
from .errors import IndexNotFoundError
from .prefixes import Mode

HEALTHY_MODEL_STATES = ("started", "DEPLOYED", "PARTIALLY_DEPLOYED")


@dataclass
class Problem:
    what: str
    fix: str


@dataclass
class Report:
    engine: str
    version: str
    licence: str | None
    ml: bool
    cluster_prefixes: bool
    plugins: list[str]
    indices: list[dict] = field(default_factory=list)
    models: list[dict] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {**self.__dict__, "problems": [p.__dict__ for p in self.problems]}


def _e5plugin_mappings(backend: Backend) -> dict[str, tuple[dict, dict]]:
    """Index name -> (e5plugin's ``_meta`` record, the index's mappings), for the indices e5plugin set up."""
    with backend.errors():
        mappings = dict(backend.client.indices.get_mapping(index="*", expand_wildcards="open"))
    out = {}
    for name, data in mappings.items():
        meta = data.get("mappings", {}).get("_meta", {}).get(META_KEY)
        if meta:
            out[name] = (meta, data.get("mappings", {}))
    return out


def _clipping_quantizers(properties: dict, path: str = "") -> list[str]:
    """Vector fields quantized by Lucene's scalar quantizer with its default confidence interval (what e5plugin
    created for ``hnsw_sq`` before it set the interval): on E5's vectors their recall falls as segments merge."""
    found = []
    for name, field_mapping in properties.items():
        full = f"{path}{name}"
        encoder = sq_encoder(field_mapping)
        if encoder is not None and "confidence_interval" not in encoder.get("parameters", {}):
            found.append(full)
        found += _clipping_quantizers(field_mapping.get("properties", {}), f"{full}.")
    return found


def diagnose(backend: Backend) -> Report:
    caps = backend.capabilities
    report = Report(caps.engine, caps.version_text, caps.licence, caps.ml, caps.cluster_prefixes, caps.plugins)
    if not caps.ml:
        report.problems.append(Problem(caps.ml_reason, "Client-side mode works on this cluster: --mode client."))
    states: dict[str, str] = {}
    names: dict[str, str] = {}  # model id -> its name in the cluster (what deploy's --model-id names)
    for name, (meta, mapping) in sorted(_e5plugin_mappings(backend).items()):
        try:
            documents = backend.count(name)
            failures = backend.count(name, {"exists": {"field": ERROR_FIELD}})
        except IndexNotFoundError:
            continue  # deleted while doctor looked: nothing to report about it
        entry = {
            "index": name,
            "mode": meta.get("mode"),
            "model": meta.get("model", {}).get("model_id"),
            "revision": meta.get("model", {}).get("revision"),
            "weights_sha256": meta.get("model", {}).get("weights_sha256"),
            # which prefixes the model takes, and how that was decided (weights fingerprint, prompts, explicit)
            "family": meta.get("model", {}).get("family") or "not recorded",
            "family_source": meta.get("model", {}).get("family_source") or "index set up before e5plugin recorded it",
            "prefixes": {k: v for k, v in (meta.get("prefixes") or {}).items() if k.endswith("_prefix")},
            "model_id": meta.get("model_id"),
            "pipeline": meta.get("pipeline"),
            "documents": documents,
            "embedding_failures": failures,
        }
        report.indices.append(entry)
        if entry["embedding_failures"]:
            report.problems.append(
                Problem(
                    f"{entry['embedding_failures']} documents in {name!r} have no vector (embedding failed).",
                    f"Fix the cause shown in {ERROR_FIELD}.reason, then run: e5plugin reindex --index {name}",
                )
            )
        left = _left_in_bulk_settings(backend, name, meta)
        if left:
            report.problems.append(left)
        for vector_field in _clipping_quantizers(mapping.get("properties", {})):
            report.problems.append(
                Problem(
                    f"Index {name!r} quantizes {vector_field!r} with Lucene's default confidence interval (hnsw_sq "
                    "as e5plugin first set it up): on E5 vectors its recall falls as segments merge (measured: "
                    "recall@10 0.05 at 1M documents on 3 shards; BENCHMARKS.md section 6).",
                    f"Rebuild it: e5plugin deploy --index {name}-v2 --index-options hnsw_sq (same --model and "
                    f'--mode), copy the documents with POST _reindex {{"source": {{"index": "{name}"}}, '
                    f'"dest": {{"index": "{name}-v2"}}}}, then point your alias at it '
                    f"(e5plugin alias switch --alias ALIAS --index {name}-v2).",
                )
            )
        if meta.get("mode") != Mode.SERVER.value or not meta.get("model_id"):
            continue
        model_id = meta["model_id"]
        if model_id not in states:
            states[model_id] = backend.model_state(model_id) if caps.ml else "unavailable"
        state = states[model_id]
        entry["model_state"] = state
        if state not in HEALTHY_MODEL_STATES:
            if caps.ml and not names:
                names.update({m.model_id: m.provenance.get("name") or m.model_id for m in backend.list_models()})
            # without --model-id, deploy would register the model again under its default name
            model_name = f" --model-id {names[model_id]}" if model_id in names else ""
            report.problems.append(
                Problem(
                    f"Model {model_id!r} used by index {name!r} is {state}: ingest and search on it fail.",
                    f"Run: e5plugin deploy --index {name} --model {meta.get('model', {}).get('model_id')} "
                    f"--mode server{model_name} (it redeploys the same model, nothing else changes)",
                )
            )
        if meta.get("pipeline") and backend.get_pipeline(meta["pipeline"]) is None:
            report.problems.append(
                Problem(
                    f"Pipeline {meta['pipeline']!r} of index {name!r} is missing: new documents get no vectors.",
                    f"Run: e5plugin pipeline install --index {name}",
                )
            )
    if caps.ml:
        report.models = [{"model_id": m.model_id, "state": m.state, **m.provenance} for m in backend.list_models()]
        _add_placement(backend, report)
    return report


def _add_placement(backend: Backend, report: Report) -> None:
    """Where each model runs (OpenSearch ml-commons: the nodes serving it) and a problem when a deployed model is
    served by no node, or by fewer nodes than its deployment asked for."""
    placement_of = getattr(backend, "model_placement", None)
    if placement_of is None:
        return
    for model in report.models:
        placement = placement_of(model["model_id"])
        model["nodes"] = placement["nodes"]
        model["planned_nodes"] = placement["planned_nodes"]
        if model["state"] not in HEALTHY_MODEL_STATES and not placement["nodes"]:
            continue  # undeployed on purpose, or already reported through an index that uses it
        redeploy = (
            f"Run: e5plugin deploy --model {model.get('source') or '<model>'} --index <its index> --mode server "
            f"--model-id {model.get('name') or model['model_id']} (redeploys it; --nodes chooses where)"
        )
        if not placement["nodes"]:
            report.problems.append(
                Problem(
                    f"Model {model['model_id']!r} is {model['state']} but no node serves it (after a restart or a "
                    "node loss ml-commons may not redeploy it): predictions and ingest fail.",
                    redeploy,
                )
            )
        elif len(placement["nodes"]) < placement["planned"]:
            missing = sorted(set(placement["planned_nodes"]) - set(placement["nodes"]))
            report.problems.append(
                Problem(
                    f"Model {model['model_id']!r} runs on {len(placement['nodes'])} of the {placement['planned']} "
                    f"nodes its deployment asked for (not on: {', '.join(missing) or 'unknown'}).",
                    f"Bring the node(s) back, or {redeploy[0].lower()}{redeploy[1:]}",
                )
            )


def _left_in_bulk_settings(backend: Backend, name: str, meta: dict) -> Problem | None:
    """An index a bulk load switched to ``refresh_interval: -1`` / 0 replicas and did not switch back (the process
    died mid-load): the values it had are in ``_meta.e5plugin.bulk_load`` until they are restored."""
    import json

    from .ingest import BULK_LOAD_META_KEY

    recorded = meta.get(BULK_LOAD_META_KEY)
    if not isinstance(recorded, dict):
        return None
    current = backend.index_settings(name, list(recorded))
    if current == recorded:
        return None  # restored by hand; the record is harmless (the next load restores the same values)
    now = ", ".join(f"{key} {value}" for key, value in current.items())
    body = json.dumps({"index": recorded})
    return Problem(
        f"Index {name!r} was left in bulk-load settings ({now}) by a load that did not finish (unless one runs "
        "now): no refresh means new documents are not searchable, no replicas means no redundancy.",
        f"Restore its values with: PUT /{name}/_settings {body} (null: the default); or run "
        f"`e5plugin ingest EMPTY.jsonl --index {name} --bulk-settings on` (an empty file will do): it restores them "
        "and clears the record.",
    )
