"""Rows of records as text: CSV (RFC 4180 quoting) and JSON lines, for files and pipes."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from aecli.io.files import atomic_output, leader_writes


def csv_field(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.7g}"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = "" if value is None else str(value)
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def csv_lines(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterable[str]:
    yield ",".join(columns) + "\n"
    for row in rows:
        yield ",".join(csv_field(v) for v in row) + "\n"


def _clean(value: Any, rounded: bool = True) -> Any:
    """JSON has no NaN or infinity: they become null; scores are rounded as CSV rounds them."""
    if isinstance(value, float):
        return None if not math.isfinite(value) else float(f"{value:.7g}") if rounded else value
    if isinstance(value, list):
        return [_clean(v, rounded) for v in value]
    return value


def json_line(record: dict[str, Any], rounded: bool = True) -> str:
    return json.dumps({k: _clean(v, rounded) for k, v in record.items()}) + "\n"


def records_text(records: list[dict[str, Any]], fmt: str) -> Iterable[str]:
    """Records as csv (header from the first), jsonl, or one json array."""
    if fmt == "json":
        yield json.dumps([{k: _clean(v) for k, v in r.items()} for r in records], indent=1) + "\n"
    elif fmt == "jsonl":
        yield from (json_line(r) for r in records)
    else:
        columns = list(records[0]) if records else ["path", "score", "threshold", "anomalous"]
        yield from csv_lines(columns, ([r.get(c) for c in columns] for r in records))


@leader_writes
def write_records(records: list[dict[str, Any]], fmt: str, out: Path | None = None) -> None:
    """Records as csv, jsonl or json to `out` (atomically), or to stdout when out is None."""
    if out is None:
        sys.stdout.writelines(records_text(records, fmt))
        return
    with atomic_output(out) as f:
        for line in records_text(records, fmt):
            f.write(line.encode())
