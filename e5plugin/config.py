"""The one home of e5plugin's connection settings, shared by the CLI and the Python API.

Each setting is declared once (:data:`SETTINGS`): its name is the CLI option (``--url``), the config-file key
(``"url"``) and, upper-cased with the ``E5PLUGIN_`` prefix, the environment variable (``E5PLUGIN_URL``). Whether it
is a secret (masked in every message and in ``--dry-run``) is part of the declaration. Precedence, highest first:
explicit value (flag or keyword argument) > environment variable > config file > default.

Credentials in a URL (``https://user:pass@host:9200``) are taken out of the URL and used as basic auth: the
clients would otherwise drop them silently, and the URL would carry the password into messages.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from .errors import ConfigurationError

MASK = "****"
ENV_PREFIX = "E5PLUGIN_"
#: Environment variable naming the config file (else :data:`DEFAULT_CONFIG_FILE` when it exists).
CONFIG_FILE_ENV = "E5PLUGIN_CONFIG"
DEFAULT_CONFIG_FILE = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "e5plugin" / "config.json"
ENGINES = ("auto", "elasticsearch", "opensearch")


@dataclass(frozen=True)
class Setting:
    """One connection setting: CLI option, environment variable and config-file key come from ``name``."""

    name: str
    help: str
    kind: str = "str"  # str | float | bool | list | choice | path
    default: object = None
    secret: bool = False
    choices: tuple[str, ...] = ()
    short: str | None = None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse(self, raw: object, origin: str) -> object:
        """``raw`` (a string from the environment, or a JSON value from the config file) as this setting's type."""
        try:
            if self.kind == "list":
                items = raw if isinstance(raw, list) else str(raw).replace(",", " ").split()
                return [str(item).strip() for item in items if str(item).strip()]
            if self.kind == "bool":
                if isinstance(raw, bool):
                    return raw
                text = str(raw).strip().lower()
                if text in ("1", "true", "yes", "on"):
                    return True
                if text in ("0", "false", "no", "off", ""):
                    return False
                raise ValueError(f"not a yes/no value: {raw!r}")
            if self.kind == "float":
                return float(raw)  # type: ignore[arg-type]
            text = str(raw)
            if self.choices and text not in self.choices:
                raise ValueError(f"{text!r} is not one of {', '.join(self.choices)}")
            return text
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"{origin}: invalid value for {self.name}: {exc}") from exc


SETTINGS: tuple[Setting, ...] = (
    Setting("url", "Cluster URL; repeat or comma-separate for several nodes.", "list", ["http://localhost:9200"]),
    Setting("cloud_id", "Elastic Cloud deployment id (instead of --url)."),
    Setting("username", "Basic-auth user.", short="-u"),
    Setting("password", "Basic-auth password (prefer the environment variable).", secret=True, short="-p"),
    Setting("api_key", "Elasticsearch API key (base64 id:key).", secret=True),
    Setting("ca_certs", "CA bundle (PEM) to verify the cluster's TLS certificate.", "path"),
    Setting("insecure", "Do not verify TLS certificates (explicit opt-in; avoid).", "bool", False),
    Setting("timeout", "Request timeout in seconds.", "float", 30.0),
    Setting("engine", "Which engine the URL points to; auto detects it.", "choice", "auto", choices=ENGINES),
)
SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
SECRET_SETTINGS: tuple[str, ...] = tuple(s.name for s in SETTINGS if s.secret)


def setting_for_key(key: str, origin: str) -> Setting:
    """The setting a config-file key or keyword names (``cloud-id`` and ``cloud_id`` both work)."""
    name = key.replace("-", "_")
    if name not in SETTINGS_BY_NAME:
        known = ", ".join(s.name for s in SETTINGS)
        raise ConfigurationError(f"{origin}: unknown setting {key!r} (known: {known}).")
    return SETTINGS_BY_NAME[name]


def read_config_file(path: Path | str) -> dict[str, object]:
    """A JSON object whose keys are option names (``{"url": "https://...", "username": "ops"}``), validated."""
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigurationError(f"Config file {path} does not exist.") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"Config file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"Config file {path} must hold a JSON object of settings.")
    values: dict[str, object] = {}
    for key, raw in data.items():
        setting = setting_for_key(key, f"config file {path}")
        values[setting.name] = setting.parse(raw, f"config file {path}")
    return values


