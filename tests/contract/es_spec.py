"""Contract checks for Elasticsearch REST requests against the official API specification.

The compiled `elasticsearch-specification` model ships as ``dist/schema.json`` inside the npm package
``@elastic/request-converter``. :func:`load_spec` downloads the pinned tarball once (plain HTTPS, integrity
checked, no node/npm needed), caches the extracted schema and returns a :class:`Spec` whose
:meth:`Spec.validate_request` reports every way a request deviates from the spec.

Model reference: ``dist/metamodel.d.ts`` in the same package. Notable semantics implemented here:

* ``type_alias`` / ``_types.integer`` etc. resolve down to ``_builtins``; integer aliases also reject fractions.
* ``variants.kind == "container"``: at most one variant key, plus any ``containerProperty`` keys; empty is an error.
* ``variants.kind == "internal_tag"``: the member is picked by the tag property (``defaultTag`` when absent).
* ``behaviors`` ``AdditionalProperties<K, V>`` / ``AdditionalProperty<K, V>`` open an interface to extra keys.
* ``shortcutProperty``: a non-object value stands for ``{shortcut: value}`` (e.g. ``{"match": {"f": "text"}}``).
* ``nonExhaustive`` variants (plugins may add more) are treated as closed unless ``allow_unknown_variants``:
  our requests only use built-in processors/queries/field types, and a typo there is exactly what we want to catch.
"""

from __future__ import annotations

import base64
import contextlib
import difflib
import functools
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SPEC_PACKAGE = "@elastic/request-converter"
SPEC_VERSION = "9.5.0"
SPEC_INTEGRITY = "sha512-PEcvvCtE/pthy+WWQ4AELymWMOLHTm7yjANDMozcmIY8NT9vTlJmeEGL/0fD3lQ1lCkriPrZwallasDRj3vX+w=="
DEFAULT_REGISTRY = "https://registry.npmjs.org"

TypeKey = tuple[str, str]  # (namespace, name)
Env = Mapping[TypeKey, tuple[dict, "Env"]]  # generic parameter -> (bound ValueOf, env it is evaluated in)

_ANY: dict = {"kind": "user_defined_value"}
_INTEGERS = {("_types", n) for n in ("byte", "short", "integer", "long", "uint", "ulong")}
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SpecUnavailableError(RuntimeError):
    """The spec is not cached and the npm registry could not be reached."""


# -------------------- loading


def default_cache_dir() -> Path:
    """``$E5PLUGIN_SPEC_CACHE``, else ``$E5PLUGIN_CACHE/spec``, else ``${XDG_CACHE_HOME:-~/.cache}/e5plugin/spec``."""
    if env := os.environ.get("E5PLUGIN_SPEC_CACHE"):
        return Path(env)
    if env := os.environ.get("E5PLUGIN_CACHE"):
        return Path(env) / "spec"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "e5plugin" / "spec"


def tarball_url(version: str = SPEC_VERSION) -> str:
    """The registry tarball URL (``npm_config_registry`` / ``NPM_CONFIG_REGISTRY`` select a mirror)."""
    names = ("npm_config_registry", "NPM_CONFIG_REGISTRY")
    registry = next((os.environ[n] for n in names if os.environ.get(n)), DEFAULT_REGISTRY)
    return f"{registry.rstrip('/')}/{SPEC_PACKAGE}/-/{SPEC_PACKAGE.split('/')[1]}-{version}.tgz"


def _fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=120) as resp:
            return resp.read()
    except urllib.error.HTTPError:
        raise  # the registry answered: a real error (e.g. version unpublished), not "offline"
    except (urllib.error.URLError, OSError) as exc:
        raise SpecUnavailableError(f"cannot download {url}: {exc}") from exc


