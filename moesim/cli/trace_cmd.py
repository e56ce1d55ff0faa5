"""``moesim trace import | info | synth | stats``."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from moesim.errors import fail
from moesim.outputs import FORCE_HELP

# CLI flag -> importer option. Only flags the user actually gave are passed on.
_IMPORT_FLAGS: dict[str, str] = {
    "model": "--model",
    "num_experts": "--num-experts",
    "num_layers": "--num-layers",
    "domain": "--domain",
    "on_missing": "--on-missing",
    "sequence_col": "--sequence-col",
    "token_col": "--token-col",
    "layer_col": "--layer-col",
    "experts_col": "--experts-col",
    "expert_cols": "--expert-cols",
    "weights_col": "--weights-col",
    "weight_cols": "--weight-cols",
    "domain_col": "--domain-col",
    "token_id_col": "--token-id-col",
    "phase_col": "--phase-col",
    "sort_by_weight": "--sort-by-weight",
}


def register(sub: Any) -> None:
    p = sub.add_parser("trace", help="import, inspect and synthesise routing traces")
    tsub = p.add_subparsers(dest="trace_command", metavar="SUBCOMMAND", parser_class=type(p))
    p.set_defaults(func=lambda args: _help(p))

    imp = tsub.add_parser(
        "import",
        help="convert a public trace format into a .moetrace",
        description="Import routing traces. Formats: table, olmoe-npz, mixtral-jsonl, qwen-routes "
        "(see docs/trace-format.md).",
    )
    imp.add_argument("sources", nargs="+", metavar="SRC", help="files or folders")
    imp.add_argument("--format", "-f", required=True, dest="fmt", metavar="F", help="source format")
    imp.add_argument("--out", "-o", required=True, help="output trace directory (NAME.moetrace)")
    imp.add_argument("--force", action="store_true", help="replace --out if it exists")
    imp.add_argument("--model", help="model name to record (default: the format's)")
    imp.add_argument("--num-experts", type=int, help="experts per layer E (table: default max id + 1)")
    imp.add_argument("--num-layers", type=int, help="MoE layers (mixtral-jsonl: default max layer + 1)")
    imp.add_argument("--domain", help="domain for sequences the source does not label")
    imp.add_argument(
        "--on-missing", choices=("fill", "error"), help="mixtral-jsonl: missing cells (default fill)"
    )
    cols = imp.add_argument_group("table columns")
    for flag, default in (
        ("--sequence-col", "sequence"),
        ("--token-col", "token"),
        ("--layer-col", "layer"),
        ("--experts-col", "experts"),
        ("--weights-col", "weights"),
        ("--domain-col", "domain"),
        ("--token-id-col", "token_id"),
        ("--phase-col", "phase"),
    ):
        cols.add_argument(flag, metavar="NAME", help=f"default {default!r}")
    cols.add_argument("--expert-cols", metavar="A,B,...", help="k columns of expert ids, in rank order")
    cols.add_argument("--weight-cols", metavar="A,B,...", help="k columns of router weights")
    cols.add_argument("--sort-by-weight", action="store_true", default=None, help="re-rank rows by weight")
    imp.set_defaults(func=run_import)

    info = tsub.add_parser("info", help="summarise a trace")
    info.add_argument("trace", metavar="TRACE")
    info.add_argument("--json", action="store_true", help="print JSON instead of tables")
    info.add_argument("--digest", action="store_true", help="also compute the content digest")
    info.add_argument("--no-validate", action="store_true", help="skip the full validation pass")
    info.set_defaults(func=run_info)

    syn = tsub.add_parser(
        "synth",
        help="write a synthetic trace",
        description="Write a synthetic trace: parametric (the options below), fitted to a real trace "
        "(--like), or from a YAML of generator parameters (--params). See docs/trace-format.md.",
    )
    syn.add_argument("--out", "-o", required=True)
    syn.add_argument("--force", action="store_true", help="replace --out if it exists")
    syn.add_argument("--like", metavar="TRACE", help="fit the generator to this real trace")
    syn.add_argument("--params", metavar="FILE", help="YAML of generator parameters (fitted or parametric)")
    syn.add_argument("--save-params", metavar="FILE", help="write the fitted parameters as YAML")
    syn.add_argument("--report", metavar="DIR", help="with --like: real-vs-synthetic fit report here")
    syn.add_argument(
        "--capacities", metavar="C,C,...", help="report: global cache capacities (default powers of two)"
    )
    syn.add_argument("--fit-rounds", type=int, default=6, help="--like: Gauss-Newton rounds")
    syn.add_argument(
        "--sequences", type=int, help="sequences (default 16; with --like/--params the real count)"
    )
    syn.add_argument(
        "--tokens", type=int, help="decode tokens per sequence (default 128; with --like the real lengths)"
    )
    syn.add_argument("--prefill-tokens", type=int, default=0, help="prompt tokens per sequence")
    syn.add_argument("--layers", type=int, default=16)
    syn.add_argument("--experts", type=int, default=64)
    syn.add_argument("--top-k", type=int, default=8)
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--domains", default="general,coding,math,reasoning", help="comma list ('' for none)")
    syn.add_argument("--model", default="synthetic")
    syn.add_argument("--no-weights", action="store_true")
    syn.set_defaults(func=run_synth)

    st = tsub.add_parser(
        "stats",
        help="routing statistics: entropy, skew, cross-layer MI, reuse, working set, hit-rate curves",
        description="Per-layer entropy and popularity skew, cross-layer mutual information, "
        "consecutive-token overlap, reuse distances, working sets and LRU/Belady hit-rate curves: "
        "summary.json, CSVs and PNG plots in --out (definitions: moesim/analysis/stats.py).",
    )
    st.add_argument("trace", metavar="TRACE")
    st.add_argument("--out", "-o", required=True, help="output folder")
    st.add_argument("--capacities", metavar="C,C,...", help="cache capacities (default powers of two from k)")
    st.add_argument("--scope", choices=("global", "per-layer"), default="global")
    st.add_argument("--no-hit-rates", action="store_true", help="skip the cache replays")
    st.add_argument("--domain", help="only this domain's sequences")
    st.add_argument("--force", action="store_true", help=FORCE_HELP)
    st.set_defaults(func=run_stats)

    ex = tsub.add_parser(
        "export",
        help="write a trace for other tools: parquet (one row per access) or libcachesim (oracleGeneral)",
        description="Export a trace: --format parquet (one row per expert access) or libcachesim "
        "(libCacheSim's oracleGeneral binary, object id = layer x E + expert; docs/trace-format.md).",
    )
    ex.add_argument("trace", metavar="TRACE")
    ex.add_argument("--format", "-f", required=True, dest="fmt", choices=("parquet", "libcachesim"))
    ex.add_argument("--out", "-o", required=True, type=Path, help="output file")
    ex.add_argument("--force", action="store_true", help="replace --out if it is a file")
    ex.add_argument(
        "--batch", type=int, default=1, help="libcachesim: sequences decoded together (default 1)"
    )
    ex.add_argument("--prefill", action="store_true", help="libcachesim: include each group's prompt pass")
    ex.add_argument("--obj-size", type=int, default=1, help="libcachesim: bytes per object (default 1)")
    ex.set_defaults(func=run_export)


def _help(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 0


def _check_out(out: Path, force: bool, inputs: list) -> None:
    """Checked before the (slow) import or synthesis: see moesim/outputs.py."""
    from moesim.outputs import claim_output

    claim_output(out, "trace", force=force, strict=True, inputs=inputs)


def run_import(args: argparse.Namespace) -> int:
    from moesim.traces.importers import IMPORTERS, import_trace
    from moesim.traces.native import save_trace

    if args.fmt not in IMPORTERS:
        fail(f"unknown trace format {args.fmt!r}; known formats: {', '.join(IMPORTERS)}")
    _check_ranges(args, _IMPORT_RANGES)
    out = Path(args.out)
    _check_out(out, args.force, list(args.sources))
    options = {k: getattr(args, k) for k in _IMPORT_FLAGS if getattr(args, k) is not None}
    rejected = [_IMPORT_FLAGS[k] for k in options if k not in IMPORTERS[args.fmt].options]
    if rejected:
        takes = ", ".join(_IMPORT_FLAGS[k] for k in IMPORTERS[args.fmt].options if k in _IMPORT_FLAGS)
        fail(f"--format {args.fmt} does not take {', '.join(rejected)}; it takes: {takes or 'no options'}")
    trace = import_trace(args.fmt, args.sources, **options)
    save_trace(trace, out, validate=False)  # import_trace already validated it
    print(
        f"wrote {out}: {trace.num_sequences} sequences, {trace.num_tokens} decode tokens, "
        f"{trace.num_prefill_tokens} prefill tokens, {trace.meta.num_layers} layers, "
        f"E={trace.meta.num_experts}, k={trace.meta.top_k}"
    )
    return 0


def run_info(args: argparse.Namespace) -> int:
    from moesim.traces.info import render_info, trace_info
    from moesim.traces.native import load_trace

    trace = load_trace(args.trace, validate=not args.no_validate)
    info = trace_info(trace, digest=args.digest)
    if args.json:
        print(json.dumps(asdict(info), indent=2, sort_keys=True))
    else:
        render_info(info)
    return 0


def _capacities(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        caps = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        fail(f"--capacities {text!r}: give comma-separated integers, e.g. 64,128,256,512")
    if not caps or any(c < 1 for c in caps):
        fail(f"--capacities {text!r}: give positive integers")
    return caps


def _claim_synth_extras(args: argparse.Namespace, out: Path) -> dict:
    from moesim.outputs import claim_output

    inputs = [args.like, args.params, out]
    claims = {}
    if args.save_params:
        claims["params"] = claim_output(
            args.save_params,
            "synth-params",
            force=args.force,
            inputs=inputs,
            directory=False,
            flag="--save-params",
        )
    if args.report:
        claims["report"] = claim_output(
            args.report, "fit-report", force=args.force, inputs=inputs, flag="--report"
        )
    return claims


# Flag -> (lowest, highest) accepted: beyond these a trace would not fit in memory (or numpy's
# seed range), so the flag is refused before any work starts.
_SYNTH_RANGES: dict[str, tuple[int, int]] = {
    "sequences": (1, 1 << 20),
    "tokens": (1, 1 << 24),
    "prefill_tokens": (0, 1 << 24),
    "layers": (1, 1 << 12),
    "experts": (1, 1 << 15),
    "top_k": (1, 1 << 15),
    "seed": (0, (1 << 63) - 1),
    "fit_rounds": (0, 1000),
}
_IMPORT_RANGES: dict[str, tuple[int, int]] = {"num_experts": (1, 1 << 16), "num_layers": (1, 1 << 16)}
# Expert ids a synthetic trace may hold at most (decode + prompt): 2**30 int16 ids = 2 GiB.
_SYNTH_MAX_IDS = 1 << 30


def _check_ranges(args: argparse.Namespace, ranges: dict[str, tuple[int, int]]) -> None:
    for name, (lo, hi) in ranges.items():
        v = getattr(args, name, None)
        if v is not None and not lo <= v <= hi:
            fail(f"--{name.replace('_', '-')} {v}: must be in [{lo}, {hi}]")


def _check_synth_size(args: argparse.Namespace) -> None:
    if args.like or args.params:
        return
    if args.top_k > args.experts:
        fail(f"--top-k {args.top_k}: must be at most --experts ({args.experts})")
    seqs = 16 if args.sequences is None else args.sequences
    tokens = 128 if args.tokens is None else args.tokens
    ids = seqs * (tokens + args.prefill_tokens) * args.layers * args.top_k
    if ids > _SYNTH_MAX_IDS:
        fail(
            f"--sequences x (--tokens + --prefill-tokens) x --layers x --top-k = {ids:,} expert ids; "
            f"at most {_SYNTH_MAX_IDS:,} fit in memory, make the trace smaller"
        )


def run_synth(args: argparse.Namespace) -> int:
    from moesim.traces.native import save_trace

    _check_ranges(args, _SYNTH_RANGES)
    _check_synth_size(args)
    out = Path(args.out)
    _check_out(out, args.force, [args.like, args.params])
    args.claims = _claim_synth_extras(args, out)
    if args.like and args.params:
        fail("give either --like TRACE (fit) or --params FILE, not both")
    if args.report and not args.like:
        fail("--report compares with a real trace: it needs --like TRACE")
    if args.save_params and not args.like:
        fail("--save-params writes fitted parameters: it needs --like TRACE")
    if args.like or args.params:
        return _run_synth_fitted(args, out)
    from moesim.traces.synth import synthesize

    domains = tuple(d.strip() for d in args.domains.split(",") if d.strip())
    tokens = 128 if args.tokens is None else args.tokens
    trace = synthesize(
        16 if args.sequences is None else args.sequences,
        tokens,
        args.layers,
        args.experts,
        args.top_k,
        args.seed,
        domains=domains,
        prefill_tokens=args.prefill_tokens,
        weights=not args.no_weights,
        model=args.model,
    )
    save_trace(trace, out)
    print(f"wrote {out}: {trace.num_sequences} sequences x {tokens} decode tokens (seed {args.seed})")
    return 0


def _run_synth_fitted(args: argparse.Namespace, out: Path) -> int:
    from moesim.analysis.fit_report import fit_report
    from moesim.traces.fit import fit_trace, save_params
    from moesim.traces.native import load_trace, save_trace
    from moesim.traces.synth import synthesize_from_params

    caps = _capacities(args.capacities)
    real = None
    if args.like:
        real = load_trace(args.like)
        print(
            f"fitting the generator to {args.like} ({real.num_sequences} sequences, {real.num_tokens} tokens)"
        )
        # The fit's own random numbers are fixed (seed 0) so the fitted parameters depend on the
        # real trace only; --seed seeds the generated trace.
        params = fit_trace(real, rounds=args.fit_rounds, seed=0, log=lambda m: print(f"  {m}"))
        if args.save_params:
            args.claims["params"].write_file(lambda p: save_params(params, p))
            print(f"wrote {args.save_params}")
        doc: Any = params
    else:
        from moesim.traces.fit import load_params

        doc = load_params(args.params)
    trace = synthesize_from_params(
        doc, args.seed, num_sequences=args.sequences, tokens=args.tokens, where=args.params or args.like
    )
    save_trace(trace, out)
    print(
        f"wrote {out}: {trace.num_sequences} sequences, {trace.num_tokens} decode tokens (seed {args.seed})"
    )
    if args.report and real is not None:
        from moesim.cli.progress import token_progress

        n_caps = len(caps) if caps else None
        if n_caps is None:
            from moesim.analysis.hitrate import default_capacities

            n_caps = len(default_capacities(real))
        with token_progress(4 * n_caps, "fit report replays") as advance:
            verdict = args.claims["report"].write_dir(
                lambda d: fit_report(real, trace, d, capacities=caps, params=params, progress=advance)
            )
        print(
            f"wrote {args.report}/report.md: largest hit-rate difference "
            f"{verdict['max_abs_hit_rate_difference_pp']:.2f} pp, consecutive-overlap difference "
            f"{100 * verdict['consecutive_overlap_relative_difference']:+.1f}%"
        )
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from moesim.analysis.hitrate import default_capacities
    from moesim.analysis.stats import compute_stats, write_stats
    from moesim.cli.progress import token_progress
    from moesim.outputs import claim_output
    from moesim.traces.native import load_trace

    claim = claim_output(args.out, "trace-stats", force=args.force, inputs=[args.trace])
    trace = load_trace(args.trace)
    if args.domain is not None:
        trace = trace.select_domain(args.domain)
    caps = _capacities(args.capacities) or list(default_capacities(trace, args.scope))
    # One bar in token units: the statistics pass reads every token once, each cache replay again.
    replays = 0 if args.no_hit_rates else 2 * len(caps)
    n = trace.num_tokens
    with token_progress(n * (1 + replays), "statistics") as advance:
        stats = compute_stats(
            trace,
            capacities=caps,
            hit_rates=not args.no_hit_rates,
            scope=args.scope,
            progress=advance,
            replay_progress=(lambda k: advance(k * n)) if advance is not None else None,
        )
    files = claim.write_dir(lambda d: write_stats(stats, d))
    _print_stats(stats)
    print(f"wrote {len(files)} files to {args.out}")
    return 0


def _print_stats(stats: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="per-layer routing statistics", title_justify="left")
    for col in ("layer", "entropy bits", "norm.", "top-10", "top-20", "Gini", "overlap", "MI next (bits)"):
        table.add_column(col, justify="right")
    for r in stats.layers:
        mi = r["mi_next_layer_mm_bits"]
        table.add_row(
            str(r["layer"]),
            f"{r['entropy_bits']:.3f}",
            f"{r['normalized_entropy']:.3f}",
            f"{r['top10_share']:.3f}",
            f"{r['top20_share']:.3f}",
            f"{r['gini']:.3f}",
            f"{r['consecutive_overlap']:.3f}",
            "-" if mi != mi else f"{mi:.3f}",
        )
    console.print(table)
    summary = stats.summary()
    if "hit_rate" in summary:
        ht = Table(title="hit rate vs capacity", title_justify="left")
        ht.add_column("capacity", justify="right")
        pols = list(summary["hit_rate"])
        for p in pols:
            ht.add_column(p, justify="right")
        caps = summary["hit_rate"][pols[0]]["capacities"]
        for i, c in enumerate(caps):
            ht.add_row(str(c), *[f"{summary['hit_rate'][p]['hit_rates'][i]:.4f}" for p in pols])
        console.print(ht)


def run_export(args: argparse.Namespace) -> int:
    from moesim.outputs import claim_output
    from moesim.traces.export import export
    from moesim.traces.native import load_trace

    claim = claim_output(
        args.out,
        f"trace-export-{args.fmt}",
        force=args.force,
        directory=False,
        strict=True,
        inputs=[args.trace],
    )
    trace = load_trace(args.trace)
    info = claim.write_file(
        lambda p: export(trace, args.fmt, p, batch=args.batch, prefill=args.prefill, obj_size=args.obj_size)
    )
    what = "rows" if args.fmt == "parquet" else "requests"
    print(f"wrote {info.path}: {info.records:,} {what}, {info.objects:,} objects")
    return 0
