"""Shared fixtures for Elasticsearch contract tests."""

from __future__ import annotations

import pytest

from .es_spec import Spec, SpecUnavailableError, load_spec


@pytest.fixture(scope="session")
def es_spec() -> Spec:
    """The pinned Elasticsearch API spec; skips (never fails) only when it cannot be downloaded at all."""
    try:
        return load_spec()
    except SpecUnavailableError as exc:
        pytest.skip(f"Elasticsearch API spec not cached and npm registry unreachable: {exc}")
