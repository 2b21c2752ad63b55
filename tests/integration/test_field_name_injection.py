"""A field name is never spliced into painless: a malicious ``_meta.e5plugin.vector_field`` written straight into an
index on the real Elasticsearch node, and a malicious ``--vector-field``, are refused (exit 2) before any script or
write is sent. (Exact search on Elasticsearch puts the field into a painless ``script_score``; the test node has no
painless module, so the tests check the refusal, not the injected score.)"""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from e5plugin.cli import cli
from e5plugin.deploy import DeployRequest, deploy
from e5plugin.embed import Embedder
from e5plugin.errors import ConfigurationError
from e5plugin.ingest import ingest
from e5plugin.models import resolve_model
from e5plugin.prefixes import Mode
from e5plugin.search import SemanticSearch

#: closes the quoted field name, adds 1000 to every score, and reopens a quote for the rest of the script
INJECTED = "embedding') * 0.0 + 1000.0 + cosineSimilarity(params.query_vector, 'embedding"


@pytest.mark.elasticsearch
def test_malicious_meta_vector_field_is_refused(es_backend, elasticsearch, tiny_e5_bert):
    index = f"t-h3-meta-injection-{os.getpid()}"
    spec = resolve_model(str(tiny_e5_bert))
    es_backend.delete_index(index)
    try:
        result = deploy(es_backend, spec, DeployRequest(index=index, mode=Mode.CLIENT, replicas=0))
        embedder = Embedder(spec, plan=result.setup.plan)
        docs = [{"id": "a", "text": "how to reset a password"}, {"id": "b", "text": "delivery takes three days"}]
        assert ingest(es_backend, index, docs, embedder=embedder, refresh=True).ok
        honest = SemanticSearch.for_index(index, backend=es_backend, embedder=embedder)
        assert honest.search("password", k=2)[0].id == "a"

        meta = {**es_backend.index_meta(index), "vector_field": INJECTED}
        es_backend.client.indices.put_mapping(index=index, body={"_meta": {"e5plugin": meta}})
        with pytest.raises(ConfigurationError, match="vector field"):
            SemanticSearch.for_index(index, backend=es_backend, embedder=embedder)

        cli_search = CliRunner().invoke(cli, ["--url", elasticsearch.url, "search", "password", "--index", index])
        assert cli_search.exit_code == ConfigurationError.exit_code, cli_search.output
        assert "vector field" in cli_search.output and "Traceback" not in cli_search.output
    finally:
        es_backend.delete_index(index)


@pytest.mark.elasticsearch
def test_malicious_vector_field_option_is_refused_before_any_write(es_backend, elasticsearch, tiny_e5_bert):
    index = f"t-h3-option-injection-{os.getpid()}"
    es_backend.delete_index(index)
    args = ["--url", elasticsearch.url, "deploy", "-m", str(tiny_e5_bert), "-i", index, "--vector-field", INJECTED]
    try:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == ConfigurationError.exit_code, result.output
        assert "vector field" in result.output and "Traceback" not in result.output
        assert not es_backend.index_exists(index)
        text = CliRunner().invoke(cli, [*args[:-2], "--text-field", "text'] + 1; //"])
        assert text.exit_code == ConfigurationError.exit_code and "text field" in text.output
        assert not es_backend.index_exists(index)
    finally:
        es_backend.delete_index(index)