def _extract_schema(tarball: bytes, integrity: str) -> bytes:
    algo, _, expected = integrity.partition("-")
    actual = base64.b64encode(hashlib.new(algo, tarball).digest()).decode()
    if actual != expected:
        raise ValueError(
            f"integrity mismatch for {SPEC_PACKAGE}@{SPEC_VERSION}: expected {integrity}, got {algo}-{actual}"
        )
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        member = tar.extractfile("package/dist/schema.json")
        if member is None:
            raise ValueError("package/dist/schema.json is not a regular file in the tarball")
        return member.read()


def load_spec(cache_dir: Path | None = None) -> Spec:
    """Return the pinned Elasticsearch spec, downloading it into ``cache_dir`` on first use.

    Raises :class:`SpecUnavailableError` when it is not cached and the registry is unreachable,
    ``ValueError`` when the downloaded tarball does not match :data:`SPEC_INTEGRITY`.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache_dir / f"request-converter-{SPEC_VERSION}-schema.json"
    if not target.is_file():
        schema = _extract_schema(_fetch(tarball_url()), SPEC_INTEGRITY)
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".schema-", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(schema)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache may be shared
        os.replace(tmp, target)  # atomic: concurrent test workers never see a partial file
    return _parse(str(target.resolve()), target.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _parse(path: str, _mtime: int) -> Spec:
    return Spec(json.loads(Path(path).read_bytes()))


# -------------------- validation


@dataclass(frozen=True)
class _Err:
    path: str
    msg: str
    mismatch: bool = False  # the value at `path` has the wrong basic shape (used to rank union members)

    def __str__(self) -> str:
        return f"{self.path}: {self.msg}"


def _key(name: Mapping[str, str]) -> TypeKey:
    return name["namespace"], name["name"]


def _child(at: str, key: object) -> str:
    if isinstance(key, int):
        return f"{at}[{key}]"
    return f"{at}.{key}" if _IDENT.fullmatch(str(key)) else f"{at}[{str(key)!r}]"


def _jtype(v: object) -> str:
    if v is None:
        return "null"
    for t, name in ((bool, "boolean"), (int, "number"), (float, "number"), (str, "string"), (dict, "object")):
        if isinstance(v, t):
            return name
    return "array" if isinstance(v, list | tuple) else type(v).__name__


def _suggest(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


class Spec:
    """The compiled Elasticsearch API model plus a request validator.

    ``allow_unknown_variants=True`` accepts unknown variants of ``nonExhaustive`` containers/tagged unions
    (plugin-provided processors, queries, field types...) as the spec permits; the default rejects them.
    """

    version = SPEC_VERSION

    def __init__(self, model: dict, *, allow_unknown_variants: bool = False) -> None:
        self.model = model
        self.allow_unknown_variants = allow_unknown_variants
        self.types: dict[TypeKey, dict] = {_key(t["name"]): t for t in model["types"]}
        self.endpoints: dict[str, dict] = {e["name"]: e for e in model["endpoints"]}
        self._flat_cache: dict[TypeKey, tuple] = {}
        self._tag_cache: dict[TypeKey, dict[Any, dict]] = {}

    # -------------------- public API

    def endpoint(self, name: str) -> dict:
        try:
            return self.endpoints[name]
        except KeyError:
            raise KeyError(f"unknown endpoint {name!r}{_suggest(name, self.endpoints)}") from None

    def request_type(self, endpoint: str) -> dict:
        req = self.endpoint(endpoint)["request"]
        if req is None:
            raise KeyError(f"endpoint {endpoint!r} has no request type in the spec")
        return self.types[_key(req)]

    def find_endpoint(self, method: str, url: str) -> tuple[str, dict[str, str]]:
        """Map e.g. ``("PUT", "/_ml/trained_models/m/definition/0")`` to ``(endpoint name, path params)``.

        The most specific template wins (most literal segments), so ``GET /_search`` is ``search``, not
        ``indices.get`` with ``index="_search"``. Raises ``LookupError`` when nothing matches.
        """
        segments = url.split("?", 1)[0].strip("/").split("/")
        best: tuple[int, str, dict[str, str]] | None = None
        for ep in self.model["endpoints"]:
            for tpl in ep["urls"]:
                if method.upper() not in tpl["methods"]:
                    continue
                parts = tpl["path"].strip("/").split("/")
                if len(parts) != len(segments):
                    continue
                params: dict[str, str] = {}
                for p, s in zip(parts, segments, strict=True):
                    if p.startswith("{") and p.endswith("}") and s:
                        params[p[1:-1]] = s
                    elif p != s:
                        break
                else:
                    score = len(parts) - len(params)
                    if best is None or score > best[0]:
                        best = (score, ep["name"], params)
        if best is None:
            raise LookupError(f"no endpoint matches {method} {url}")
        return best[1], best[2]

    def validate_request(
        self,
        endpoint: str,
        body: Any = None,
        *,
        path: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """Human-readable contract violations of a request to ``endpoint`` (``[]`` when it is valid).

        ``body`` is the JSON document (``None`` = no body). ``path`` holds URL path parameters; when given, the
        set of names must match one of the endpoint's URL templates (``None`` skips path checks). ``query`` holds
        query-string parameters, as Python values or their string forms (``"true"``, ``"5"``, ``"a,b"``).
        Raises ``KeyError`` for an unknown endpoint name.
        """
        ep = self.endpoint(endpoint)
        req = self.request_type(endpoint)
        errs: list[_Err] = []
        if path is not None:
            errs += self._check_path(ep, req, path)
        if query:
            errs += self._check_params("query", self._query_props(req), query)
        errs += self._check_body(ep, req, body)
        return [str(e) for e in errs]

    # -------------------- request parts

    def _check_path(self, ep: dict, req: dict, path: Mapping[str, Any]) -> list[_Err]:
        props = {p["name"]: p for p in req["path"]}
        errs = self._check_params("path", props, path)
        given = set(path) & set(props)
        templates = [tpl["path"] for tpl in ep["urls"]]
        if not any(set(re.findall(r"\{(\w+)\}", t)) == given for t in templates) and len(errs) == 0:
            errs.append(_Err("path", f"no URL of {ep['name']} takes exactly {sorted(given)}; URLs: {templates}"))
        return errs

    def _query_props(self, req: dict) -> dict[str, dict]:
        props = {p["name"]: p for p in req["query"]}
        for behavior in req.get("attachedBehaviors", []):
            if behavior in ("CommonQueryParameters", "CommonCatQueryParameters"):
                for p in self.types[("_spec_utils", behavior)]["properties"]:
                    props.setdefault(p["name"], p)
        return props

    def _check_params(self, where: str, props: dict[str, dict], values: Mapping[str, Any]) -> list[_Err]:
        errs: list[_Err] = []
        for name, value in values.items():
            at = _child(where, name)
            if name not in props:
                errs.append(_Err(at, f"unknown {where} parameter{_suggest(name, props)}; known: {sorted(props)}"))
            else:
                errs += _Validator(self, param_mode=True).value(props[name]["type"], value, at, {})
        return errs

    def _check_body(self, ep: dict, req: dict, body: Any) -> list[_Err]:
        spec_body = req["body"]
        if body is None:
            return [_Err("body", "request body is required")] if ep.get("requestBodyRequired") else []
        if spec_body["kind"] == "no_body":
            return [_Err("body", f"{ep['name']} takes no request body")]
        v = _Validator(self)
        if spec_body["kind"] == "value":
            return v.value(spec_body["value"], body, "body", {})
        name = {"namespace": req["name"]["namespace"], "name": f"{ep['name']} body"}  # for messages
        pseudo = {"kind": "interface", "name": name, "properties": spec_body["properties"]}
        if "inherits" in req:  # a parent request type may contribute body properties
            pseudo["inherits"] = req["inherits"]
        return v.interface(pseudo, body, "body", {})

    # -------------------- type helpers

    def bind(self, t: dict, args: list[dict] | None, env: Env) -> Env:
        """Environment binding ``t``'s open generic parameters to ``args`` (unbound ones become "any")."""
        params = t.get("generics") or []
        args = args or []
        return {_key(p): (args[i], env) if i < len(args) else (_ANY, {}) for i, p in enumerate(params)}

    def flatten(self, t: dict, env: Env) -> tuple[dict[str, tuple[dict, Env]], dict[str, str], list[tuple]]:
        """Properties of interface ``t`` including inherited ones (name -> (Property, env)), the alias -> name map,
        and the extra-key behaviors ``(behavior, key ValueOf, value ValueOf, env)`` along the inheritance chain."""
        cacheable = not env and not t.get("generics") and "specLocation" in t
        if cacheable and _key(t["name"]) in self._flat_cache:
            return self._flat_cache[_key(t["name"])]
        props: dict[str, tuple[dict, Env]] = {}
        aliases: dict[str, str] = {}
        extras: list[tuple] = []
        cur: dict | None = t
        while cur is not None:
            for p in cur.get("properties", []):
                if p["name"] not in props:  # a subclass redefinition wins
                    props[p["name"]] = (p, env)
                    aliases.update({a: p["name"] for a in p.get("aliases", [])})
            for b in cur.get("behaviors", []):
                if b["type"]["name"] in ("AdditionalProperties", "AdditionalProperty"):
                    k, v = (b.get("generics") or [_ANY, _ANY])[:2]
                    extras.append((b["type"]["name"], k, v, env))
            inherits = cur.get("inherits")
            if not inherits:
                break
            parent = self.types[_key(inherits["type"])]
            env = self.bind(parent, inherits.get("generics"), env)
            cur = parent
        if not extras and "AdditionalProperties" in t.get("attachedBehaviors", []):
            extras.append(("AdditionalProperties", _ANY, _ANY, {}))  # declared somewhere we do not model: stay open
        result = (props, aliases, extras)
        if cacheable:
            self._flat_cache[_key(t["name"])] = result
        return result

    def tagged_members(self, t: dict) -> dict[Any, dict]:
        """Tag value -> member ``ValueOf`` of an internally tagged union alias (from each member's literal tag)."""
        key = _key(t["name"])
        if key not in self._tag_cache:
            tag = t["variants"]["tag"]
            members = {}
            for item in t["type"]["items"]:
                prop = self.flatten(self.types[_key(item["type"])], {})[0].get(tag)
                if prop and prop[0]["type"]["kind"] == "literal_value":
                    members[prop[0]["type"]["value"]] = item
            self._tag_cache[key] = members
        return self._tag_cache[key]

    def describe(self, v: dict, depth: int = 0) -> str:
        kind = v["kind"]
        if kind == "instance_of":
            return v["type"]["name"]
        if kind == "array_of":
            return f"{self.describe(v['value'], depth + 1)}[]"
        if kind == "union_of":
            inner = " | ".join(self.describe(i, depth + 1) for i in v["items"])
            return f"({inner})" if depth else inner
        if kind == "dictionary_of":
            return f"Dict<{self.describe(v['key'], depth + 1)}, {self.describe(v['value'], depth + 1)}>"
        if kind == "literal_value":
            return json.dumps(v["value"])
        return "any"


