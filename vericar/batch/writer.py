"""Rows to CSV, JSONL or Parquet, append-only and resumable.

``open_writer(path, columns)`` opens (or creates) the output; ``writer.done`` is the set of photos it
already holds, which a re-run skips, and ``writer.write(rows)`` appends one batch. How a crash or Ctrl-C
costs at most the batch in flight, and never leaves half a row:

- CSV / JSONL: a batch is one ``write`` of whole lines, flushed and fsynced. A run killed in the
  middle of one (a power cut) may leave a partial last line; reopening cuts the file back to its last
  complete row (for CSV: the last line end outside a quoted field) before appending.
- Parquet: a file cannot be appended to, so ``--out results.parquet`` is a folder of part files
  (``part-000000.parquet``, ...), the layout Spark, Ray and pandas read as one table
  (``pandas.read_parquet("results.parquet")``). Each batch is written to a temporary name and renamed
  into place, so a part is whole or absent. All parts keep one schema: when a batch brings a column or a
  type the folder has not seen (a batch of unreadable photos has only empty answer columns), the earlier
  parts are rewritten to the wider schema (rarely, and each part atomically again).
"""
from __future__ import annotations

import csv
import io
import json
import os
import uuid
from pathlib import Path
from typing import Any, Sequence

from vericar.core.errors import VericarError

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}


