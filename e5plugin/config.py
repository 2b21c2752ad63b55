"""How to reach a cluster: URLs or Cloud ID, credentials, TLS. Secrets never appear in repr or logs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

SECRET_FIELDS = ("password", "api_key")
MASK = "****"


@dataclass
class ConnectionConfig:
    urls: list[str] = field(default_factory=lambda: ["http://localhost:9200"])
    cloud_id: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    ca_certs: str | None = None
    verify_certs: bool = True  # on by default; turning it off is an explicit opt-in (--insecure)
    request_timeout: float = 30.0
    max_retries: int = 3

    @classmethod
    def from_env(cls, **overrides: object) -> ConnectionConfig:
        """Environment variables ``E5PLUGIN_URL`` (comma-separated), ``E5PLUGIN_USERNAME``, ... then overrides."""
        env = os.environ
        config = cls()
        if env.get("E5PLUGIN_URL"):
            config.urls = [u.strip() for u in env["E5PLUGIN_URL"].split(",") if u.strip()]
        for f in fields(cls):
            key = f"E5PLUGIN_{f.name.upper()}"
            if f.name != "urls" and key in env:
                setattr(config, f.name, _coerce(f.type, env[key]))
        for key, value in overrides.items():
            if value is not None:
                setattr(config, key, value)
        return config

    def masked(self) -> dict:
        """A printable view: secrets replaced by ``****``."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in SECRET_FIELDS:
            if out[key]:
                out[key] = MASK
        return out

    def secrets(self) -> list[str]:
        return [s for s in (self.password, self.api_key) if s]

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


def _coerce(kind: object, raw: str) -> object:
    text = str(kind)
    if "bool" in text:
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if "float" in text:
        return float(raw)
    if "int" in text:
        return int(raw)
    return raw
