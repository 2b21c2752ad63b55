"""Pure functions that build request bodies, one module per engine.

The live path sends exactly these objects, ``--dry-run`` prints them and the contract tests validate them.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ..errors import ConfigurationError
from ..prefixes import Actor, PrefixPlan

ERROR_FIELD = "e5plugin_error"
#: Temporary field the pipeline writes ``passage: `` + text into, when the cluster cannot add prefixes itself.
PASSAGE_TMP_FIELD = "_e5plugin_passage"
META_KEY = "e5plugin"
#: A field name e5plugin puts into mappings, pipelines and scripts: dot-separated parts of letters, digits, ``_``,
#: ``@`` and ``-`` (not first). No quotes, backslashes, spaces or wildcards, so it can never escape a script string.
FIELD_NAME_RE = re.compile(r"[A-Za-z0-9_@][A-Za-z0-9_@\-]*(?:\.[A-Za-z0-9_@][A-Za-z0-9_@\-]*)*")
FIELD_NAME_MAX = 255


def validate_field_name(kind: str, name: object) -> str:
    """``name`` if it is a safe (dotted) field name, else a ConfigurationError naming the ``kind`` field."""
    if not isinstance(name, str) or len(name) > FIELD_NAME_MAX or not FIELD_NAME_RE.fullmatch(name):
        raise ConfigurationError(
            f"Invalid {kind} field name {name!r}: use letters, digits, '_', '@' or '-' in dot-separated parts "
            f"(e.g. 'embedding' or 'doc.vector'), at most {FIELD_NAME_MAX} characters."
        )
    return name


@dataclass
class PlannedRequest:
    """One request as it would be sent (what ``--dry-run`` prints and the live path sends)."""

    method: str
    path: str
    body: dict | None = None
    note: str = ""


def _mappings_dir() -> Path:
    packaged = Path(__file__).resolve().parent.parent / "mappings"  # in a wheel (force-included)
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "mappings"


@cache
def _template(engine: str) -> str:
    return (_mappings_dir() / engine / "index.json").read_text()


def index_template(engine: str) -> dict:
    """A fresh copy of ``mappings/<engine>/index.json``."""
    return json.loads(_template(engine))


def rename_fields(properties: dict, text_field: str, vector_field: str) -> dict:
    """Move the template's ``text``/``embedding`` to the chosen names (dotted names become object paths)."""
    out = {k: v for k, v in properties.items() if k not in ("text", "embedding")}
    for name, definition in ((text_field, properties["text"]), (vector_field, properties["embedding"])):
        node = out
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {"properties": {}})["properties"]
        node[leaf] = copy.deepcopy(definition)
    return out


def on_failure_processors(engine_extra: dict | None = None) -> list[dict]:
    """Keep the document and record why its embedding failed (no silent loss)."""
    return [
        {"set": {"field": f"{ERROR_FIELD}.reason", "value": "{{ _ingest.on_failure_message }}"}},
        {"set": {"field": f"{ERROR_FIELD}.processor", "value": "{{ _ingest.on_failure_processor_type }}"}},
        {"set": {"field": f"{ERROR_FIELD}.at", "value": "{{ _ingest.timestamp }}"}},
        {"remove": {"field": PASSAGE_TMP_FIELD, "ignore_missing": True}},
        *([engine_extra] if engine_extra else []),
    ]


#: Painless that checks the text and, when the pipeline must add the passage prefix, writes prefix + text into the
#: temporary field. A missing, empty or non-string text fails the document into ``on_failure`` (kept, marked).
#: User-chosen values (field path, prefix) arrive only as ``params``, never spliced into the source.
TEXT_SCRIPT = (
    "def v = ctx; for (p in params.path) { if (!(v instanceof Map) || !v.containsKey(p)) { v = null; break; } "
    "v = v[p]; } "
    "if (!(v instanceof String) || v.trim().isEmpty()) { "
    "throw new IllegalArgumentException('text field [' + params.field + '] is missing, empty or not a string'); } "
    "if (params.target != null) { ctx[params.target] = params.prefix + v; }"
)


def text_processor(plan: PrefixPlan, text_field: str) -> dict:
    """Validate the text; write ``passage: `` + text into the temporary field when the pipeline prefixes."""
    prefixed_here = plan.ingest is Actor.PIPELINE
    return {
        "script": {
            "lang": "painless",
            "source": TEXT_SCRIPT,
            "params": {
                "path": text_field.split("."),
                "field": text_field,
                "target": PASSAGE_TMP_FIELD if prefixed_here else None,
                "prefix": plan.passage_prefix if prefixed_here else "",
            },
        }
    }


def clear_marker_processor() -> dict:
    """First step of every pipeline: a re-embedded document (backfill) loses an old failure marker."""
    return {"remove": {"field": ERROR_FIELD, "ignore_missing": True}}


def e5plugin_meta(**fields: object) -> dict:
    return {META_KEY: {k: v for k, v in fields.items() if v is not None}}


# ---- long documents (nested passages), keyword fields, aliases ------------------------------------------------------
def nest_passages(properties: dict, field: str) -> dict:
    """Turn the object ``field`` (holding the passage vector after :func:`rename_fields`) into a ``nested`` array of
    passages: ``{text, start, end, <vector>}``. Both engines score a parent by its best nested vector."""
    node = properties
    *parents, leaf = field.split(".")
    for part in parents:
        node = node[part]["properties"]
    passages = node[leaf]
    passages["type"] = "nested"
    passages["properties"].update({"text": {"type": "text"}, "start": {"type": "integer"}, "end": {"type": "integer"}})
    return properties


def add_keyword_fields(properties: dict, fields: tuple[str, ...] | list[str]) -> dict:
    """Exact-match fields for filters (``lang``: a language code), unless the template already maps them."""
    for name in fields:
        node = properties
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {"properties": {}})["properties"]
        node.setdefault(leaf, {"type": "keyword"})
    return properties


#: Painless for pipelines that add ``passage: `` themselves (clusters without prefix support), chunked indices:
#: each passage gets prefix + text in a temporary field, which the embedding processor reads.
PASSAGES_PREFIX_SCRIPT = (
    "def list = ctx[params.field]; if (list == null) { return; } "
    "for (def p : list) { if (p instanceof Map && p.containsKey('text')) { "
    "p[params.target] = params.prefix + p.text; } }"
)
PASSAGES_CLEANUP_SCRIPT = (
    "def list = ctx[params.field]; if (list == null) { return; } "
    "for (def p : list) { if (p instanceof Map) { p.remove(params.target); } }"
)


def alias_actions_body(alias: str, add: str, remove: list[str] | tuple[str, ...] = ()) -> dict:
    """One atomic ``_aliases`` request: the alias leaves ``remove`` and points at ``add`` in the same step."""
    actions: list[dict] = [{"remove": {"index": index, "alias": alias}} for index in remove]
    actions.append({"add": {"index": add, "alias": alias}})
    return {"actions": actions}
