"""What every command module shares: the error-to-exit-code group, the state passed to commands (connection and
backend), the connection options generated from :mod:`e5plugin.config`, and output helpers.

Command modules import from here; nothing here imports a command module.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .. import errors
from ..config import CONFIG_FILE_ENV, SETTINGS, ConnectionConfig, config_file_path, read_config_file

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


class UserError(click.ClickException):
    """An e5plugin error shown as one sentence with its own exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class State:
    """What the top-level options resolved to; the backend connects on first use."""

    def __init__(self, config: ConnectionConfig, debug: bool) -> None:
        self.config = config
        self.debug = debug
        self._backend = None

    @property
    def engine(self) -> str:
        return self.config.engine

    @property
    def backend(self):
        if self._backend is None:
            from ..engines import connect

            self._backend = connect(self.config)
        return self._backend


class E5Group(click.Group):
    """Turns e5plugin errors into one-line messages with distinct exit codes (tracebacks only with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except errors.E5PluginError as exc:
            if _debug(ctx):
                raise
            raise UserError(_scrub(str(exc), ctx), exc.exit_code) from exc
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:
            if _debug(ctx):
                raise
            message = f"unexpected {type(exc).__name__}: {exc} (re-run with --debug for the traceback)"
            raise UserError(_scrub(message, ctx), 1) from exc


def _debug(ctx: click.Context) -> bool:
    state = ctx.find_object(State)
    return bool(state and state.debug) or os.environ.get("E5PLUGIN_DEBUG") == "1"


def _scrub(text: str, ctx: click.Context) -> str:
    state = ctx.find_object(State)
    return state.config.mask(text) if state else text


# ---- connection options, generated from the settings declared in e5plugin.config ----------------------------------
def _load_config_file(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Config-file values become the defaults of the options (flags and environment variables still win)."""
    path = config_file_path(value)
    if path is None:
        return value
    try:
        values = read_config_file(path)
    except errors.ConfigurationError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from exc
    ctx.default_map = {**values, **(ctx.default_map or {})}
    return value


def _setting_option(setting) -> Callable:
    declarations = [setting.option] + ([setting.short] if setting.short else [])
    kwargs: dict[str, Any] = {"envvar": setting.env, "show_envvar": True, "help": setting.help}
    if setting.kind == "bool":
        kwargs.update(is_flag=True, default=setting.default)
    elif setting.kind == "list":
        kwargs.update(multiple=True)
    elif setting.kind == "float":
        kwargs.update(type=float, default=setting.default, show_default=True)
    elif setting.kind == "choice":
        kwargs.update(type=click.Choice(list(setting.choices)), default=setting.default, show_default=True)
    elif setting.kind == "path":
        kwargs.update(type=click.Path(exists=True, dir_okay=False))
    return click.option(*declarations, setting.name, **kwargs)


def connection_options(func: Callable) -> Callable:
    """``--config`` plus one option per connection setting (env var ``E5PLUGIN_<NAME>``, config key ``<name>``)."""
    for setting in reversed(SETTINGS):
        func = _setting_option(setting)(func)
    return click.option(
        "--config",
        "config_file",
        callback=_load_config_file,
        is_eager=True,
        expose_value=False,
        envvar=CONFIG_FILE_ENV,
        show_envvar=True,
        help='JSON file of settings keyed by option name, e.g. {"url": "https://...", "username": "ops"} '
        "(default ~/.config/e5plugin/config.json when it exists).",
    )(func)


def config_from_options(values: dict[str, Any]) -> ConnectionConfig:
    """The connection config from the resolved option values (click already applied env vars and the file)."""
    values = dict(values)
    values["url"] = list(values.get("url") or ()) or None
    return ConnectionConfig.from_settings({k: v for k, v in values.items() if v is not None})


# ---- output helpers -----------------------------------------------------------------------------------------------
def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def mode_option(
    default: str = "auto",
    help: str = "server: the cluster embeds (ML); client: e5plugin embeds locally. auto: server when the cluster can.",
):
    return click.option(
        "--mode", type=click.Choice(["auto", "server", "client"]), default=default, show_default=True, help=help
    )


def chosen_mode(backend, mode: str, chunked: bool = False):
    """server / client; auto: server when the cluster can run the model (and, for chunked indices, embed passages)."""
    from ..models import KNOWN_MODELS
    from ..prefixes import Mode

    if mode != "auto":
        return Mode(mode)
    if not backend.capabilities.ml:
        return Mode.CLIENT
    if chunked:
        plan = backend.prefix_plan(KNOWN_MODELS["intfloat/e5-small-v2"], Mode.SERVER)
        try:
            backend.chunked_pipeline_body("probe", plan, text_field="text", passages_field="p", vector_field="v")
        except errors.MissingCapabilityError:
            return Mode.CLIENT
    return Mode.SERVER


def progress_bar(label: str, disable: bool):
    """A rich progress bar on stderr (stdout stays clean for JSON), shown only on a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=disable or not sys.stderr.isatty(),
        transient=True,
        console=Console(stderr=True),
    )


def echo_dry_run(state: State, backend, planned_requests) -> None:
    """What a ``--dry-run`` would have sent, secrets masked."""
    click.echo(f"# dry run against {backend.engine} {backend.capabilities.version_text}: nothing was sent")
    click.echo(f"# connection: {json.dumps(state.config.masked())}")
    for planned in planned_requests:
        note = f"  # {planned.note}" if planned.note else ""
        click.echo(f"{planned.method} {planned.path}{note}")
        if planned.body is not None:
            click.echo(state.config.mask(json.dumps(planned.body, indent=2, ensure_ascii=False)))


_PREFIX_CHOICE = "e5plugin.prefix_choice"


def _remember_prefix_choice(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    ctx.meta.setdefault(_PREFIX_CHOICE, {})[param.name] = value
    return value


def prefix_options(func: Callable) -> Callable:
    """``--query-prefix``, ``--passage-prefix`` and ``--no-prefixes`` for every command that takes ``--model``:
    the explicit choice a model e5plugin does not recognise (and that declares no prompts) needs."""
    options = [
        click.option(
            "--query-prefix",
            callback=_remember_prefix_choice,
            expose_value=False,
            help="Override the model's query prefix ('' for none).",
        ),
        click.option(
            "--passage-prefix",
            callback=_remember_prefix_choice,
            expose_value=False,
            help="Override the model's passage prefix ('' for none).",
        ),
        click.option(
            "--no-prefixes",
            is_flag=True,
            callback=_remember_prefix_choice,
            expose_value=False,
            help="The model takes no prefixes (needed for a model e5plugin does not recognise and that declares "
            "no prompts).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def resolve_model_arg(model: str):
    """A model spec for ``--model`` (a local directory, a known hub id, or, downloaded, any other hub id), with the
    prefix choice the command's :func:`prefix_options` received."""
    from ..models import KNOWN_MODELS, resolve_model

    ctx = click.get_current_context(silent=True)
    choice = (ctx.meta.get(_PREFIX_CHOICE, {}) if ctx else {}) or {}
    download = not Path(model).expanduser().is_dir() and model not in KNOWN_MODELS
    return resolve_model(
        model,
        query_prefix=choice.get("query_prefix"),
        passage_prefix=choice.get("passage_prefix"),
        download=download,
        no_prefixes=bool(choice.get("no_prefixes")),
    )