def config_file_path(explicit: str | Path | None = None, env: Mapping[str, str] | None = None) -> Path | None:
    """The config file in force: an explicit path, else ``E5PLUGIN_CONFIG``, else the default one if it exists."""
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit).expanduser()
    if env.get(CONFIG_FILE_ENV):
        return Path(env[CONFIG_FILE_ENV]).expanduser()
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def environment_values(env: Mapping[str, str] | None = None) -> dict[str, object]:
    """Settings given by ``E5PLUGIN_*`` environment variables."""
    env = os.environ if env is None else env
    return {s.name: s.parse(env[s.env], f"environment variable {s.env}") for s in SETTINGS if env.get(s.env)}


def split_url_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``https://user:pass@host`` -> (``https://host``, user, pass); a URL without userinfo is returned as is."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None, None
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return clean, user, password


@dataclass
class ConnectionConfig:
    """How to reach a cluster: URLs or Cloud ID, credentials, TLS. Secrets never appear in repr or messages."""

    urls: list[str] = field(default_factory=lambda: ["http://localhost:9200"])
    cloud_id: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    ca_certs: str | None = None
    verify_certs: bool = True  # on by default; turning it off is an explicit opt-in (--insecure)
    request_timeout: float = 30.0
    max_retries: int = 3
    engine: str = "auto"

    def __post_init__(self) -> None:
        self.urls = self._urls_without_credentials(self.urls)
        if self.engine not in ENGINES:
            raise ConfigurationError(f"engine {self.engine!r} is not one of {', '.join(ENGINES)}.")

    def _urls_without_credentials(self, urls: Iterable[str]) -> list[str]:
        """Userinfo moves out of the URLs into username/password (one user for all URLs)."""
        clean: list[str] = []
        for raw in urls:
            for url in (u.strip() for u in str(raw).split(",")):
                if not url:
                    continue
                url, user, password = split_url_credentials(url)
                if user is not None:
                    if self.username is not None and self.username != user:
                        raise ConfigurationError(
                            f"The URL names user {user!r} but --username is {self.username!r}: give one user."
                        )
                    self.username = user
                    if password is not None:
                        self.password = password if self.password is None else self.password
                clean.append(url)
        return clean or ["http://localhost:9200"]

    @classmethod
    def from_settings(cls, values: Mapping[str, object]) -> ConnectionConfig:
        """A config from setting values keyed by setting name (missing ones take their defaults)."""
        for key in values:
            setting_for_key(key, "settings")
        get = {s.name: values.get(s.name, s.default) for s in SETTINGS}
        return cls(
            urls=list(get["url"] or []),  # type: ignore[arg-type]
            cloud_id=get["cloud_id"],  # type: ignore[arg-type]
            username=get["username"],  # type: ignore[arg-type]
            password=get["password"],  # type: ignore[arg-type]
            api_key=get["api_key"],  # type: ignore[arg-type]
            ca_certs=get["ca_certs"],  # type: ignore[arg-type]
            verify_certs=not get["insecure"],
            request_timeout=float(get["timeout"]),  # type: ignore[arg-type]
            engine=str(get["engine"]),
        )

    @classmethod
    def from_env(
        cls,
        config_file: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        **overrides: object,
    ) -> ConnectionConfig:
        """Settings as the CLI resolves them: ``overrides`` (setting names: ``url=``, ``username=``, ``timeout=``,
        ``insecure=``...) > ``E5PLUGIN_*`` variables > the config file > defaults. An unknown name is an error."""
        values: dict[str, object] = {}
        path = config_file_path(config_file, env)
        if path is not None:
            values.update(read_config_file(path))
        values.update(environment_values(env))
        for key, value in overrides.items():
            if value is None:
                continue
            setting = setting_for_key("url" if key == "urls" else key, "ConnectionConfig.from_env")
            values[setting.name] = setting.parse(value, f"argument {key}") if setting.kind == "list" else value
        return cls.from_settings(values)

    def secrets(self) -> list[str]:
        return [s for s in (self.password, self.api_key) if s]

    def mask(self, text: str) -> str:
        """``text`` with every secret of this config replaced by ``****``."""
        for secret in self.secrets():
            text = text.replace(secret, MASK)
        return text

    def masked(self) -> dict:
        """A printable view: secrets replaced by ``****``."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in SECRET_SETTINGS:
            if out[key]:
                out[key] = MASK
        return out

    def client_kwargs(self) -> dict:
        """Keyword arguments both official clients accept."""
        kwargs: dict = {
            "verify_certs": self.verify_certs,
            "request_timeout": self.request_timeout,
            "max_retries": self.max_retries,
            "retry_on_timeout": True,
        }
        if self.ca_certs:
            kwargs["ca_certs"] = self.ca_certs
        if not self.verify_certs:
            kwargs["ssl_show_warn"] = False
        return kwargs
