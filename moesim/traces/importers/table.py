"""Generic long table: one row per (sequence, token, layer), from CSV, Parquet or JSONL.

Rows may come in any order; cells are placed by (sequence, token position, layer). Expert ids are
one column holding a JSON array (``"[3, 17]"``, or a list column in Parquet/JSONL) or k columns;
weights likewise, optionally. An optional ``phase`` column ("prefill"/"decode") splits prompt rows off.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moesim.errors import MoesimInputError, fail
from moesim.traces.importers.common import (
    ID_MAX,
    describe_sources,
    jsonl_objects,
    offsets_from_lengths,
    ordered_unique,
    rank_by_weight,
)
from moesim.traces.trace import Trace, TraceMeta

_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}


# Rows parsed per chunk: a large text table is never held whole as Python objects.
_CHUNK_ROWS = 200_000


@dataclass
class _Rows:
    """A chunk of the table (or, with ``df=None``, the whole table's row origins) plus where each
    row came from, for error messages."""

    df: pd.DataFrame | None
    files: list[Path]
    kinds: list[str]
    file_of: np.ndarray  # row -> index into files
    line_of: np.ndarray  # row -> line number (text files) or row number (parquet)

    def loc(self, i: int) -> str:
        f = int(self.file_of[i])
        word = "row" if self.kinds[f] == "parquet" else "line"
        return f"{self.files[f]} {word} {int(self.line_of[i])}"

    @property
    def typed(self) -> bool:
        """True for files that carry types (JSONL, Parquet): there a string is not a number."""
        return self.kinds[int(self.file_of[0])] != "csv" if len(self.file_of) else False

    @property
    def frame(self) -> pd.DataFrame:
        assert self.df is not None
        return self.df


def _kind(path: Path) -> str:
    kind = _EXTENSIONS.get(path.suffix.lower())
    if kind is None:
        fail(f"{path}: unknown table extension {path.suffix!r}; use one of {', '.join(sorted(_EXTENSIONS))}")
    return {"tsv": "csv"}.get(kind, kind)


def _jsonl_chunks(path: Path) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    records: list[dict] = []
    lines: list[int] = []
    for n, rec in jsonl_objects(path):
        records.append(rec)
        lines.append(n)
        if len(records) == _CHUNK_ROWS:
            yield pd.DataFrame.from_records(records), np.asarray(lines, dtype=np.int64)
            records, lines = [], []
    if records:
        yield pd.DataFrame.from_records(records), np.asarray(lines, dtype=np.int64)


def _raw_chunks(path: Path, kind: str) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    if kind == "jsonl":
        yield from _jsonl_chunks(path)
        return
    start = 0
    if kind == "parquet":
        import pyarrow.parquet as pq

        with pq.ParquetFile(path) as pf:
            for batch in pf.iter_batches(batch_size=_CHUNK_ROWS):
                df = batch.to_pandas()
                yield df, np.arange(start, start + len(df), dtype=np.int64)
                start += len(df)
        return
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    with pd.read_csv(path, sep=sep, chunksize=_CHUNK_ROWS) as reader:
        for df in reader:
            yield df, np.arange(start, start + len(df), dtype=np.int64) + 2  # line 1 is the header
            start += len(df)


def _chunks(path: Path) -> Iterator[tuple[pd.DataFrame, np.ndarray, str]]:
    kind = _kind(path)
    try:
        for df, lines in _raw_chunks(path, kind):
            yield df, lines, kind
    except MoesimInputError:
        raise
    except MemoryError:
        fail(f"{path}: cannot read as {kind} (its metadata claims more data than fits in memory; corrupt?)")
    except Exception as exc:  # pandas, pyarrow, zlib and the codecs raise many types for a bad file
        text = str(exc).splitlines()[0][:120] if str(exc) else ""
        fail(f"{path}: cannot read as {kind} ({type(exc).__name__}: {text})")


def _need(rows: _Rows, col: str, flag: str) -> None:
    if col not in rows.frame.columns:
        cols = ", ".join(map(str, rows.frame.columns)) or "none"
        f = rows.files[int(rows.file_of[0])] if len(rows.file_of) else rows.files[0]
        fail(f"{f}: no column {col!r} (columns: {cols}); name it with {flag}")


def _first_non_number(rows: _Rows, s: pd.Series) -> int | None:
    """Row of the first cell that is not a number: a boolean anywhere, a string in a typed file
    (JSONL/Parquet). CSV is text, so there numeric text is a number."""
    if pd.api.types.is_bool_dtype(s):
        return 0 if len(s) else None
    if s.dtype != object:
        return None
    vals = s.to_numpy(dtype=object)
    bad = [
        i
        for i, v in enumerate(vals)
        if isinstance(v, (bool, np.bool_)) or (rows.typed and not isinstance(v, (int, float, np.number)))
    ]
    return bad[0] if bad else None


def _int_column(
    rows: _Rows, col: str, describe: Callable[[int], str], lo: int = 0, hi: int = ID_MAX
) -> np.ndarray:
    """Integers in [lo, hi]; a fraction, boolean, string in a typed file or out-of-range value is refused."""
    s = rows.frame[col]
    bad_type = _first_non_number(rows, s)
    if bad_type is not None:
        fail(
            f"{rows.loc(bad_type)}: {describe(bad_type)}{col} is {_short(s.iloc[bad_type])}, expected an integer"
        )
    num = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(np.isnan(num) | (num % 1 != 0))
    if len(bad):
        i = int(bad[0])
        fail(f"{rows.loc(i)}: {describe(i)}{col} is {_short(s.iloc[i])}, expected an integer")
    out_of = np.flatnonzero((num < lo) | (num > hi))
    if len(out_of):
        i = int(out_of[0])
        fail(f"{rows.loc(i)}: {describe(i)}{col} is {_short(s.iloc[i])}, outside [{lo}, {hi}]")
    return num.astype(np.int64)


def _matrix(
    rows: _Rows, col: str | None, cols: Sequence[str] | None, what: str, describe: Callable[[int], str]
) -> np.ndarray:
    """(n, k) float64 matrix from one list-valued/JSON-text column or from k scalar columns."""
    df = rows.frame
    if cols:
        sub = df[list(cols)]
        na = sub.isna().to_numpy()
        if na.any():
            i, j = (int(x) for x in np.argwhere(na)[0])
            fail(f"{rows.loc(i)}: {describe(i)}missing {what} (column {cols[j]!r} is empty)")
        return np.stack([_scalar_column(rows, df[c], c, what, describe) for c in cols], axis=1)
    assert col is not None
    s = df[col]
    na = s.isna().to_numpy()
    if na.any():
        i = int(np.flatnonzero(na)[0])
        fail(f"{rows.loc(i)}: {describe(i)}missing {what} (column {col!r} is empty)")
    vals = s.to_numpy(dtype=object)
    if len(vals) == 0:
        return np.zeros((0, 0))
    first = vals[0]
    if isinstance(first, str):
        return _parse_text_lists(rows, s, col, what, describe)
    if isinstance(first, (list, tuple, np.ndarray)):
        return _parse_lists(rows, vals, col, what, describe)
    return _scalar_column(rows, s, col, what, describe)[:, None]  # a scalar column means k = 1


def _scalar_column(
    rows: _Rows, s: pd.Series, col: str, what: str, describe: Callable[[int], str]
) -> np.ndarray:
    bad_type = _first_non_number(rows, s)
    if bad_type is not None:
        fail(
            f"{rows.loc(bad_type)}: {describe(bad_type)}{what} column {col!r} holds {_short(s.iloc[bad_type])}, not a number"
        )
    num = pd.to_numeric(s, errors="coerce")
    if num.isna().any():
        i = int(np.flatnonzero(num.isna().to_numpy())[0])
        fail(
            f"{rows.loc(i)}: {describe(i)}{what} {_short(s.iloc[i])} (column {col!r}) is not a number or a JSON array"
        )
    return num.to_numpy(dtype=np.float64)


def _number_list(v: Any) -> bool:
    if isinstance(v, np.ndarray):
        return v.ndim == 1 and v.dtype.kind in "iuf"
    return isinstance(v, (list, tuple)) and all(
        isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))
        for x in v
    )


def _parse_lists(
    rows: _Rows, vals: np.ndarray, col: str, what: str, describe: Callable[[int], str]
) -> np.ndarray:
    for i, v in enumerate(vals):
        if not _number_list(v):
            fail(f"{rows.loc(i)}: {describe(i)}{what} {_short(v)} is not a list of numbers (column {col!r})")
    lens = np.fromiter((len(v) for v in vals), np.int64, len(vals))
    _check_lengths(rows, lens, col, what, describe)
    try:
        return np.array([np.asarray(v, dtype=np.float64) for v in vals])
    except OverflowError:
        fail(f"{rows.loc(0)}: {what} column {col!r} holds a number too large for a float")
    raise AssertionError


def _short(v: Any) -> str:
    text = repr(v.tolist() if isinstance(v, (np.ndarray, np.generic)) else v)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_lengths(
    rows: _Rows, lens: np.ndarray, col: str, what: str, describe: Callable[[int], str]
) -> None:
    bad = np.flatnonzero(lens != lens[0])
    if len(bad):
        i = int(bad[0])
        fail(
            f"{rows.loc(i)}: {describe(i)}{what} has {int(lens[i])} entries but {rows.loc(0)} has {int(lens[0])}; "
            f"every row needs the same top_k (column {col!r})"
        )
    if lens[0] < 1:
        fail(f"{rows.loc(0)}: {describe(0)}{what} is empty")


def _parse_text_lists(
    rows: _Rows, s: pd.Series, col: str, what: str, describe: Callable[[int], str]
) -> np.ndarray:
    text = s.astype(str).str.strip()
    framed = (text.str.startswith("[") & text.str.endswith("]")).to_numpy()
    if not framed.all():
        i = int(np.flatnonzero(~framed)[0])
        fail(
            f"{rows.loc(i)}: {describe(i)}{what} {_short(s.iloc[i])} is not a JSON array of numbers (column {col!r})"
        )
    # Vectorised fast path: strip brackets, split on commas, parse all numbers at once.
    inner = text.str.slice(1, -1)
    lens = np.array(inner.str.count(",") + 1, dtype=np.int64)  # a copy: pandas may hand out read-only views
    lens[inner.str.strip().to_numpy(dtype=object) == ""] = 0
    _check_lengths(rows, lens, col, what, describe)
    joined = ",".join(inner.tolist())
    ok = "[" not in joined and "]" not in joined  # nested arrays go to the slow path and are refused
    parts = joined.split(",")
    del joined
    flat = None
    if ok:
        try:
            flat = np.array(parts, dtype=np.float64)
        except (ValueError, OverflowError):
            ok = False
    if not ok or flat is None:
        for i, t in enumerate(s.tolist()):
            try:
                v = json.loads(t)
            except (ValueError, RecursionError):
                v = None
            if not _number_list(v):
                fail(f"{rows.loc(i)}: {describe(i)}{what} {_short(t)} is not a JSON array of numbers")
        fail(f"{rows.loc(0)}: {what} column {col!r} could not be read as JSON arrays of numbers")
    assert flat is not None
    return flat.reshape(len(s), int(lens[0]))


def _cols_arg(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [c.strip() for c in value.split(",") if c.strip()]
    return list(value) or None


def _no_row(rows: _Rows, phase: str, seq_name: Any, token: int, layer: Any) -> None:
    fail(
        f"{rows.files[0] if len(rows.files) == 1 else describe_sources(rows.files)}: {phase} sequence {seq_name} token "
        f"{token} layer {layer}: no row; every token needs a row for "
        "each layer and token positions must be contiguous within a sequence"
    )


def _refuse_short_sequences(
    rows: _Rows,
    lengths: np.ndarray,
    s: np.ndarray,
    t: np.ndarray,
    layer: np.ndarray,
    tmin: np.ndarray,
    L: int,
    seq_names: np.ndarray,
    layer_values: np.ndarray,
    phase: str,
) -> None:
    """A sequence spanning more (token, layer) cells than it has rows has a gap: found here, before
    a grid sized by its span is allocated (one mistyped position would otherwise ask for gigabytes)."""
    have = np.bincount(s, minlength=len(lengths))
    short = np.flatnonzero(lengths.astype(np.float64) * L > have)
    if not len(short):
        return
    sq = int(short[0])
    mine = s == sq
    local = np.unique((t[mine] - tmin[sq]) * L + layer[mine])
    gap = np.flatnonzero(local != np.arange(len(local)))
    c = int(gap[0]) if len(gap) else len(local)
    r, lc = divmod(c, L)
    _no_row(rows, phase, seq_names[sq], int(tmin[sq]) + r, layer_values[lc])


def _grid(
    rows: _Rows,
    idx: np.ndarray,
    seq: np.ndarray,
    tok: np.ndarray,
    lay: np.ndarray,
    num_seq: int,
    L: int,
    seq_names: np.ndarray,
    layer_values: np.ndarray,
    phase: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Place rows ``idx`` into a dense (N*L) grid: returns offsets, cell of each row, row of each token."""
    s, t, layer = seq[idx], tok[idx], lay[idx]
    big = np.iinfo(np.int64).max
    tmin = np.full(num_seq, big, dtype=np.int64)
    tmax = np.full(num_seq, np.iinfo(np.int64).min, dtype=np.int64)
    np.minimum.at(tmin, s, t)
    np.maximum.at(tmax, s, t)
    has_rows = np.bincount(s, minlength=num_seq) > 0
    lengths = np.where(has_rows, tmax - tmin + 1, 0)
    _refuse_short_sequences(rows, lengths, s, t, layer, tmin, L, seq_names, layer_values, phase)
    offsets = offsets_from_lengths(lengths)
    row = offsets[s] + (t - tmin[s])
    cell = row * L + layer
    order = np.argsort(cell, kind="stable")
    sc = cell[order]
    rep = np.flatnonzero(sc[1:] == sc[:-1])
    if len(rep):
        j = int(np.argmin(order[rep + 1]))  # report the earliest row that repeats an earlier one
        i, first = int(order[rep[j] + 1]), int(order[rep[j]])
        fail(
            f"{rows.loc(int(idx[i]))}: {phase} sequence {seq_names[s[i]]} token {t[i]} layer {layer_values[layer[i]]}: "
            f"duplicate row (also at {rows.loc(int(idx[first]))}); keep one row per (sequence, token, layer)"
        )
    n_cells = int(offsets[-1]) * L
    if len(sc) != n_cells:
        gap = np.flatnonzero(sc != np.arange(len(sc)))
        c = int(gap[0]) if len(gap) else len(sc)
        r, lc = divmod(c, L)
        sq = int(np.searchsorted(offsets, r, side="right") - 1)
        _no_row(rows, phase, seq_names[sq], int(tmin[sq]) + r - int(offsets[sq]), layer_values[lc])
    return offsets, cell, row


@dataclass
class _Cols:
    """The resolved column names (optional ones are None when absent)."""

    sequence: str
    token: str
    layer: str
    experts: str | None
    expert_cols: list[str] | None
    weights: str | None
    weight_cols: list[str] | None
    domain: str | None
    token_id: str | None
    phase: str | None


@dataclass
class _Part:
    """One chunk, parsed into compact arrays (global sequence/domain codes)."""

    seq: np.ndarray  # int64 codes into _State.seq_names (first-seen order)
    tok: np.ndarray
    lay: np.ndarray
    ex: np.ndarray  # (n, k) int64
    w: np.ndarray | None  # (n, k) float64
    prefill: np.ndarray  # bool
    token_id: np.ndarray | None
    dom: np.ndarray | None  # int64 codes into _State.dom_names
    file_of: np.ndarray
    line_of: np.ndarray


@dataclass
class _State:
    seq_codes: dict[str, int]
    dom_codes: dict[str, int]
    seq_numeric: bool = True
    k: int = 0
    first_loc: str = ""
    rows: int = 0
    reordered: int = 0


def _resolve_cols(rows: _Rows, opts: dict[str, Any]) -> _Cols:
    expert_cols_l, weight_cols_l = _cols_arg(opts["expert_cols"]), _cols_arg(opts["weight_cols"])
    experts_col, weights_col = opts["experts_col"], opts["weights_col"]
    if expert_cols_l and experts_col:
        fail("give either experts_col (one JSON-array column) or expert_cols (k columns), not both")
    if weight_cols_l and weights_col:
        fail("give either weights_col (one JSON-array column) or weight_cols (k columns), not both")
    if not expert_cols_l:
        experts_col = experts_col or "experts"
    # Optional columns: an explicitly named one must exist, a default-named one is used when present.
    if not weight_cols_l:
        weights_col = _optional(rows, weights_col, "weights", "--weights-col")
    return _Cols(
        opts["sequence_col"],
        opts["token_col"],
        opts["layer_col"],
        experts_col,
        expert_cols_l,
        weights_col,
        weight_cols_l,
        _optional(rows, opts["domain_col"], "domain", "--domain-col"),
        _optional(rows, opts["token_id_col"], "token_id", "--token-id-col"),
        _optional(rows, opts["phase_col"], "phase", "--phase-col"),
    )


def _check_present(rows: _Rows, cols: _Cols) -> None:
    _need(rows, cols.sequence, "--sequence-col")
    _need(rows, cols.token, "--token-col")
    _need(rows, cols.layer, "--layer-col")
    if cols.expert_cols:
        for c in cols.expert_cols:
            _need(rows, c, "--expert-cols")
    else:
        assert cols.experts is not None
        _need(rows, cols.experts, "--experts-col (or give k columns with --expert-cols)")
    for c in cols.weight_cols or []:
        _need(rows, c, "--weight-cols")
    optional: tuple[tuple[str | None, str], ...] = (
        (cols.weights, "--weights-col"),
        (cols.domain, "--domain-col"),
        (cols.token_id, "--token-id-col"),
        (cols.phase, "--phase-col"),
    )
    for col, flag in optional:
        if col is not None:
            _need(rows, col, flag)


def _codes(values: np.ndarray, table: dict[str, int]) -> np.ndarray:
    uniq, inv = np.unique(values.astype(str), return_inverse=True)
    mapped = np.array([table.setdefault(str(u), len(table)) for u in uniq], dtype=np.int64)
    return mapped[inv.reshape(-1)] if len(uniq) else np.zeros(0, np.int64)


def _parse_chunk(rows: _Rows, cols: _Cols, st: _State, opts: dict[str, Any]) -> _Part:
    df = rows.frame
    seq_raw = df[cols.sequence]
    if seq_raw.isna().any():
        i = int(np.flatnonzero(seq_raw.isna().to_numpy())[0])
        fail(f"{rows.loc(i)}: missing sequence ({cols.sequence!r} is empty)")
    numeric = pd.api.types.is_numeric_dtype(seq_raw) and not pd.api.types.is_bool_dtype(seq_raw)
    st.seq_numeric &= bool(numeric)
    names = seq_raw.astype(str).to_numpy(dtype=object)

    def where_seq(i: int) -> str:
        return f"sequence {names[i]}: "

    tok = _int_column(rows, cols.token, where_seq, lo=-ID_MAX)  # prompt positions may count back

    def where_tok(i: int) -> str:
        return f"sequence {names[i]} token {tok[i]}: "

    lay = _int_column(rows, cols.layer, where_tok)

    def where_cell(i: int) -> str:
        return f"sequence {names[i]} token {tok[i]} layer {lay[i]}: "

    ex = _matrix(rows, cols.experts, cols.expert_cols, "experts", where_cell)
    if st.k == 0:
        st.k, st.first_loc = ex.shape[1], rows.loc(0)
    elif ex.shape[1] != st.k:
        fail(
            f"{rows.loc(0)}: {where_cell(0)}experts has {ex.shape[1]} entries but {st.first_loc} has {st.k}; "
            "every row needs the same top_k"
        )
    _check_ids(rows, ex, opts["num_experts"], where_cell)
    w = None
    if cols.weights or cols.weight_cols:
        w = _matrix(rows, cols.weights, cols.weight_cols, "weights", where_cell)
        if w.shape[1] != st.k:
            fail(
                f"{rows.loc(0)}: {where_cell(0)}{w.shape[1]} weights for {st.k} experts; give one weight per expert"
            )
    ex_i = ex.astype(np.int64)
    if opts["sort_by_weight"] and w is not None:
        ex_i, w, changed = rank_by_weight(ex_i, w)
        st.reordered += changed
    dom = None
    if cols.domain is not None:
        d = df[cols.domain]
        default = opts["domain"] if opts["domain"] is not None else ""
        dom = _codes(d.where(d.notna(), default).astype(str).to_numpy(dtype=object), st.dom_codes)
    return _Part(
        seq=_codes(names, st.seq_codes),
        tok=tok,
        lay=lay,
        ex=ex_i,
        w=w,
        prefill=_phase_mask(rows, cols.phase, where_cell),
        token_id=_int_column(rows, cols.token_id, where_cell, hi=ID_MAX) if cols.token_id else None,
        dom=dom,
        file_of=rows.file_of,
        line_of=rows.line_of,
    )


def _parse_all(paths: Sequence[Path], opts: dict[str, Any]) -> tuple[list[_Part], _Rows, _Cols, _State]:
    st = _State({}, {})
    parts: list[_Part] = []
    cols: _Cols | None = None
    kinds = [_kind(p) for p in paths]
    for fi, path in enumerate(paths):
        for df, lines, _ in _chunks(path):
            rows = _Rows(df, list(paths), kinds, np.full(len(df), fi, dtype=np.int64), lines)
            if cols is None:
                cols = _resolve_cols(rows, opts)
            _check_present(rows, cols)
            if len(df):
                parts.append(_parse_chunk(rows, cols, st, opts))
                st.rows += len(df)
    if not parts or cols is None:
        fail(f"{paths[0]}: the table has no rows")
    assert cols is not None
    where = _Rows(
        None,
        list(paths),
        kinds,
        np.concatenate([p.file_of for p in parts]),
        np.concatenate([p.line_of for p in parts]),
    )
    return parts, where, cols, st


def _sorted_names(st: _State) -> tuple[np.ndarray, np.ndarray]:
    """Sequence names in sorted order (numerically when the column is numeric), and old code -> new."""
    names = list(st.seq_codes)
    key: Callable[[str], Any] = float if st.seq_numeric else str
    order = sorted(range(len(names)), key=lambda i: key(names[i]))
    remap = np.empty(len(names), dtype=np.int64)
    remap[order] = np.arange(len(names))
    return np.array([names[i] for i in order], dtype=object), remap


def import_table(
    paths: Sequence[Path],
    *,
    sequence_col: str = "sequence",
    token_col: str = "token",
    layer_col: str = "layer",
    experts_col: str | None = None,
    expert_cols: str | Sequence[str] | None = None,
    weights_col: str | None = None,
    weight_cols: str | Sequence[str] | None = None,
    domain_col: str | None = None,
    token_id_col: str | None = None,
    phase_col: str | None = None,
    num_experts: int | None = None,
    model: str = "unknown",
    domain: str | None = None,
    sort_by_weight: bool = False,
) -> Trace:
    opts = dict(locals())
    parts, rows, cols, st = _parse_all(paths, opts)
    seq_names, remap = _sorted_names(st)
    seq = remap[np.concatenate([p.seq for p in parts])]
    tok = np.concatenate([p.tok for p in parts])
    lay_raw = np.concatenate([p.lay for p in parts])
    ex_i = np.concatenate([p.ex for p in parts])
    w = np.concatenate([p.w for p in parts]) if parts[0].w is not None else None  # type: ignore[misc]
    is_prefill = np.concatenate([p.prefill for p in parts])
    tid = np.concatenate([p.token_id for p in parts]) if cols.token_id else None  # type: ignore[misc]
    dom = np.concatenate([p.dom for p in parts]) if cols.domain else None  # type: ignore[misc]
    num_seq, k = len(seq_names), st.k
    parts.clear()  # the chunk arrays are concatenated above; free them before the grid is built

    def where_seq(i: int) -> str:
        return f"sequence {seq_names[seq[i]]}: "

    def where_cell(i: int) -> str:
        return f"sequence {seq_names[seq[i]]} token {tok[i]} layer {lay_raw[i]}: "

    layer_values, lay = np.unique(lay_raw, return_inverse=True)
    lay = lay.reshape(-1)
    L = len(layer_values)
    E = int(num_experts) if num_experts is not None else int(ex_i.max()) + 1

    decode_idx = np.flatnonzero(~is_prefill)
    prefill_idx = np.flatnonzero(is_prefill)
    offsets, cell, tok_row = _grid(
        rows, decode_idx, seq, tok, lay, num_seq, L, seq_names, layer_values, "decode"
    )
    N = int(offsets[-1])
    experts = np.empty((N * L, k), dtype=np.int64)
    experts[cell] = ex_i[decode_idx]
    weights: np.ndarray | None = None
    if w is not None:
        weights = np.empty((N * L, k), dtype=np.float32)
        weights[cell] = w[decode_idx]
        weights = weights.reshape(N, L, k)
    pre: np.ndarray | None = None
    pre_off = None
    if len(prefill_idx):
        pre_off, pcell, _ = _grid(
            rows, prefill_idx, seq, tok, lay, num_seq, L, seq_names, layer_values, "prefill"
        )
        pre = np.empty((int(pre_off[-1]) * L, k), dtype=np.int64)
        pre[pcell] = ex_i[prefill_idx]
        pre = pre.reshape(-1, L, k)
    token_ids = (
        _token_ids(rows, cols.token_id, tid, decode_idx, tok_row, N, where_cell)
        if tid is not None and cols.token_id is not None
        else None
    )
    domains, seq_domain = _domains(rows, cols.domain, dom, st, domain, seq, num_seq, where_seq)

    notes = [f"table import of {describe_sources(paths)} ({st.rows} rows)"]
    if num_experts is None:
        notes.append(
            f"num_experts={E} inferred as max expert id + 1 (pass num_experts if the model has more)"
        )
    if st.reordered:
        notes.append(f"{st.reordered} rows re-sorted by descending weight")
    layer_indices = () if np.array_equal(layer_values, np.arange(L)) else tuple(int(v) for v in layer_values)
    meta = TraceMeta(
        model=model,
        num_layers=L,
        num_experts=E,
        top_k=k,
        layer_indices=layer_indices,
        domains=tuple(domains),
        source="; ".join(notes),
        extra={"sequence_names": [str(n) for n in seq_names]},
    )
    return Trace(
        meta=meta,
        experts=experts.reshape(N, L, k),
        seq_offsets=offsets,
        seq_domain=seq_domain,
        weights=weights,
        token_ids=token_ids,
        prefill_experts=pre,
        prefill_offsets=pre_off,
    )


def _optional(rows: _Rows, given: str | None, default: str, flag: str) -> str | None:
    if given is not None:
        _need(rows, given, flag)
        return given
    return default if default in rows.frame.columns else None


def _check_ids(rows: _Rows, ex: np.ndarray, num_experts: int | None, describe: Callable[[int], str]) -> None:
    with np.errstate(invalid="ignore"):
        frac = ~np.isfinite(ex) | (ex % 1 != 0)
    lim = num_experts if num_experts is not None else ID_MAX + 1
    bad = frac | (ex < 0) | (ex >= lim)
    if bad.any():
        i, r = (int(x) for x in np.argwhere(bad)[0])
        v = ex[i, r]
        why = "not an integer" if frac[i, r] else (f">= E={lim}" if v >= lim else "< 0")
        rng = f"[0, {num_experts})" if num_experts is not None else f"[0, {ID_MAX}]"
        fail(
            f"{rows.loc(i)}: {describe(i)}expert id {v:g} {why} (ids must be integers in {rng}; check num_experts)"
        )
    srt = np.sort(ex, axis=1)
    dup = (srt[:, 1:] == srt[:, :-1]).any(1)
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        fail(
            f"{rows.loc(i)}: {describe(i)}expert ids {ex[i].astype(np.int64).tolist()} repeat an id (need k distinct ids)"
        )


def _phase_mask(rows: _Rows, phase_col: str | None, describe: Callable[[int], str]) -> np.ndarray:
    if phase_col is None:
        return np.zeros(len(rows.frame), dtype=bool)
    raw = rows.frame[phase_col]
    ph = raw.astype(str).str.strip().str.lower()
    ok = (ph.isin(["prefill", "decode"]) & raw.map(lambda v: isinstance(v, str))).to_numpy()
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        fail(f"{rows.loc(i)}: {describe(i)}{phase_col} is {raw.iloc[i]!r}, expected 'prefill' or 'decode'")
    return (ph == "prefill").to_numpy()


def _token_ids(
    rows: _Rows,
    col: str,
    all_vals: np.ndarray,
    idx: np.ndarray,
    tok_row: np.ndarray,
    N: int,
    describe: Callable[[int], str],
) -> np.ndarray:
    vals = all_vals[idx]
    out = np.zeros(N, dtype=np.int64)
    out[tok_row] = vals
    clash = np.flatnonzero(out[tok_row] != vals)
    if len(clash):
        i = int(idx[clash[0]])
        fail(f"{rows.loc(i)}: {describe(i)}{col} differs from another layer's row of the same token")
    return out.astype(np.int32)  # range-checked against int32 when read


def _domains(
    rows: _Rows,
    domain_col: str | None,
    dom: np.ndarray | None,
    st: _State,
    default: str | None,
    seq: np.ndarray,
    num_seq: int,
    describe: Callable[[int], str],
) -> tuple[list[str], np.ndarray]:
    if domain_col is None or dom is None:
        if default is None:
            return [], np.full(num_seq, -1, dtype=np.int16)
        return [default], np.zeros(num_seq, dtype=np.int16)
    names = np.array(list(st.dom_codes), dtype=object)
    _, first = np.unique(seq, return_index=True)  # codes cover 0..num_seq-1
    seq_code = dom[first]
    clash = np.flatnonzero(dom != seq_code[seq])
    if len(clash):
        i = int(clash[0])
        fail(
            f"{rows.loc(i)}: {describe(i)}{domain_col} {names[dom[i]]!r} differs from {names[seq_code[seq[i]]]!r} "
            f"at {rows.loc(int(first[seq[i]]))}; a sequence has one domain"
        )
    seq_name = names[seq_code]
    domains = [d for d in ordered_unique(seq_name.tolist()) if d != ""]
    if len(domains) > np.iinfo(np.int16).max:
        fail(
            f"{rows.files[0]}: {len(domains)} distinct domains; at most {np.iinfo(np.int16).max} are supported"
        )
    lookup = {d: i for i, d in enumerate(domains)}
    seq_domain = np.array([lookup.get(d, -1) for d in seq_name], dtype=np.int16)
    return domains, seq_domain
