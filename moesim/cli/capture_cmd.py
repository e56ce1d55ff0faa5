"""``moesim capture``: record a routing trace from a transformers MoE model (docs/capture.md)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from moesim.errors import fail


def register(sub: Any) -> None:
    p = sub.add_parser(
        "capture",
        help="capture a routing trace from a Hugging Face MoE model",
        description="Run a transformers MoE model (local folder or cached hub id; safetensors only) over "
        "prompt files and write its routing as a .moetrace (see docs/capture.md).",
    )
    p.add_argument("--model", "-m", required=True, metavar="PATH_OR_ID")
    p.add_argument(
        "--prompts",
        required=True,
        action="append",
        metavar="FILE",
        help="prompt file (.txt one per line, .jsonl, .json); repeat for several domains",
    )
    p.add_argument(
        "--domain",
        action="append",
        metavar="NAME",
        help="domain label of the matching --prompts file (default: the file's stem)",
    )
    p.add_argument("--out", "-o", required=True, help="output trace directory (NAME.moetrace)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--max-new-tokens", type=int, default=32, metavar="N")
    p.add_argument("--max-prompt-tokens", type=int, metavar="N", help="truncate longer prompts")
    p.add_argument("--batch-size", type=int, default=1, metavar="B")
    p.add_argument(
        "--hidden-states",
        action="store_true",
        help="also record pre-attention hidden states and router inputs (float16, large)",
    )
    p.add_argument("--router-probs", action="store_true", help="also record router probabilities over all E")
    p.add_argument("--probs-dtype", choices=("float32", "float16"), default="float32")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ignore-eos", action="store_true", help="always generate --max-new-tokens tokens")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--model-name", help="model name to record (default: the folder or id)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moesim.capture.prompts import read_prompts
    from moesim.outputs import claim_output

    out = claim_output(
        args.out, "trace", force=args.force, strict=True, inputs=[args.model, *args.prompts]
    ).path
    domains = args.domain or []
    if len(domains) > len(args.prompts):
        fail(
            f"{len(domains)} --domain labels for {len(args.prompts)} --prompts files; give at most one per file"
        )
    prompts = []
    for i, path in enumerate(args.prompts):
        prompts += read_prompts(path, domains[i] if i < len(domains) else None)

    # Heavy imports only now: the prompt files and --out were checked first, cheaply.
    from moesim.capture.capture import CaptureConfig, capture_model, load_model
    from moesim.cli.progress import token_progress
    from moesim.traces.native import save_trace

    cfg = CaptureConfig(
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        hidden_states=args.hidden_states,
        router_probs=args.router_probs,
        probs_dtype=args.probs_dtype,
        sample=args.sample,
        temperature=args.temperature,
        seed=args.seed,
        stop_on_eos=not args.ignore_eos,
        max_prompt_tokens=args.max_prompt_tokens,
    )
    cfg.check()
    model, tokenizer = load_model(args.model, args.dtype, args.device)
    token_lists = []
    for p in prompts:
        if p.token_ids is not None:
            token_lists.append(list(p.token_ids))
            continue
        if tokenizer is None:
            fail(
                f"{p.name}: a text prompt needs a tokenizer, and {args.model} has none; give 'token_ids' instead"
            )
        token_lists.append(list(tokenizer(p.text, add_special_tokens=True)["input_ids"]))
    pad = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
    name = args.model_name or Path(args.model.rstrip("/")).name
    total = sum(len(t[: cfg.max_prompt_tokens]) for t in token_lists) + cfg.max_new_tokens * len(token_lists)
    with token_progress(total, "capture") as advance:
        trace = capture_model(
            model,
            token_lists,
            [p.domain for p in prompts],
            cfg,
            model_name=name,
            pad_token_id=pad,
            names=[p.name for p in prompts],
            extra={"command": _command_line(args)},
            progress=advance,
        )
    save_trace(trace, out, validate=False)  # capture_model validated it
    print(
        f"wrote {out}: {trace.num_sequences} sequences, {trace.num_tokens} decode tokens, "
        f"{trace.num_prefill_tokens} prefill tokens, {trace.meta.num_layers} MoE layers, "
        f"E={trace.meta.num_experts}, k={trace.meta.top_k}, fields {', '.join(trace.fields_present())}"
    )
    return 0


def _command_line(args: argparse.Namespace) -> str:
    """The capture command as given (rebuilt from the parsed options, so it is exact in tests too)."""
    parts = ["moesim", "capture", "--model", args.model]
    for i, path in enumerate(args.prompts):
        parts += ["--prompts", path]
        if args.domain and i < len(args.domain):
            parts += ["--domain", args.domain[i]]
    parts += [
        "--out",
        args.out,
        "--max-new-tokens",
        str(args.max_new_tokens),
        "--batch-size",
        str(args.batch_size),
    ]
    if args.max_prompt_tokens is not None:
        parts += ["--max-prompt-tokens", str(args.max_prompt_tokens)]
    for flag in ("hidden_states", "router_probs", "sample", "ignore_eos"):
        if getattr(args, flag):
            parts.append("--" + flag.replace("_", "-"))
    if args.sample:
        parts += ["--temperature", str(args.temperature), "--seed", str(args.seed)]
    if args.router_probs and args.probs_dtype != "float32":
        parts += ["--probs-dtype", args.probs_dtype]
    if args.dtype != "auto":
        parts += ["--dtype", args.dtype]
    return shlex.join(parts)
