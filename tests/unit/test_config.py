"""One home for configuration: every connection setting works the same from a flag, an environment variable, the
config file and the Python API, and README's table says exactly what the CLI does."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from e5plugin.cli import cli
from e5plugin.config import SETTINGS, ConnectionConfig, split_url_credentials
from e5plugin.errors import ConfigurationError

README = Path(__file__).resolve().parents[2] / "README.md"
UNREACHABLE = "http://127.0.0.1:1"


def _readme_rows() -> dict[str, tuple[str, str, str]]:
    text = README.read_text()
    table = text[text.index("<!-- settings-table") : text.index("<!-- /settings-table -->")]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0].startswith("`--"):
            option = re.findall(r"`(--[a-z-]+)`", cells[0])[0]
            rows[option] = (cells[1].strip("`"), cells[2].strip("`"), cells[3])
    return rows


def test_every_connection_option_matches_readme_table():
    """Walk the CLI's top-level options: each has the env var and config key README documents, and no more."""
    rows = _readme_rows()
    params = {p.opts[0]: p for p in cli.params if isinstance(p, click.Option) and p.name not in ("config_file",)}
    params.pop("--debug")
    params.pop("--version", None)
    assert set(params) == set(rows), "README's settings table and the CLI's options differ"
    for option, param in params.items():
        env, key, secret = rows[option]
        assert param.envvar == env, option
        assert param.name == key, f"{option}: config-file key {key} but the option's name is {param.name}"
        declared = next(s for s in SETTINGS if s.option == option)
        assert (secret == "yes") == declared.secret, option


def test_documented_env_var_reaches_the_cli(monkeypatch):
    """`E5PLUGIN_URL` (as README, --help and `dev-cluster up` say) is the URL the CLI connects to."""
    monkeypatch.setenv("E5PLUGIN_URL", UNREACHABLE)
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 3, result.output
    assert "127.0.0.1:1" in result.output and "localhost:9200" not in result.output


def test_config_file_keys_are_the_option_names(tmp_path, monkeypatch):
    monkeypatch.delenv("E5PLUGIN_URL", raising=False)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"url": UNREACHABLE, "timeout": 2, "engine": "opensearch"}))
    result = CliRunner().invoke(cli, ["--config", str(config), "doctor"])
    assert result.exit_code == 3 and "127.0.0.1:1" in result.output, result.output
    monkeypatch.setenv("E5PLUGIN_CONFIG", str(config))
    result = CliRunner().invoke(cli, ["doctor"])
    assert "127.0.0.1:1" in result.output, result.output


def test_unknown_config_file_key_is_an_error_naming_it(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"urls": [UNREACHABLE]}))
    result = CliRunner().invoke(cli, ["--config", str(config), "doctor"])
    assert result.exit_code == 2
    assert "unknown setting 'urls'" in result.output and "url" in result.output


def test_precedence_flag_over_env_over_file(tmp_path, monkeypatch):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"url": "http://127.0.0.1:3", "username": "from-file"}))
    monkeypatch.setenv("E5PLUGIN_CONFIG", str(config))
    assert ConnectionConfig.from_env().urls == ["http://127.0.0.1:3"]
    monkeypatch.setenv("E5PLUGIN_URL", "http://127.0.0.1:2")
    resolved = ConnectionConfig.from_env()
    assert resolved.urls == ["http://127.0.0.1:2"] and resolved.username == "from-file"
    assert ConnectionConfig.from_env(url="http://127.0.0.1:1").urls == ["http://127.0.0.1:1"]
    result = CliRunner().invoke(cli, ["--url", UNREACHABLE, "doctor"])
    assert "127.0.0.1:1" in result.output


def test_python_api_takes_the_cli_names_and_refuses_unknown_ones(monkeypatch):
    monkeypatch.delenv("E5PLUGIN_URL", raising=False)
    config = ConnectionConfig.from_env(url="http://a:9200,http://b:9200", insecure=True, timeout=5)
    assert config.urls == ["http://a:9200", "http://b:9200"]
    assert config.verify_certs is False and config.request_timeout == 5
    with pytest.raises(ConfigurationError, match="unknown setting 'hosts'"):
        ConnectionConfig.from_env(hosts="http://a:9200")


def test_env_values_are_parsed_and_bad_ones_are_errors(monkeypatch):
    monkeypatch.setenv("E5PLUGIN_INSECURE", "yes")
    monkeypatch.setenv("E5PLUGIN_TIMEOUT", "12.5")
    config = ConnectionConfig.from_env()
    assert config.verify_certs is False and config.request_timeout == 12.5
    monkeypatch.setenv("E5PLUGIN_TIMEOUT", "soon")
    with pytest.raises(ConfigurationError, match="E5PLUGIN_TIMEOUT"):
        ConnectionConfig.from_env()


def test_url_credentials_become_basic_auth_and_leave_the_url():
    assert split_url_credentials("https://ops:s%40cret@search.example.com:9243/") == (
        "https://search.example.com:9243/",
        "ops",
        "s@cret",
    )
    config = ConnectionConfig(urls=["https://ops:Secr3t@h1:9200", "https://h2:9200"])
    assert config.urls == ["https://h1:9200", "https://h2:9200"]
    assert (config.username, config.password) == ("ops", "Secr3t")
    assert "Secr3t" not in json.dumps(config.masked()) and "Secr3t" not in repr(config)
    with pytest.raises(ConfigurationError, match="give one user"):
        ConnectionConfig(urls=["https://ops:x@h1"], username="someone-else")


def test_url_credentials_never_reach_output(monkeypatch):
    monkeypatch.delenv("E5PLUGIN_URL", raising=False)
    result = CliRunner().invoke(cli, ["--url", "http://ops:Secr3tPa55@127.0.0.1:1", "doctor"])
    assert result.exit_code == 3
    assert "Secr3tPa55" not in result.output and "127.0.0.1:1" in result.output
