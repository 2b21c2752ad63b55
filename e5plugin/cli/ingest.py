"""`ingest` (files or stdin, resumable) and `reindex` (backfill documents without vectors)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import click

from .. import errors
from .common import State, echo_json, progress_bar

SPARK_HELP = (
    "Embed and write on Apache Spark executors (client-mode indices; pip install 'e5plugin[spark]'): the same "
    "model, prefixes and ids; a failed task is retried without duplicates."
)


@click.command()
@click.argument("source", type=click.Path(allow_dash=True))
@click.option("--index", "-i", required=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "jsonl", "csv", "tsv"]),
    default="auto",
    show_default=True,
    help="auto: by suffix, any case (.csv, .tsv/.tab; else JSON Lines). Input is UTF-8; a BOM is ignored.",
)
@click.option(
    "--id-field",
    default="id",
    show_default=True,
    help="Field holding the document id (else: derived from the record's content; identical records are one).",
)
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--resume", is_flag=True, help="Continue after an interrupted run (skips what is safely stored).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write the failure report (JSON) here.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--bulk-settings",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="Load with refresh_interval -1 and 0 replicas, restored afterwards (also on Ctrl-C); auto: on only for a "
    "file of 10 MB or more into an empty index (a live index is changed only with on).",
)
@click.option(
    "--embed-backend",
    type=click.Choice(["auto", "torch", "onnx", "onnx-int8"]),
    default="auto",
    show_default=True,
    help="Client mode: what runs the model. auto: ONNX int8 where `model check-quantization` accepted it, else fp32 "
    "on ONNX Runtime where the model's graph is at hand (`model pull --source maven` keeps it; torch's vectors, "
    "1.66x faster), else torch. onnx: exports the graph once if needed (minutes).",
)
@click.option("--spark", "use_spark", is_flag=True, help=SPARK_HELP)
@click.option("--master", help="With --spark: the Spark master URL (default: the active session, else local[*]).")
@click.pass_obj
def ingest(
    state: State,
    source,
    index,
    fmt,
    id_field,
    batch_size,
    resume,
    report_path,
    as_json,
    bulk_settings,
    embed_backend,
    use_spark=False,
    master=None,
):
    """Bulk-index a JSON Lines, CSV or TSV file (or - for stdin) into an index made by `deploy`.

    \b
    Example:
      e5plugin ingest docs.jsonl --index docs
      cat docs.jsonl | e5plugin ingest - --index docs --resume
      e5plugin ingest big.jsonl --index docs --spark --master spark://host:7077
    """

    from ..ingest import Checkpoint, checkpoint_path, input_about, input_format, open_input, read_documents
    from ..ingest import ingest as run_ingest
    from ..prefixes import Mode
    from ..search import IndexSetup

    stream, name = open_input(source)  # a missing input is a clear error before any model loads
    backend = state.backend
    meta = backend.index_meta(index) if backend.index_exists(index) else {}
    if not meta:
        raise errors.ConfigurationError(f"Index {index!r} was not set up by e5plugin: run `e5plugin deploy` first.")
    setup = IndexSetup.from_meta(meta)
    if use_spark:
        if source != "-":
            stream.close()
        return _spark_ingest(state, source, index, fmt, id_field, resume, embed_backend, master, as_json, report_path)
    embedder = None
    if setup.mode is Mode.CLIENT:
        from ..embed import Embedder, parse_backend_label

        backend_name, quantize = parse_backend_label(embed_backend)
        embedder = Embedder(setup.spec, plan=setup.plan, backend=backend_name, quantize=quantize)
    from ..backfill import bulk_settings_wanted  # auto: only for a big first load into an empty index

    size = Path(source).stat().st_size if source != "-" else None
    bulk_settings = "on" if bulk_settings_wanted(backend, index, bulk_settings, size) else "off"
    if fmt == "auto":
        fmt = input_format(source)
    checkpoint = Checkpoint(checkpoint_path(index, source), load=False, about={"index": index, **input_about(source)})
    what = f"{'stdin' if source == '-' else repr(source)} into {index!r}"
    closing = contextlib.nullcontext() if source == "-" else stream
    with closing, checkpoint.locked(what), progress_bar("ingest", as_json) as bar:
        if resume:  # read under the lock: the checkpoint this run continues, verified against this input
            checkpoint = Checkpoint(checkpoint.path, load=True, about=checkpoint.about)
        else:
            checkpoint.clear()  # a fresh run: an old (even unreadable) checkpoint goes
        task = bar.add_task("ingest", total=None)
        report = run_ingest(
            backend,
            index,
            read_documents(stream, fmt),
            text_field=setup.text_field,
            vector_field=setup.vector_field,
            embedder=embedder,
            id_field=id_field,
            source_name=name,
            batch_size=batch_size,
            checkpoint=checkpoint,
            progress=lambda n: bar.advance(task, n),
            refresh=True,
            bulk_settings=bulk_settings == "on",
        )
        if report.ok:  # nothing to resume; failed rows keep it, stopped at the first of them
            checkpoint.clear()
    if report_path:
        Path(report_path).write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(
            f"indexed {report.indexed}, without vector {report.without_vector}, failed {report.failed}"
            + (f", skipped (resumed) {report.skipped}" if report.skipped else "")
        )
        for failure in report.failures[:20]:
            where = " ".join(f"{k} {v}" for k, v in (("line", failure.line), ("id", failure.id)) if v)
            click.echo(f"  failed {where}: {failure.reason}", err=True)
        if len(report.failures) > 20:
            click.echo(f"  ... {len(report.failures) - 20} more (use --report FILE)", err=True)
    if not report.ok:
        raise errors.IngestFailedError(
            f"{report.failed} documents failed (see the list above); fix them and re-run, good rows are stored."
        )


def _checkpoint_path(index: str, source: str) -> Path:
    """Kept for callers of the old name: :func:`e5plugin.ingest.checkpoint_path`."""
    from ..ingest import checkpoint_path

    return checkpoint_path(index, source)


@click.command()
@click.option("--index", "-i", required=True)
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--spark", "use_spark", is_flag=True, help=SPARK_HELP)
@click.option("--master", help="With --spark: the Spark master URL (default: the active session, else local[*]).")
@click.pass_obj
def reindex(state: State, index, batch_size, use_spark=False, master=None):
    """Backfill: embed documents that have no vector yet or whose embedding failed.

    \b
    Example:
      e5plugin reindex --index docs
      e5plugin reindex --index docs --spark --master local[2]
    """
    from ..backfill import backfill
    from ..search import SemanticSearch

    if use_spark:
        from ..spark import reindex_with_spark

        report = reindex_with_spark(index, master=master, backend=state.backend)
    else:
        helper = SemanticSearch.for_index(index, backend=state.backend)
        report = backfill(
            state.backend,
            index,
            helper.setup,
            batch_size=batch_size,
            progress=lambda done, total: click.echo(f"\r{done}/{total}", nl=False, err=True),
        )
    click.echo(
        f"\nre-embedded {report.indexed}, still without vector {report.without_vector}, failed {report.failed}"
        + (f", edited meanwhile (kept; re-run to embed them) {report.conflicts}" if report.conflicts else "")
    )
    if not report.ok or report.without_vector:
        raise errors.IngestFailedError(f"{report.failed + report.without_vector} documents still have no vector.")


def _spark_ingest(state: State, source, index, fmt, id_field, resume, embed_backend, master, as_json, report_path):
    """`ingest --spark`: a JSON Lines file split across the executors (see e5plugin.spark.ingest_jsonl)."""
    from ..ingest import input_format
    from ..spark import ingest_jsonl

    if source == "-" or (input_format(source) if fmt == "auto" else fmt) != "jsonl":
        raise errors.ConfigurationError(
            "--spark reads a JSON Lines file (a path every executor can read), not stdin, CSV or TSV."
        )
    if resume:
        raise errors.ConfigurationError("--spark has no --resume: re-run the job (the same ids overwrite themselves).")
    chosen = None if embed_backend == "auto" else embed_backend
    report = ingest_jsonl(
        source, index=index, master=master, id_field=id_field, embed_backend=chosen, backend=state.backend
    )
    if report_path:
        Path(report_path).write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(f"indexed {report.indexed}, without vector {report.without_vector}, failed {report.failed}")
        for failure in report.failures[:20]:
            click.echo(f"  failed {failure.id or ''}: {failure.reason}", err=True)
    if not report.ok:
        raise errors.IngestFailedError(f"{report.failed} documents failed; fix them and re-run, good rows are stored.")


COMMANDS = (ingest, reindex)
