"""The `e5plugin` command line: parse options, call the Python API, print. No logic of its own.

One module per command group, each listing its commands in ``COMMANDS``; this module only builds the top-level
group and registers them (nothing imports back from here):

| module        | commands                                                            |
|---------------|---------------------------------------------------------------------|
| deploy        | deploy, pipeline install/show, index create                         |
| models        | model import/list/status/delete/pull/check-quantization             |
| ingest        | ingest, reindex                                                     |
| search        | search, doctor                                                      |
| usecases      | faq, dedup, calibrate, chunks, finetune, rollout, alias             |
| devcluster    | dev-cluster up/down/status/fetch, demo                              |

Connection options are generated from :mod:`e5plugin.config` (the one home of settings): each also comes from its
environment variable (``E5PLUGIN_URL``, ``E5PLUGIN_USERNAME``, ...) or from the config file (``--config``,
``E5PLUGIN_CONFIG``, default ~/.config/e5plugin/config.json) keyed by option name. Errors end with one sentence and a
distinct exit code (see :mod:`e5plugin.errors`); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import click

from . import deploy, devcluster, ingest, models, search, usecases
from .common import CONTEXT, E5Group, State, config_from_options, connection_options

COMMAND_MODULES = (deploy, models, ingest, search, usecases, devcluster)


@click.group(cls=E5Group, context_settings=CONTEXT)
@connection_options
@click.option("--debug", is_flag=True, envvar="E5PLUGIN_DEBUG", help="Show tracebacks.")
@click.version_option(package_name="e5plugin")
@click.pass_context
def cli(ctx: click.Context, debug: bool, **settings) -> None:
    """Put E5 embedding models to work in Elasticsearch and OpenSearch.

    \b
    Quick start (local node, offline model, sample data, searches):
      e5plugin demo
    Your own cluster:
      export E5PLUGIN_URL=https://search.example.com:9200 E5PLUGIN_USERNAME=... E5PLUGIN_PASSWORD=...
      e5plugin deploy --model intfloat/e5-small-v2 --index docs
      e5plugin ingest docs.jsonl --index docs
      e5plugin search "how do I reset my password" --index docs
    """
    try:
        config = config_from_options(settings)
    except Exception as exc:  # a bad setting value is a usage error, shown as one sentence
        raise click.UsageError(str(exc)) from exc
    ctx.obj = State(config, debug)


for _module in COMMAND_MODULES:
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    cli(prog_name="e5plugin")


if __name__ == "__main__":
    main()