class _Validator:
    """Walks a JSON value alongside a ``ValueOf`` of the model. ``param_mode`` accepts URL string forms."""

    def __init__(self, spec: Spec, *, param_mode: bool = False) -> None:
        self.spec = spec
        self.param_mode = param_mode

    def _mismatch(self, at: str, expected: str, data: object) -> list[_Err]:
        return [_Err(at, f"expected {expected}, got {_jtype(data)} {json.dumps(data, default=str)[:60]}", True)]

    def value(self, v: dict, data: Any, at: str, env: Env) -> list[_Err]:
        kind = v["kind"]
        if kind == "instance_of":
            return self.instance(v, data, at, env)
        if kind == "array_of":
            if self.param_mode and isinstance(data, str):
                data = data.split(",")
            if not isinstance(data, list | tuple):
                return self._mismatch(at, f"array of {self.spec.describe(v['value'])}", data)
            return [e for i, item in enumerate(data) for e in self.value(v["value"], item, _child(at, i), env)]
        if kind == "union_of":
            return self.union(v, data, at, env)
        if kind == "dictionary_of":
            return self.dictionary(v, data, at, env)
        if kind == "literal_value":
            lit = v["value"]
            ok = data == lit and isinstance(data, bool) == isinstance(lit, bool)
            ok = ok or (self.param_mode and isinstance(data, str) and data == str(lit).lower())
            return [] if ok else self._mismatch(at, json.dumps(lit), data)
        if kind == "user_defined_value":
            return []
        raise ValueError(f"unsupported ValueOf kind {kind!r}")

    def instance(self, v: dict, data: Any, at: str, env: Env) -> list[_Err]:
        key = _key(v["type"])
        if key in env:  # an open generic parameter of an enclosing type
            bound, bound_env = env[key]
            return self.value(bound, data, at, bound_env)
        if key[0] == "_builtins":
            return self.builtin(key[1], data, at)
        if key in _INTEGERS:
            return self.number(data, at, integral=True)
        t = self.spec.types.get(key)
        if t is None:  # unbound generic parameter (e.g. TDocument of a generic request): user data
            return []
        t_env = self.spec.bind(t, v.get("generics"), env)
        if t["kind"] == "type_alias":
            if t.get("variants", {}).get("kind") == "internal_tag":
                return self.internal_tag(t, data, at, t_env)
            return self.value(t["type"], data, at, t_env)
        if t["kind"] == "enum":
            return self.enum(t, data, at)
        if t["kind"] == "interface":
            return self.interface(t, data, at, t_env)
        raise ValueError(f"{at}: cannot validate against {t['kind']} {key}")

    def builtin(self, name: str, data: Any, at: str) -> list[_Err]:
        if name == "string":
            return [] if isinstance(data, str) else self._mismatch(at, "string", data)
        if name == "boolean":
            ok = isinstance(data, bool) or (self.param_mode and data in ("true", "false", ""))  # `?pretty` = true
            return [] if ok else self._mismatch(at, "boolean", data)
        if name == "number":
            return self.number(data, at, integral=False)
        if name == "null":
            return [] if data is None else self._mismatch(at, "null", data)
        if name == "binary":
            return []
        raise ValueError(f"{at}: unsupported builtin type {name!r}")

    def number(self, data: Any, at: str, *, integral: bool) -> list[_Err]:
        if self.param_mode and isinstance(data, str):
            with contextlib.suppress(ValueError):
                data = int(data) if integral else float(data)
        if not _is_number(data):
            return self._mismatch(at, "integer" if integral else "number", data)
        if integral and isinstance(data, float) and not data.is_integer():
            return self._mismatch(at, "integer", data)
        return []

    def enum(self, t: dict, data: Any, at: str) -> list[_Err]:
        names = {n for m in t["members"] for n in (m["name"], *m.get("aliases", []))}
        if isinstance(data, bool):  # e.g. DynamicMapping, Refresh: booleans that grew into enums
            data = str(data).lower()
        if isinstance(data, str) and (data in names or t.get("isOpen")):
            return []
        return self._mismatch(at, f"one of {sorted(names)} ({t['name']['name']})", data)

    def union(self, v: dict, data: Any, at: str, env: Env) -> list[_Err]:
        candidates = []
        for item in v["items"]:
            errs = self.value(item, data, at, env)
            if not errs:
                return []
            if not any(e.mismatch and e.path == at for e in errs):
                candidates.append(errs)
        if not candidates:  # no member even has the right shape
            return self._mismatch(at, self.spec.describe(v), data)
        return min(candidates, key=len)  # report against the closest member

    def dictionary(self, v: dict, data: Any, at: str, env: Env) -> list[_Err]:
        if not isinstance(data, dict):
            return self._mismatch(at, self.spec.describe(v), data)
        errs: list[_Err] = []
        if v.get("singleKey") and len(data) != 1:
            errs.append(_Err(at, f"expected an object with exactly one key, got {sorted(data)}"))
        keys = _Validator(self.spec, param_mode=True)
        for k, item in data.items():
            errs += [_Err(e.path, f"invalid key: {e.msg}") for e in keys.value(v["key"], k, _child(at, k), env)]
            errs += self.value(v["value"], item, _child(at, k), env)
        return errs

    def internal_tag(self, t: dict, data: Any, at: str, env: Env) -> list[_Err]:
        variants = t["variants"]
        tag = variants["tag"]
        if not isinstance(data, dict):
            return self._mismatch(at, f"object ({t['name']['name']})", data)
        members = self.spec.tagged_members(t)
        value = data.get(tag, variants.get("defaultTag"))
        if value in members:
            return self.value(members[value], data, at, env)
        if variants.get("nonExhaustive") and self.spec.allow_unknown_variants and isinstance(value, str):
            return []
        where = _child(at, tag) if tag in data else at
        return [_Err(where, f"unknown {t['name']['name']} {tag} {value!r}{_suggest(str(value), members)}", True)]

    def interface(self, t: dict, data: Any, at: str, env: Env) -> list[_Err]:
        name = t["name"]["name"]
        props, aliases, extras = self.spec.flatten(t, env)
        if not isinstance(data, dict):
            shortcut = t.get("shortcutProperty")
            if shortcut and shortcut in props:
                prop, prop_env = props[shortcut]
                return self.value(prop["type"], data, at, prop_env)
            return self._mismatch(at, f"object ({name})", data)
        variants = t.get("variants") if t.get("variants", {}).get("kind") == "container" else None
        errs: list[_Err] = []
        seen: dict[str, str] = {}
        unknown: list[str] = []
        for key, item in data.items():
            prop_name = aliases.get(key, key)
            if prop_name not in props:
                unknown.append(key)
                continue
            if prop_name in seen:
                errs.append(_Err(_child(at, key), f"duplicates {seen[prop_name]!r} (alias of the same property)"))
            seen[prop_name] = key
            prop, prop_env = props[prop_name]
            errs += self.value(prop["type"], item, _child(at, key), prop_env)
        for prop_name, (prop, _) in props.items():
            if prop.get("required") and prop_name not in seen:
                errs.append(_Err(at, f"missing required property {prop_name!r} ({name})"))
        if variants is not None:
            chosen = [k for k, p in seen.items() if not props[k][0].get("containerProperty")]
            if not chosen and len(unknown) == 1 and variants.get("nonExhaustive") and self.spec.allow_unknown_variants:
                return errs  # a plugin-provided variant
            if len(chosen) > 1:
                errs.append(_Err(at, f"{name} takes exactly one variant, got {sorted(chosen)}"))
            elif not seen and not unknown:  # container properties alone are accepted: {"weight": 2} is a function
                errs.append(_Err(at, f"{name} needs one variant key", True))
        errs += self.extra_keys(name, props, aliases, extras, {k: data[k] for k in unknown}, at, variants is not None)
        return errs

    def extra_keys(
        self, name: str, props: dict, aliases: dict, extras: list[tuple], data: dict, at: str, container: bool
    ) -> list[_Err]:
        """Keys not declared on the interface: allowed only through AdditionalProperty/-ies behaviors."""
        if not data:
            return []
        if extras:
            behavior, key_type, value_type, env = extras[0]
            errs = []
            if behavior == "AdditionalProperty" and len(data) > 1:
                errs.append(_Err(at, f"{name} takes a single extra (field) key, got {sorted(data)}"))
            v = {"kind": "dictionary_of", "key": key_type, "value": value_type, "singleKey": False}
            return errs + self.dictionary(v, data, at, env)
        what = "variant" if container else "property"
        known = [*props, *aliases]
        return [_Err(_child(at, k), f"unknown {what} of {name}{_suggest(k, known)}") for k in data]
