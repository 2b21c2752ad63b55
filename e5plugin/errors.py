"""The errors a user can cause, each with one clear sentence and a distinct CLI exit code."""

from __future__ import annotations


class E5PluginError(Exception):
    """Base class: ``str(err)`` is the one sentence shown to the user; ``exit_code`` is the CLI's."""

    exit_code = 1


class ConfigurationError(E5PluginError):
    exit_code = 2


class ClusterUnreachableError(E5PluginError):
    exit_code = 3


class AuthenticationError(E5PluginError):
    exit_code = 4


class MissingCapabilityError(E5PluginError):
    """The cluster lacks a plugin, a licence or ML capacity needed for what was asked."""

    exit_code = 5


class UnknownModelError(E5PluginError):
    exit_code = 6


class DimensionMismatchError(E5PluginError):
    exit_code = 7


class ModelNotDeployedError(E5PluginError):
    exit_code = 8


class IngestFailedError(E5PluginError):
    """Some documents could not be indexed; the report lists their ids and reasons."""

    exit_code = 9


class UnsupportedModelError(E5PluginError):
    """The engine's importer cannot take this model (e.g. eland has no ALBERT tokenizer)."""

    exit_code = 10


class ConflictError(E5PluginError):
    """Something with that name exists and differs; re-run with the replace option to overwrite it."""

    exit_code = 11


class PermissionDeniedError(E5PluginError):
    """The credentials are valid but lack a privilege the command needs (HTTP 403)."""

    exit_code = 12


class UndecidedPrefixesError(E5PluginError):
    """The model is not recognised and declares no prompts: the caller must choose its prefixes (or none)."""

    exit_code = 13


class IndexNotFoundError(ConfigurationError):
    """The named index (or alias) does not exist: a bad name, exit 2 like any other."""


class RequestRejectedError(E5PluginError):
    """The engine refused the request as malformed (HTTP 400: a filter on a field of another type, a bad value)."""

    exit_code = 14