def open_writer(path: str | os.PathLike, columns: Sequence[str]) -> "CsvWriter | JsonlWriter | ParquetWriter":
    """The writer for ``path`` by its suffix (.csv, .jsonl, .parquet), over whatever it already holds."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise VericarError(f"--out {path}: expected a name ending in .csv, .jsonl or .parquet, e.g. results.csv.")
    if kind != "parquet" and path.is_dir():
        raise VericarError(f"--out {path} is a folder; give a file name, e.g. {path / 'results.csv'}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return {"csv": CsvWriter, "jsonl": JsonlWriter, "parquet": ParquetWriter}[kind](path, list(columns))
    except VericarError:
        raise
    except (ValueError, KeyError, IndexError, csv.Error, OSError) as e:  # ValueError: bad UTF-8 or Parquet (Arrow)
        raise VericarError(f"--out {path} exists but cannot be resumed ({type(e).__name__}: {e}); it was not "
                           "written by vericar identify, or was damaged. Give another --out.") from e


class _Writer:
    """What every format shares: ``done`` (photos already written) and the check that a re-run writes
    the same kind of rows (per photo or per vehicle) as the output already holds."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path, self.columns = path, columns
        self.done: set[str] = set()
        self.rows_written = 0

    def _check_kind(self, existing: Sequence[str]) -> None:
        if existing and ("vehicle" in existing) != ("vehicle" in self.columns):
            kind = "one row per vehicle (--all-vehicles)" if "vehicle" in existing else "one row per photo"
            raise VericarError(f"{self.path} holds {kind} from an earlier run, which this run would mix with "
                               "the other kind; give the same --all-vehicles setting to resume, or another --out.")

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            self._write(rows)
            self.done.update(r["file"] for r in rows)
            self.rows_written += len(rows)

    def _write(self, rows: Sequence[dict[str, Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Nothing is buffered between batches; kept so every writer can be closed the same way."""


def _append(path: Path, text: str) -> None:
    """Append ``text`` in one write, flushed to disk before returning (the batch is then safe)."""
    with path.open("a", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _cut(path: Path, keep: int) -> None:
    """Cut ``path`` to its first ``keep`` bytes (the half row a killed run left)."""
    with path.open("r+b") as f:
        f.truncate(keep)


class JsonlWriter(_Writer):
    """One JSON object per line."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        super().__init__(path, columns)
        if not path.is_file():
            return
        data = path.read_bytes()
        keep = data.rfind(b"\n") + 1
        lines = data[:keep].splitlines()
        for n, line in enumerate(lines, start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise VericarError(f"{path}, line {n}, is not a JSON row ({e}); it was not written by vericar "
                                   "identify, or was edited. Give another --out.") from e
            if n == 1:
                self._check_kind(list(row))
            self.done.add(row["file"])
        if keep < len(data):
            _cut(path, keep)

    def _write(self, rows: Sequence[dict[str, Any]]) -> None:
        _append(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _cell(value: Any) -> Any:
    """A value as a CSV cell: nested values as JSON, None as an empty cell."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return value


class CsvWriter(_Writer):
    """A header line, then one line per row; the header is fixed when the file is made."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        super().__init__(path, columns)
        if not path.is_file() or path.stat().st_size == 0:
            return
        text = path.read_bytes().decode("utf-8")
        keep = _last_row_end(text)
        rows = list(csv.reader(io.StringIO(text[:keep], newline="")))
        header = rows[0] if rows else []
        self._check_kind(header)
        if header != columns:
            raise VericarError(f"{path} has the columns {header}, but this run writes {columns} (another vericar "
                               "version or model); give another --out, or write .jsonl / .parquet.")
        self.done.update(r[0] for r in rows[1:] if r)
        if keep < len(text):
            _cut(path, len(text[:keep].encode("utf-8")))

    def _write(self, rows: Sequence[dict[str, Any]]) -> None:
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, self.columns, lineterminator="\n")
        if not self.path.is_file() or self.path.stat().st_size == 0:
            w.writeheader()
        w.writerows({k: _cell(v) for k, v in r.items()} for r in rows)
        _append(self.path, buf.getvalue())


def _last_row_end(text: str) -> int:
    """Where the last complete CSV row of ``text`` ends: after the last line end outside a quoted field
    (an even number of quote characters before it, as the csv module writes quotes doubled)."""
    end = len(text)
    while end > 0:
        nl = text.rfind("\n", 0, end)
        if nl < 0:
            return 0
        if text.count('"', 0, nl) % 2 == 0:
            return nl + 1
        end = nl
    return 0


class ParquetWriter(_Writer):
    """A folder of part files sharing one schema (see the module docstring)."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        import pyarrow.parquet as pq

        super().__init__(path, columns)
        if path.exists() and not path.is_dir():
            raise VericarError(f"--out {path} is a file; a .parquet output is a folder of part files here (so a "
                               "crash loses at most one batch). Give a new name, e.g. results.parquet.")
        path.mkdir(parents=True, exist_ok=True)
        for tmp in path.glob(".*.tmp"):  # a part a killed run was writing: never renamed, so never counted
            tmp.unlink()
        self.schema = None
        for part in self._parts():
            schema = pq.read_schema(part)
            self._check_kind(schema.names)
            self.schema = self._wider(schema)
            self.done.update(pq.read_table(part, columns=["file"]).column("file").to_pylist())

    def _parts(self) -> list[Path]:
        return sorted(self.path.glob("part-*.parquet"))

    def _wider(self, schema: Any) -> Any:
        import pyarrow as pa

        if self.schema is None:
            return schema
        return pa.unify_schemas([self.schema, schema], promote_options="permissive")

    def _put(self, table: Any, name: str) -> None:
        """Write ``table`` as ``name`` in the folder: a temporary file, synced, then renamed into place."""
        import pyarrow.parquet as pq

        tmp = self.path / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
        pq.write_table(table, tmp)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.path / name)

    def _write(self, rows: Sequence[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([{c: r.get(c) for c in self.columns} | r for r in rows])
        wider = self._wider(table.schema)
        if self.schema is not None and not wider.equals(self.schema):
            for part in self._parts():  # rare: the first batch with a column / type the parts lack
                self._put(_conform(pq.read_table(part), wider), part.name)
        self.schema = wider
        parts = self._parts()
        n = int(parts[-1].stem.split("-")[1]) + 1 if parts else 0
        self._put(_conform(table, wider), f"part-{n:06d}.parquet")


def _conform(table: Any, schema: Any) -> Any:
    """``table`` with exactly ``schema``'s columns and types (a missing column: all nulls)."""
    import pyarrow as pa

    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
            for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)
