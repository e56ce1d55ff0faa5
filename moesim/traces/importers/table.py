"""Generic long table: one row per (sequence, token, layer), from CSV, Parquet or JSONL.

Rows may come in any order; cells are placed by (sequence, token position, layer). Expert ids are
one column holding a JSON array (``"[3, 17]"``, or a list column in Parquet/JSONL) or k columns;
weights likewise, optionally. An optional ``phase`` column ("prefill"/"decode") splits prompt rows off.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moesim.errors import fail
from moesim.traces.importers.common import (
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


@dataclass
class _Rows:
    """The concatenated table plus where each row came from, for error messages."""

    df: pd.DataFrame
    files: list[Path]
    kinds: list[str]
    file_of: np.ndarray  # row -> index into files
    line_of: np.ndarray  # row -> line number (text files) or row number (parquet)

    def loc(self, i: int) -> str:
        f = int(self.file_of[i])
        word = "row" if self.kinds[f] == "parquet" else "line"
        return f"{self.files[f]} {word} {int(self.line_of[i])}"


def _read_jsonl(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    records, lines = [], []
    for n, rec in jsonl_objects(path):
        records.append(rec)
        lines.append(n)
    return pd.DataFrame.from_records(records), np.asarray(lines, dtype=np.int64)


def _read_one(path: Path) -> tuple[pd.DataFrame, np.ndarray, str]:
    kind = _EXTENSIONS.get(path.suffix.lower())
    if kind is None:
        fail(f"{path}: unknown table extension {path.suffix!r}; use one of {', '.join(sorted(_EXTENSIONS))}")
    try:
        if kind == "jsonl":
            df, lines = _read_jsonl(path)
            return df, lines, kind
        if kind == "parquet":
            df = pd.read_parquet(path)
            return df, np.arange(len(df), dtype=np.int64), kind
        df = pd.read_csv(path, sep="\t" if kind == "tsv" else ",")
        return df, np.arange(len(df), dtype=np.int64) + 2, kind  # line 1 is the header
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        fail(
            f"{path}: cannot read as {kind} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        )
    raise AssertionError  # unreachable


def _read_all(paths: Sequence[Path]) -> _Rows:
    frames, files, kinds, file_of, line_of = [], [], [], [], []
    for i, p in enumerate(paths):
        df, lines, kind = _read_one(p)
        frames.append(df)
        files.append(p)
        kinds.append(kind)
        file_of.append(np.full(len(df), i, dtype=np.int64))
        line_of.append(lines)
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    return _Rows(df, files, kinds, np.concatenate(file_of), np.concatenate(line_of))


def _need(rows: _Rows, col: str, flag: str) -> None:
    if col not in rows.df.columns:
        cols = ", ".join(map(str, rows.df.columns)) or "none"
        fail(f"{rows.files[0]}: no column {col!r} (columns: {cols}); name it with {flag}")


def _int_column(rows: _Rows, col: str, describe: Callable[[int], str]) -> np.ndarray:
    s = rows.df[col]
    num = pd.to_numeric(s, errors="coerce")
    bad = np.flatnonzero(num.isna().to_numpy() | (num.to_numpy(dtype=float, na_value=np.nan) % 1 != 0))
    if len(bad):
        i = int(bad[0])
        fail(f"{rows.loc(i)}: {describe(i)}{col} is {s.iloc[i]!r}, expected an integer")
    return num.to_numpy(dtype=np.int64)


def _matrix(
    rows: _Rows, col: str | None, cols: Sequence[str] | None, what: str, describe: Callable[[int], str]
) -> np.ndarray:
    """(n, k) float64 matrix from one list-valued/JSON-text column or from k scalar columns."""
    df = rows.df
    if cols:
        sub = df[list(cols)]
        na = sub.isna().to_numpy()
        if na.any():
            i, j = (int(x) for x in np.argwhere(na)[0])
            fail(f"{rows.loc(i)}: {describe(i)}missing {what} (column {cols[j]!r} is empty)")
        try:
            return sub.to_numpy(dtype=np.float64)
        except (TypeError, ValueError):
            for i in range(len(sub)):
                for c in cols:
                    try:
                        float(sub[c].iloc[i])
                    except (TypeError, ValueError):
                        fail(
                            f"{rows.loc(i)}: {describe(i)}{what} column {c!r} holds {sub[c].iloc[i]!r}, not a number"
                        )
            raise
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
        lens = np.fromiter(
            (len(v) if isinstance(v, (list, tuple, np.ndarray)) else -1 for v in vals), np.int64, len(vals)
        )
        _check_lengths(rows, lens, col, what, describe)
        try:
            return np.array([np.asarray(v, dtype=np.float64) for v in vals])
        except (TypeError, ValueError):
            for i, v in enumerate(vals):
                try:
                    np.asarray(v, dtype=np.float64)
                except (TypeError, ValueError):
                    fail(f"{rows.loc(i)}: {describe(i)}{what} {v!r} holds a non-number")
            raise
    num = pd.to_numeric(s, errors="coerce")
    if num.isna().any():
        i = int(np.flatnonzero(num.isna().to_numpy())[0])
        fail(f"{rows.loc(i)}: {describe(i)}{what} {vals[i]!r} is not a number or a JSON array")
    return num.to_numpy(dtype=np.float64)[:, None]  # a scalar column means k = 1


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
    # Vectorised fast path: strip brackets, split on commas, parse all numbers at once.
    inner = s.astype(str).str.strip().str.removeprefix("[").str.removesuffix("]")
    lens = np.array(inner.str.count(",") + 1, dtype=np.int64)  # a copy: pandas may hand out read-only views
    lens[inner.str.strip().to_numpy(dtype=object) == ""] = 0
    _check_lengths(rows, lens, col, what, describe)
    try:
        flat = np.array(",".join(inner.tolist()).split(","), dtype=np.float64)
    except ValueError:
        for i, text in enumerate(s.tolist()):
            try:
                v = json.loads(text)
                np.asarray(v, dtype=np.float64)
                if not isinstance(v, list):
                    raise ValueError
            except (ValueError, TypeError):
                fail(f"{rows.loc(i)}: {describe(i)}{what} {text!r} is not a JSON array of numbers")
        raise
    return flat.reshape(len(s), int(lens[0]))


def _cols_arg(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [c.strip() for c in value.split(",") if c.strip()]
    return list(value) or None


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
    offsets = offsets_from_lengths(lengths)
    row = offsets[s] + (t - tmin[s])
    cell = row * L + layer
    n_cells = int(offsets[-1]) * L
    counts = np.bincount(cell, minlength=n_cells)
    if (counts > 1).any():
        order = np.argsort(cell, kind="stable")
        rep = np.flatnonzero(cell[order][1:] == cell[order][:-1])
        j = int(np.argmin(order[rep + 1]))  # report the earliest row that repeats an earlier one
        i, first = int(order[rep[j] + 1]), int(order[rep[j]])
        fail(
            f"{rows.loc(int(idx[i]))}: {phase} sequence {seq_names[s[i]]} token {t[i]} layer {layer_values[layer[i]]}: "
            f"duplicate row (also at {rows.loc(int(idx[first]))}); keep one row per (sequence, token, layer)"
        )
    missing = np.flatnonzero(counts == 0)
    if len(missing):
        c = int(missing[0])
        r, lc = divmod(c, L)
        sq = int(np.searchsorted(offsets, r, side="right") - 1)
        fail(
            f"{rows.files[0] if len(rows.files) == 1 else describe_sources(rows.files)}: {phase} sequence {seq_names[sq]} token "
            f"{int(tmin[sq]) + r - int(offsets[sq])} layer {layer_values[lc]}: no row; every token needs a row for "
            "each layer and token positions must be contiguous within a sequence"
        )
    return offsets, cell, row


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
    rows = _read_all(paths)
    df = rows.df
    if len(df) == 0:
        fail(f"{paths[0]}: the table has no rows")
    expert_cols_l, weight_cols_l = _cols_arg(expert_cols), _cols_arg(weight_cols)
    if expert_cols_l and experts_col:
        fail("give either experts_col (one JSON-array column) or expert_cols (k columns), not both")
    if weight_cols_l and weights_col:
        fail("give either weights_col (one JSON-array column) or weight_cols (k columns), not both")
    _need(rows, sequence_col, "--sequence-col")
    _need(rows, token_col, "--token-col")
    _need(rows, layer_col, "--layer-col")
    if expert_cols_l:
        for c in expert_cols_l:
            _need(rows, c, "--expert-cols")
    else:
        experts_col = experts_col or "experts"
        _need(rows, experts_col, "--experts-col (or give k columns with --expert-cols)")
    # Optional columns: an explicitly named one must exist, a default-named one is used when present.
    weights_col = _optional(rows, weights_col, "weights", "--weights-col") if not weight_cols_l else None
    if weight_cols_l:
        for c in weight_cols_l:
            _need(rows, c, "--weight-cols")
    domain_col = _optional(rows, domain_col, "domain", "--domain-col")
    token_id_col = _optional(rows, token_id_col, "token_id", "--token-id-col")
    phase_col = _optional(rows, phase_col, "phase", "--phase-col")

    seq_raw = df[sequence_col]
    if seq_raw.isna().any():
        i = int(np.flatnonzero(seq_raw.isna().to_numpy())[0])
        fail(f"{rows.loc(i)}: missing sequence ({sequence_col!r} is empty)")
    try:
        seq, seq_names = pd.factorize(seq_raw, sort=True)
    except TypeError:  # mixed types (e.g. ints and strings) cannot be sorted together
        seq, seq_names = pd.factorize(seq_raw.astype(str), sort=True)
    seq_names = np.asarray(seq_names, dtype=object)
    num_seq = len(seq_names)

    def where_seq(i: int) -> str:
        return f"sequence {seq_names[seq[i]]}: "

    tok = _int_column(rows, token_col, where_seq)

    def where_tok(i: int) -> str:
        return f"sequence {seq_names[seq[i]]} token {tok[i]}: "

    lay_raw = _int_column(rows, layer_col, where_tok)

    def where_cell(i: int) -> str:
        return f"sequence {seq_names[seq[i]]} token {tok[i]} layer {lay_raw[i]}: "

    layer_values, lay = np.unique(lay_raw, return_inverse=True)
    L = len(layer_values)
    ex = _matrix(rows, experts_col, expert_cols_l, "experts", where_cell)
    k = ex.shape[1]
    _check_ids(rows, ex, num_experts, where_cell)
    w = None
    if weights_col or weight_cols_l:
        w = _matrix(rows, weights_col, weight_cols_l, "weights", where_cell)
        if w.shape[1] != k:
            fail(
                f"{rows.loc(0)}: {where_cell(0)}{w.shape[1]} weights for {k} experts; give one weight per expert"
            )
    ex_i = ex.astype(np.int64)
    E = int(num_experts) if num_experts is not None else int(ex_i.max()) + 1
    reordered = 0
    if sort_by_weight and w is not None:
        ex_i, w, reordered = rank_by_weight(ex_i, w)

    is_prefill = _phase_mask(rows, phase_col, where_cell)
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
    token_ids = _token_ids(rows, token_id_col, decode_idx, tok_row, N, where_cell) if token_id_col else None
    domains, seq_domain = _domains(rows, domain_col, domain, seq, num_seq, where_seq)

    notes = [f"table import of {describe_sources(paths)} ({len(df)} rows)"]
    if num_experts is None:
        notes.append(
            f"num_experts={E} inferred as max expert id + 1 (pass num_experts if the model has more)"
        )
    if reordered:
        notes.append(f"{reordered} rows re-sorted by descending weight")
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
    return default if default in rows.df.columns else None


def _check_ids(rows: _Rows, ex: np.ndarray, num_experts: int | None, describe: Callable[[int], str]) -> None:
    frac = ex % 1 != 0
    lim = num_experts if num_experts is not None else np.inf
    bad = frac | (ex < 0) | (ex >= lim)
    if bad.any():
        i, r = (int(x) for x in np.argwhere(bad)[0])
        v = ex[i, r]
        why = "not an integer" if frac[i, r] else (f">= E={num_experts}" if v >= lim else "< 0")
        rng = f"[0, {num_experts})" if num_experts is not None else "[0, E)"
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
        return np.zeros(len(rows.df), dtype=bool)
    ph = rows.df[phase_col].astype(str).str.strip().str.lower()
    ok = ph.isin(["prefill", "decode"]).to_numpy()
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        fail(
            f"{rows.loc(i)}: {describe(i)}{phase_col} is {rows.df[phase_col].iloc[i]!r}, expected 'prefill' or 'decode'"
        )
    return (ph == "prefill").to_numpy()


def _token_ids(
    rows: _Rows, col: str, idx: np.ndarray, tok_row: np.ndarray, N: int, describe: Callable[[int], str]
) -> np.ndarray:
    vals = _int_column(rows, col, describe)[idx]
    out = np.zeros(N, dtype=np.int64)
    out[tok_row] = vals
    clash = np.flatnonzero(out[tok_row] != vals)
    if len(clash):
        i = int(idx[clash[0]])
        fail(f"{rows.loc(i)}: {describe(i)}{col} differs from another layer's row of the same token")
    return out.astype(np.int32)


def _domains(
    rows: _Rows,
    domain_col: str | None,
    default: str | None,
    seq: np.ndarray,
    num_seq: int,
    describe: Callable[[int], str],
) -> tuple[list[str], np.ndarray]:
    if domain_col is None:
        if default is None:
            return [], np.full(num_seq, -1, dtype=np.int16)
        return [default], np.zeros(num_seq, dtype=np.int16)
    vals: Any = rows.df[domain_col]
    names = (
        vals.where(vals.notna(), default if default is not None else "").astype(str).to_numpy(dtype=object)
    )
    _, first = np.unique(seq, return_index=True)  # factorize codes cover 0..num_seq-1
    seq_name = names[first]
    clash = np.flatnonzero(names != seq_name[seq])
    if len(clash):
        i = int(clash[0])
        fail(
            f"{rows.loc(i)}: {describe(i)}{domain_col} {names[i]!r} differs from {seq_name[seq[i]]!r} "
            f"at {rows.loc(int(first[seq[i]]))}; a sequence has one domain"
        )
    domains = [d for d in ordered_unique(seq_name.tolist()) if d != ""]
    seq_domain = np.array([domains.index(d) if d != "" else -1 for d in seq_name], dtype=np.int16)
    return domains, seq_domain
