"""Rows of records as text: CSV (RFC 4180 quoting) and JSON lines, for files and pipes."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any


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


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float):
        return None if not math.isfinite(value) else float(f"{value:.7g}")
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def json_line(record: dict[str, Any]) -> str:
    return json.dumps({k: _clean(v) for k, v in record.items()}) + "\n"
