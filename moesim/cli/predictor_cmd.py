"""``moesim predictor list | train | eval | crossdomain | predictability``: offline work on expert
predictors (docs/predictors.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from moesim.errors import fail
from moesim.outputs import FORCE_HELP, claim_output


def register(sub: Any) -> None:
    p = sub.add_parser("predictor", help="train and evaluate expert predictors offline")
    psub = p.add_subparsers(dest="predictor_command", metavar="SUBCOMMAND", parser_class=type(p))
    p.set_defaults(func=lambda args: _help(p))

    ls = psub.add_parser("list", help="the registered predictors, what they observe and when they fire")
    ls.set_defaults(func=run_list)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("name", metavar="NAME", help="predictor (moesim predictor list)")
        q.add_argument("--trace", "-t", required=True, help="a .moetrace")
        q.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE", help="predictor.params entry"
        )
        q.add_argument("--seed", type=int, default=0, help="split, training and noise seed")
        q.add_argument("--domain", help="use only this domain's sequences")

    def split_args(q: argparse.ArgumentParser) -> None:
        g = q.add_mutually_exclusive_group()
        g.add_argument("--split", type=float, default=0.8, help="training fraction per domain (default 0.8)")
        g.add_argument("--holdout-domain", metavar="D", help="train on every other domain, test on D")

    tr = psub.add_parser("train", help="train a learned predictor and save its model (safetensors or .pt)")
    common(tr)
    split_args(tr)
    tr.add_argument("--out", "-o", required=True, metavar="MODEL", help="model file (.safetensors or .pt)")
    tr.add_argument("--force", action="store_true", help=FORCE_HELP)
    tr.set_defaults(func=run_train)

    ev = psub.add_parser("eval", help="accuracy on held-out sequences, per layer and per horizon")
    common(ev)
    split_args(ev)
    ev.add_argument("--model", help="a model file from moesim predictor train (else trained on the split)")
    ev.add_argument("--horizons", default="1", help="comma list of horizons, e.g. 1,2,3 (default 1)")
    ev.add_argument("--overprovision", type=int, default=4, help="m of the top-(k+m) metrics (default 4)")
    ev.add_argument("--threshold", type=float, help="drop predicted experts scoring below this")
    ev.add_argument("--profile", help="hardware profile for in-time accuracy (with --model-name)")
    ev.add_argument("--model-name", help="catalog model whose expert size and layer times apply")
    ev.add_argument("--model-config", help="or a Hugging Face config.json of that model")
    ev.add_argument(
        "--prompt-tokens", type=int, help="context before decode (default: trace prefill, else 512)"
    )
    ev.add_argument("--interface", action="store_true", help="drive the predictor step by step (no batching)")
    ev.add_argument(
        "--save-model", metavar="MODEL", help="also save the model trained here (.safetensors or .pt)"
    )
    ev.add_argument("--out", "-o", required=True, metavar="DIR")
    ev.add_argument("--force", action="store_true", help=FORCE_HELP)
    ev.set_defaults(func=run_eval)

    cd = psub.add_parser("crossdomain", help="train on each domain, test on each: matrix CSV + heatmap")
    common(cd)
    cd.add_argument("--split", type=float, default=0.8, help="training fraction within each domain")
    cd.add_argument("--horizon", type=int, default=1)
    cd.add_argument("--overprovision", type=int, default=4)
    cd.add_argument("--out", "-o", required=True, metavar="DIR")
    cd.add_argument("--force", action="store_true", help=FORCE_HELP)
    cd.set_defaults(func=run_crossdomain)

    pr = psub.add_parser("predictability", help="entropy and mutual information of a trace's routing")
    pr.add_argument("--trace", "-t", required=True)
    pr.add_argument("--context", type=int, default=3, help="largest history c (default 3)")
    pr.add_argument("--domain", help="use only this domain's sequences")
    pr.add_argument("--seed", type=int, default=0, help="seed of the shuffle control")
    pr.add_argument("--out", "-o", required=True, metavar="DIR")
    pr.add_argument("--force", action="store_true", help=FORCE_HELP)
    pr.set_defaults(func=run_predictability)


def _help(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 0


def _progress_to_stderr() -> None:
    from moesim.policies.predictors import _common

    if not _common.PROGRESS:
        _common.PROGRESS.append(lambda msg: print(msg, file=sys.stderr, flush=True))


def _params(sets: list[str]) -> dict[str, Any]:
    from moesim.experiments.scenario import parse_override

    out: dict[str, Any] = {}
    for text in sets:
        key, value = parse_override(text)
        if key.startswith("predictor.params."):
            key = key[len("predictor.params.") :]
        if not key or "." in key:
            fail(f"--set {text!r}: give a predictor parameter, e.g. --set epochs=4")
        out[key] = value
    return out


def _load(path: str, domain: str | None):
    from moesim.traces.native import load_trace

    trace = load_trace(path)
    if domain is not None:
        trace = trace.select_domain(domain)
    if trace.num_sequences == 0:
        fail(f"{path}: no sequences")
    return trace


def _split(trace, args: argparse.Namespace):
    from moesim.evaluation.splits import split_by_domain, split_by_sequence

    if getattr(args, "holdout_domain", None):
        return split_by_domain(trace, args.holdout_domain)
    return split_by_sequence(trace, args.split, args.seed)


def _horizons(text: str) -> list[int]:
    try:
        hs = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        fail(f"--horizons {text!r}: give a comma list of integers, e.g. 1,2,3")
    if not hs or min(hs) < 1:
        fail(f"--horizons {text!r}: horizons are >= 1")
    return hs


def _check_out_model(path: Path) -> None:
    if path.suffix not in (".safetensors", ".pt", ".pth"):
        fail(f"--out {path}: name the model file .safetensors (default format) or .pt")


# -- list ------------------------------------------------------------------------------------------
def run_list(args: argparse.Namespace) -> int:
    from moesim.evaluation.harness import predictor_class
    from moesim.policies.registries import PREDICTORS

    for name in PREDICTORS.names():
        cls = predictor_class(name)
        extra = " [trainable]" if getattr(cls, "trainable", False) else ""
        extra += " [lookahead]" if cls.lookahead else ""
        print(
            f"{name:14s} fires {cls.fires:13s} runs on {cls.runs_on:4s} observes: {', '.join(sorted(cls.observes)) or '-'}{extra}"
        )
    return 0


# -- train -----------------------------------------------------------------------------------------
def run_train(args: argparse.Namespace) -> int:
    _progress_to_stderr()
    from moesim.evaluation.harness import check_params, require_trainable, save_learned
    from moesim.evaluation.report import prepare_predictor

    out = Path(args.out)
    _check_out_model(out)
    claim = claim_output(out, "predictor-model", force=args.force, inputs=[args.trace], directory=False)
    params = _params(args.set)
    require_trainable(args.name)
    check_params(args.name, params)
    trace = _load(args.trace, args.domain)
    split = _split(trace, args)
    train = trace.select(split.train)
    print(f"training {args.name} on {len(split.train)} sequences ({split.how}) ...", file=sys.stderr)
    trained = prepare_predictor(args.name, train, params, args.seed)
    if trained.model is None:
        fail(f"predictor {args.name} has no model to train")
    if hasattr(trained.model, "info"):
        from moesim.experiments.holdout import DIGESTS_KEY, sequence_digests

        trained.model.info = {**trained.model.info, "split": split.how, "trace": str(args.trace)}
        trained.model.info[DIGESTS_KEY] = sequence_digests(train)  # runs replay only the others
    claim.write_file(lambda p: save_learned(args.name, trained.model, p))
    info = trained.info
    line = f"wrote {out}: {args.name}"
    if "num_params" in info:
        line += f", {info['num_params']:,} parameters"
    t = info.get("training", {}).get("train_seconds")
    if t is not None:
        line += f", trained in {t:.1f} s"
    print(line)
    return 0


# -- eval ------------------------------------------------------------------------------------------
def run_eval(args: argparse.Namespace) -> int:
    _progress_to_stderr()
    import pandas as pd

    from moesim.evaluation.harness import predictor_class
    from moesim.evaluation.report import PAPER_CLAIMS, make_timing, measured_latency, prepare_predictor
    from moesim.evaluation.report import run_eval as evaluate_all
    from moesim.io import atomic_write_json, atomic_write_text

    params = _params(args.set)
    horizons = _horizons(args.horizons)
    if args.overprovision < 0:
        fail(f"--overprovision: must be >= 0, got {args.overprovision}")
    predictor_class(args.name)
    inputs = [args.trace, args.model, args.profile, args.model_config]
    claim = claim_output(args.out, "predictor-eval", force=args.force, inputs=inputs)
    model_claim = None
    if args.save_model:
        _check_out_model(Path(args.save_model))
        if Path(args.out).resolve() in Path(args.save_model).resolve().parents:
            fail(
                f"--save-model {args.save_model}: give a path outside --out {args.out} (that folder is replaced)"
            )
        model_claim = claim_output(
            args.save_model,
            "predictor-model",
            force=args.force,
            inputs=inputs,
            directory=False,
            flag="--save-model",
        )
    trace = _load(args.trace, args.domain)
    split = _split(trace, args)
    train, test = split.traces(trace)
    timing = make_timing(test, args.profile, args.model_name, args.prompt_tokens, args.model_config)
    trained = prepare_predictor(args.name, train, params, args.seed, args.model)
    if args.save_model:
        from moesim.evaluation.harness import save_learned

        if trained.model is None:
            fail(f"--save-model: predictor {args.name} has no model to save")
        model_claim.write_file(lambda p: save_learned(args.name, trained.model, p))
    acc, facts = evaluate_all(
        args.name,
        trained,
        test,
        horizons,
        args.seed,
        args.overprovision,
        args.threshold,
        timing,
        fast=not args.interface,
    )
    per_h = acc.per_horizon()
    latency = measured_latency(args.name, trained, test, args.seed)
    result = {
        "predictor": args.name,
        "trace": str(args.trace),
        "domain": args.domain,
        "split": split.how,
        "train_sequences": int(len(split.train)),
        "test_sequences": int(len(split.test)),
        "params": {k: v for k, v in trained.params.items() if k != "model"},
        "model": {k: v for k, v in trained.info.items()},
        "seed": args.seed,
        "top_k": test.meta.top_k,
        "overprovision": args.overprovision,
        "threshold": args.threshold,
        "per_horizon": {str(h): v for h, v in per_h.items()},
        "in_time": None
        if timing is None
        else {
            "profile": args.profile,
            "model_name": args.model_name or args.model_config,
            "prompt_tokens": timing.prompt_tokens,
            "copy_ms_per_expert": round(timing.copy_ms, 6),
            "predictor_ms": timing.predictor_ms,
            "method": "per-layer compute-time budget from the profile, cold cache, idle link (moesim/evaluation/timing.py)",
        },
        "cpu_latency_ms": latency,
        "paper": PAPER_CLAIMS.get(args.name),
        **facts,
        "definitions": "docs/predictors.md#metrics and moesim/evaluation/metrics.py",
    }
    out = claim.open_dir()
    atomic_write_json(out / "metrics.json", result)
    atomic_write_text(out / "per_layer.csv", pd.DataFrame(acc.per_layer()).to_csv(index=False))
    rel = [{"horizon": h, **r} for h in acc.horizons() for r in acc.reliability(h)]
    atomic_write_text(out / "reliability.csv", pd.DataFrame(rel).to_csv(index=False))
    if latency:
        atomic_write_text(
            out / "latency.yaml",
            "# CPU time of one firing (ms) by batch size, measured on this machine; use with\n"
            f"# --set 'predictor.params={{latency_ms: {out / 'latency.yaml'}}}'\n"
            + "".join(f"{b}: {ms}\n" for b, ms in latency.items()),
        )
    _print_eval(args.name, per_h, trained.info, timing is not None)
    print(f"wrote {out}/metrics.json, per_layer.csv, reliability.csv" + (", latency.yaml" if latency else ""))
    return 0


def _print_eval(name: str, per_h: dict, info: dict, timed: bool) -> None:
    cols = ["recall_at_k", "top1", "exact_match", "overprov_recall", "overprov_cover", "precision", "ece"]
    if timed:
        cols.append("in_time_recall")
    head = f"{'h':>3} {'predictions':>11} " + " ".join(f"{c:>15}" for c in cols)
    print(f"{name}" + (f" ({info['num_params']:,} parameters)" if "num_params" in info else ""))
    print(head)
    for h, row in per_h.items():
        vals = " ".join(f"{row[c]:>15.4f}" if row.get(c) is not None else f"{'-':>15}" for c in cols)
        print(f"{h:>3} {row['predictions']:>11} {vals}")


# -- crossdomain -----------------------------------------------------------------------------------
def run_crossdomain(args: argparse.Namespace) -> int:
    _progress_to_stderr()
    import pandas as pd

    from moesim.evaluation.report import crossdomain, heatmap
    from moesim.io import atomic_write_json, atomic_write_text, atomic_write_with

    params = _params(args.set)
    if args.horizon < 1:
        fail(f"--horizon: must be >= 1, got {args.horizon}")
    claim = claim_output(args.out, "predictor-crossdomain", force=args.force, inputs=[args.trace])
    trace = _load(args.trace, args.domain)
    rows, domains, info = crossdomain(
        args.name,
        trace,
        params,
        args.split,
        args.seed,
        args.horizon,
        args.overprovision,
        progress=lambda msg: print(msg, file=sys.stderr),
    )
    out = claim.open_dir()
    df = pd.DataFrame(rows)
    atomic_write_text(out / "matrix.csv", df.to_csv(index=False))
    wide = df.pivot(index="train_domain", columns="test_domain", values="recall_at_k").reindex(
        index=domains, columns=domains
    )
    atomic_write_text(out / "matrix_recall_at_k.csv", wide.to_csv())
    title = f"{args.name}: recall@k (k={trace.meta.top_k}), h={args.horizon}, held-out sequences"
    atomic_write_with(
        out / "heatmap_recall_at_k.png", lambda p: heatmap(rows, domains, "recall_at_k", title, p)
    )
    atomic_write_with(
        out / "heatmap_top1.png",
        lambda p: heatmap(rows, domains, "top1", f"{args.name}: top-1, h={args.horizon}", p),
    )
    atomic_write_json(
        out / "summary.json",
        {
            "predictor": args.name,
            "trace": str(args.trace),
            "domains": domains,
            "split": f"{args.split:g} of each domain's sequences train (seed {args.seed}); test = the rest",
            "horizon": args.horizon,
            "params": params,
            "seed": args.seed,
            "models": info,
            "cells": rows,
        },
    )
    print(wide.round(4).to_string())
    print(
        f"wrote {out}/matrix.csv, matrix_recall_at_k.csv, heatmap_recall_at_k.png, heatmap_top1.png, summary.json"
    )
    return 0


# -- predictability --------------------------------------------------------------------------------
def run_predictability(args: argparse.Namespace) -> int:
    from moesim.analysis.predictability import predictability, write_predictability

    claim = claim_output(args.out, "predictability", force=args.force, inputs=[args.trace])
    trace = _load(args.trace, args.domain)
    res = predictability(trace, args.context, args.seed)
    files = write_predictability(res, claim.open_dir())
    s = res.summary
    print(f"H(top-1) mean {s['entropy_mm_mean']:.3f} bits of log2(E) = {res.meta['max_entropy_bits']:.3f}")
    for c in range(1, args.context + 1):
        print(
            f"c={c}: I = {s[f'c{c}_mi_corrected_mean']:.3f} bits (MM {s[f'c{c}_mi_mm_mean']:.3f}, shuffle "
            f"{s[f'c{c}_mi_shuffle_mean']:.3f}); {100 * s[f'c{c}_frac_of_entropy_mean']:.1f}% of H(Y), "
            f"{100 * s[f'c{c}_frac_of_max_mean']:.1f}% of log2(E)"
        )
    print(f"temporal (previous token, same layer): I = {s['temporal_mi_corrected_mean']:.3f} bits")
    print("wrote " + ", ".join(str(f) for f in files))
    return 0
