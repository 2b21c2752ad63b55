"""Reading input files as a user hands them over: encodings, BOMs, CSV/TSV, huge fields, ids and checkpoints.
No cluster needed: these are the reader's and the checkpoint's promises (issue 12, defects 1, 2 and 13)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from e5plugin.errors import ConfigurationError
from e5plugin.ingest import Checkpoint, open_input, read_documents, stable_id


def _read(path: Path, fmt: str = "jsonl") -> list:
    stream, _ = open_input(str(path))
    with stream:
        return list(read_documents(stream, fmt))


# ---- defect 13: input -----------------------------------------------------------------------------------------
def test_a_line_with_invalid_utf8_is_reported_and_the_rest_is_read(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(
        b'{"id": "1", "text": "fine"}\n'
        + '{"id": "2", "text": "caf\u00e9"}\n'.encode("latin-1")  # one Latin-1 line in a UTF-8 file
        + b'{"id": "3", "text": "also fine \xe2\x9c\x93"}\n'
    )
    records = _read(path)
    assert [r.line for r in records] == [1, 2, 3]
    assert records[0].doc == {"id": "1", "text": "fine"} and records[2].doc["text"] == "also fine \u2713"
    assert records[1].doc is None and "UTF-8" in records[1].error and "0xe9" in records[1].error
    assert not any("\ufffd" in json.dumps(r.doc) for r in records if r.doc)


def test_invalid_utf8_in_a_csv_row_fails_that_row_only(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_bytes(b"id,text\n1,good\n2,caf\xe9\n3,also good\n")
    records = _read(path, "csv")
    assert [r.doc for r in records if r.doc] == [{"id": "1", "text": "good"}, {"id": "3", "text": "also good"}]
    bad = [r for r in records if r.doc is None]
    assert len(bad) == 1 and bad[0].line == 3 and "UTF-8" in bad[0].error


def test_csv_byte_order_mark_does_not_hide_the_first_header(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffid,text\r\n1,hello\r\n".encode())
    assert [r.doc for r in _read(path, "csv")] == [{"id": "1", "text": "hello"}]
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes('\ufeff{"id": "1", "text": "hello"}\n'.encode())
    assert [r.doc for r in _read(jsonl)] == [{"id": "1", "text": "hello"}]


def test_csv_field_over_131072_characters_is_read(tmp_path):
    path = tmp_path / "big.csv"
    big = "word " * 60_000  # 300,000 characters, in quotes across a newline too
    path.write_text(f'id,text\n1,"{big}\nsecond line"\n2,small\n', encoding="utf-8")
    records = _read(path, "csv")
    assert [r.doc["id"] for r in records] == ["1", "2"] and records[0].doc["text"] == big + "\nsecond line"
    assert [r.line for r in records] == [2, 4]  # the physical line each record starts on


def test_tsv_rows_and_rows_with_too_many_fields(tmp_path):
    path = tmp_path / "rows.tsv"
    path.write_text("id\ttext\n1\ta, b and c\n2\ttoo\tmany\n", encoding="utf-8")
    records = _read(path, "tsv")
    assert records[0].doc == {"id": "1", "text": "a, b and c"}
    assert records[1].doc is None and "3 fields" in records[1].error


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("a.csv", "csv"), ("A.CSV", "csv"), ("b.tsv", "tsv"), ("B.TSV", "tsv"), ("c.jsonl", "jsonl"), ("-", "jsonl")],
)
def test_format_follows_the_suffix_in_any_case(name, fmt):
    from e5plugin.ingest import input_format

    assert input_format(name) == fmt


def test_a_missing_input_is_a_configuration_error_naming_it(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(ConfigurationError, match=r"nope\.jsonl"):
        open_input(str(missing))
    with pytest.raises(ConfigurationError, match="is a directory"):
        open_input(str(tmp_path))


# ---- defect 1: what identifies a record ---------------------------------------------------------------------------
def test_generated_ids_follow_the_content_not_the_file_name_or_line():
    doc = {"text": "same record", "lang": "en"}
    assert stable_id(doc, "id") == stable_id({"lang": "en", "text": "same record"}, "id")  # key order is no content
    assert stable_id(doc, "id") != stable_id({"text": "another record", "lang": "en"}, "id")
    assert stable_id({"id": 7, "text": "x"}, "id") == "7"  # an id field wins
    assert stable_id({"id": "", "text": "x"}, "id") == stable_id({"id": "", "text": "x"}, None)


def test_records_of_two_files_with_one_name_get_distinct_ids(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder / "p.jsonl").write_text(
            "".join(json.dumps({"text": f"{folder} {i}"}) + "\n" for i in range(50))
        )
    ids = {stable_id(r.doc, "id") for f in ("a", "b") for r in _read(tmp_path / f / "p.jsonl")}
    assert len(ids) == 100


# ---- defect 2: the checkpoint ---------------------------------------------------------------------------------
def test_a_corrupt_checkpoint_is_named_when_resuming_and_ignored_otherwise(tmp_path):
    path = tmp_path / "ckpt.json"
    path.write_text("{half a json")
    with pytest.raises(ConfigurationError, match=str(path)):
        Checkpoint(path)
    fresh = Checkpoint(path, load=False)  # a fresh run overwrites it
    assert fresh.done == 0


def test_records_carry_marks_of_the_consumed_prefix(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b"}\n', encoding="utf-8")
    first, second = _read(path)
    assert first.mark.offset == len('{"text": "a"}\n') and second.mark.offset == path.stat().st_size
    changed = tmp_path / "changed.jsonl"
    changed.write_text('{"text": "A"}\n\n{"text": "b"}\n', encoding="utf-8")
    assert _read(changed)[1].mark != second.mark  # same length, another prefix
