"""Connection settings against a real secured node: URL credentials, environment variables and config files."""

from __future__ import annotations

import json
from urllib.parse import quote, urlsplit

import pytest
from click.testing import CliRunner

from e5plugin.cli import cli

pytestmark = pytest.mark.secured


def _url_with_credentials(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{quote(user)}:{quote(password, safe='')}@{parts.netloc}{parts.path}"


def test_credentials_in_the_url_are_sent_and_never_printed(secured_elasticsearch, monkeypatch):
    """`https://user:pass@host` works like --username/--password (urllib3 alone would drop them)."""
    for var in ("E5PLUGIN_USERNAME", "E5PLUGIN_PASSWORD", "E5PLUGIN_URL"):
        monkeypatch.delenv(var, raising=False)
    password = secured_elasticsearch.password
    url = _url_with_credentials(secured_elasticsearch.url, "elastic", password)
    ok = CliRunner().invoke(cli, ["--url", url, "doctor", "--json"])
    assert ok.exit_code in (0, 1), ok.output  # 1: doctor found problems; the point is it got in
    assert json.loads(ok.stdout)["engine"] == "elasticsearch"
    assert password not in ok.output
    wrong = _url_with_credentials(secured_elasticsearch.url, "elastic", "Wrong-Pa55word")
    refused = CliRunner().invoke(cli, ["--url", wrong, "doctor"])
    assert refused.exit_code == 4, refused.output
    assert "Wrong-Pa55word" not in refused.output
    dry = CliRunner().invoke(cli, ["--url", url, "deploy", "-m", "x", "-i", "y", "--dry-run"])
    assert password not in dry.output


def test_credentials_from_environment_and_config_file(secured_elasticsearch, tmp_path, monkeypatch):
    monkeypatch.setenv("E5PLUGIN_URL", secured_elasticsearch.url)
    monkeypatch.setenv("E5PLUGIN_USERNAME", "elastic")
    monkeypatch.setenv("E5PLUGIN_PASSWORD", secured_elasticsearch.password)
    from_env = CliRunner().invoke(cli, ["doctor", "--json"])
    assert json.loads(from_env.stdout)["engine"] == "elasticsearch", from_env.output
    for var in ("E5PLUGIN_URL", "E5PLUGIN_USERNAME", "E5PLUGIN_PASSWORD"):
        monkeypatch.delenv(var)
    config = tmp_path / "e5plugin.json"
    settings = {"url": secured_elasticsearch.url, "username": "elastic", "password": secured_elasticsearch.password}
    config.write_text(json.dumps(settings))
    monkeypatch.setenv("E5PLUGIN_CONFIG", str(config))
    from_file = CliRunner().invoke(cli, ["doctor", "--json"])
    assert json.loads(from_file.stdout)["engine"] == "elasticsearch", from_file.output
