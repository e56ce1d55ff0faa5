"""Run a transformers MoE model over prompts and record its routing as a moesim Trace.

What is recorded, per sequence (one prompt):
- prefill: the prompt's tokens in one forward pass -> ``prefill_experts`` (P, L, k);
- decode: each generated token is fed back through the cached model, one forward per token; the
  routing of the forward that *consumes* generated token t is decode row t (as in the OLMoE
  trace), with ``token_ids[t]`` = that token. Generation stops after ``max_new_tokens`` tokens or at
  an end-of-sequence token, which is not fed (it would never be run in serving).
- per (decode token, MoE layer): the top-k ids sorted by descending router weight (rank 0 =
  highest; the model's own order where weights tie), their weights (the combine weights the model
  multiplies expert outputs by), and optionally the router probabilities over all E, the
  pre-attention hidden state (what the layer's attention receives: the input layernorm's output)
  and the router input (the post-attention layernorm's output). Hidden states are float16.

Batches of prompts are left-padded; padded positions and finished sequences are dropped, so the
trace does not depend on the batch size beyond float rounding. Hooks are forward (pre-)hooks on
the family's attention and router modules, found by isinstance (moesim/capture/families.py), and
are removed when capture ends, even on error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moesim.capture.families import Family, Resolved, family_of, parse_router_output, resolve, router_probs
from moesim.errors import fail
from moesim.traces.importers.common import offsets_from_lengths
from moesim.traces.trace import Trace, TraceMeta

_FP16_MAX = float(np.finfo(np.float16).max)
_DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class CaptureConfig:
    max_new_tokens: int = 32
    batch_size: int = 1
    hidden_states: bool = False  # record hidden_states and router_inputs (N, L, H) float16
    router_probs: bool = False  # record router_probs (N, L, E)
    probs_dtype: str = "float32"  # or float16, to halve a large (N, L, E) array
    sample: bool = False  # greedy when False
    temperature: float = 1.0
    seed: int = 0
    stop_on_eos: bool = True
    max_prompt_tokens: int | None = None  # keep the first N tokens of longer prompts

    def check(self) -> None:
        if self.max_new_tokens < 1:
            fail(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            fail(f"batch_size must be >= 1, got {self.batch_size}")
        if self.sample and not self.temperature > 0:
            fail(f"temperature must be > 0 when sampling, got {self.temperature}")
        if self.probs_dtype not in ("float32", "float16"):
            fail(f"probs_dtype must be float32 or float16, got {self.probs_dtype!r}")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            fail(f"max_prompt_tokens must be >= 1, got {self.max_prompt_tokens}")


@dataclass(frozen=True)
class MoELayer:
    index: int  # model layer index
    attention: Any  # the attention module (its input is the pre-attention hidden state)
    router: Any


def find_moe_layers(model: Any, res: Resolved) -> list[MoELayer]:
    """MoE layers in model order; dense layers (no router inside) are skipped."""
    decoders = [m for m in model.modules() if isinstance(m, res.decoder_layer)]
    if not decoders:
        fail(
            f"{res.family.title}: the model holds no {res.decoder_layer.__name__}; is it really this family?"
        )
    layers = []
    for i, dec in enumerate(decoders):
        routers = [m for m in dec.modules() if isinstance(m, res.router)]
        attns = [m for m in dec.modules() if isinstance(m, res.attention)]
        if not routers:
            continue
        if len(routers) != 1 or len(attns) != 1:
            fail(
                f"{res.family.title}: decoder layer {i} holds {len(routers)} routers and {len(attns)} "
                "attention modules; expected one of each"
            )
        index = getattr(attns[0], "layer_idx", None)
        layers.append(MoELayer(int(index) if isinstance(index, int) else i, attns[0], routers[0]))
    if not layers:
        fail(f"{res.family.title}: no MoE layer found (no {res.router.__name__} module in any decoder layer)")
    return layers


def _router_shape(layer: MoELayer, config: Any) -> tuple[int, int]:
    E = getattr(layer.router, "num_experts", None)
    k = getattr(layer.router, "top_k", None)
    E = (
        E
        if isinstance(E, int)
        else getattr(config, "num_local_experts", getattr(config, "num_experts", None))
    )
    k = k if isinstance(k, int) else getattr(config, "num_experts_per_tok", None)
    if not isinstance(E, int) or not isinstance(k, int):
        fail("cannot tell the number of experts / top-k from the router or the config")
    return int(E), int(k)


@dataclass
class _Recorder:
    """Collects one forward pass's routing from the hooks (index = position in ``layers``)."""

    fam: Family
    top_k: int
    want_hidden: bool
    want_probs: bool
    extras: bool = False  # hidden states / probs are kept for decode forwards only
    step: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)

    def attention_hook(self, li: int) -> Callable[..., None]:
        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            if not (self.extras and self.want_hidden):
                return
            hs = kwargs.get("hidden_states", args[0] if args else None)
            if hs is None:
                fail(f"{self.fam.title}: attention was called without hidden_states; cannot record them")
            self.step.setdefault(li, {})["hidden"] = hs.detach().reshape(-1, hs.shape[-1]).float()

        return hook

    def router_hook(self, li: int) -> Callable[..., None]:
        def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
            ids, weights, logits = parse_router_output(self.fam, output, self.top_k)
            # rank order = descending weight; a stable sort keeps the model's order on ties
            order = torch.sort(weights, dim=-1, descending=True, stable=True).indices
            entry = self.step.setdefault(li, {})
            entry["ids"] = ids.gather(1, order)
            entry["w"] = weights.gather(1, order)
            if self.extras and self.want_probs:
                entry["probs"] = router_probs(self.fam, logits)
            if self.extras and self.want_hidden:
                x = kwargs.get("hidden_states", args[0] if args else None)
                entry["rin"] = x.detach().reshape(-1, x.shape[-1]).float()

        return hook

    def take(self, num_layers: int) -> dict[str, torch.Tensor]:
        """Stack the forward's records over layers: each value is (rows, L, ...)."""
        missing = [li for li in range(num_layers) if "ids" not in self.step.get(li, {})]
        if missing:
            fail(f"{self.fam.title}: router of MoE layer {missing[0]} did not run during the forward pass")
        out = {}
        for key in ("ids", "w", "probs", "hidden", "rin"):
            if key in self.step[0]:
                out[key] = torch.stack([self.step[li][key] for li in range(num_layers)], dim=1)
        self.step = {}
        return out


@dataclass
class _Seq:
    prefill: np.ndarray | None = None
    ids: list[np.ndarray] = field(default_factory=list)
    w: list[np.ndarray] = field(default_factory=list)
    probs: list[np.ndarray] = field(default_factory=list)
    hidden: list[np.ndarray] = field(default_factory=list)
    rin: list[np.ndarray] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)


def _eos_ids(model: Any, vocab: int) -> set[int]:
    ids: set[int] = set()
    for src in (getattr(model, "generation_config", None), model.config):
        val = getattr(src, "eos_token_id", None) if src is not None else None
        for v in val if isinstance(val, (list, tuple)) else [val]:
            if isinstance(v, int) and 0 <= v < vocab:  # random test configs name ids past the vocab
                ids.add(v)
    return ids


class _Clamp:
    """float16 conversion that saturates instead of overflowing to inf, counting what it clipped."""

    def __init__(self) -> None:
        self.clipped = 0

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        over = x.abs() > _FP16_MAX
        if bool(over.any()):
            self.clipped += int(over.sum())
            x = x.clamp(-_FP16_MAX, _FP16_MAX)
        return x.to(torch.float16).cpu().numpy()


def _left_pad(prompts: list[list[int]], pad: int, device: Any) -> tuple[torch.Tensor, ...]:
    """Input ids, attention mask and positions, left-padded so every prompt ends at the last column."""
    B, S = len(prompts), max(len(p) for p in prompts)
    input_ids = torch.full((B, S), pad, dtype=torch.long)
    mask = torch.zeros((B, S), dtype=torch.long)
    for b, p in enumerate(prompts):
        input_ids[b, S - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[b, S - len(p) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return input_ids.to(device), mask.to(device), pos.to(device)


def _next_tokens(logits: torch.Tensor, cfg: CaptureConfig, gen: torch.Generator) -> torch.Tensor:
    if cfg.sample:
        probs = torch.softmax(logits.float() / cfg.temperature, dim=-1).cpu()
        return torch.multinomial(probs, 1, generator=gen).squeeze(1)
    return logits.float().argmax(-1).cpu()


def _feed(nxt: torch.Tensor, active: list[bool], cfg: CaptureConfig, eos: set[int], pad: int) -> torch.Tensor:
    """The tokens fed next: finished sequences (``active`` updated in place) are fed padding."""
    fed = nxt.clone()
    for b in range(len(active)):
        if active[b] and cfg.stop_on_eos and int(nxt[b]) in eos:
            active[b] = False
        if not active[b]:
            fed[b] = pad
    return fed


def _step_arrays(step: dict[str, torch.Tensor], clamp: _Clamp) -> dict[str, np.ndarray]:
    arrays = {"ids": step["ids"].cpu().numpy(), "w": step["w"].cpu().numpy()}
    if "probs" in step:
        arrays["probs"] = step["probs"].cpu().numpy()
    for key in ("hidden", "rin"):
        if key in step:
            arrays[key] = clamp(step[key])
    return arrays


def _append_step(
    seqs: list[_Seq], active: list[bool], fed: torch.Tensor, arrays: dict[str, np.ndarray]
) -> None:
    for b, s in enumerate(seqs):
        if not active[b]:
            continue
        s.tokens.append(int(fed[b]))
        s.ids.append(arrays["ids"][b])
        s.w.append(arrays["w"][b])
        for key, column in (("probs", s.probs), ("hidden", s.hidden), ("rin", s.rin)):
            if key in arrays:
                column.append(arrays[key][b])


def _run_batch(
    model: Any,
    prompts: list[list[int]],
    cfg: CaptureConfig,
    rec: _Recorder,
    L: int,
    gen: torch.Generator,
    eos: set[int],
    pad: int,
    clamp: _Clamp,
    progress: Callable[[int], None] | None,
) -> list[_Seq]:
    device = next(model.parameters()).device
    B = len(prompts)
    input_ids, mask, pos = _left_pad(prompts, pad, device)
    S = input_ids.shape[1]
    seqs = [_Seq() for _ in range(B)]

    rec.extras = False
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=pos, use_cache=True)
    ids = rec.take(L)["ids"].reshape(B, S, L, -1).cpu().numpy()
    for b, p in enumerate(prompts):
        seqs[b].prefill = ids[b, S - len(p) :]
    if progress is not None:
        progress(sum(len(p) for p in prompts))

    past = out.past_key_values
    logits = out.logits[:, -1]
    active = [True] * B
    next_pos = pos[:, -1:] + 1
    for _ in range(cfg.max_new_tokens):
        fed = _feed(_next_tokens(logits, cfg, gen), active, cfg, eos, pad)
        if not any(active):
            break
        mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=device)], dim=1)
        rec.extras = True
        out = model(
            input_ids=fed[:, None].to(device),
            attention_mask=mask,
            position_ids=next_pos,
            past_key_values=past,
            use_cache=True,
        )
        _append_step(seqs, active, fed, _step_arrays(rec.take(L), clamp))
        if progress is not None:
            progress(sum(active))
        past = out.past_key_values
        logits = out.logits[:, -1]
        next_pos = next_pos + 1
    return seqs


def capture_model(
    model: Any,
    prompts: Sequence[Sequence[int]],
    domains: Sequence[str],
    cfg: CaptureConfig = CaptureConfig(),
    *,
    model_name: str = "",
    pad_token_id: int | None = None,
    names: Sequence[str] | None = None,
    source: str = "",
    extra: dict | None = None,
    progress: Callable[[int], None] | None = None,
) -> Trace:
    """Capture routing of ``model`` (a transformers MoE causal LM) over tokenised ``prompts``.

    ``domains[i]`` labels prompt i. Returns a validated Trace (decode rows + prefill rows).
    """
    cfg.check()
    if len(prompts) != len(domains) or not prompts:
        fail("capture: give at least one prompt and exactly one domain per prompt")
    fam = family_of(model.config)
    res = resolve(fam)
    layers = find_moe_layers(model, res)
    E, k = _router_shape(layers[0], model.config)
    L = len(layers)
    vocab = int(model.get_input_embeddings().num_embeddings)
    prompt_ids = []
    for i, p in enumerate(prompts):
        ids = [int(t) for t in p][: cfg.max_prompt_tokens]
        if not ids:
            fail(f"capture: prompt {i} is empty")
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            fail(f"capture: prompt {i} holds token id {bad[0]} outside the vocabulary [0, {vocab})")
        prompt_ids.append(ids)
    eos = _eos_ids(model, vocab)
    pad = pad_token_id if pad_token_id is not None else (min(eos) if eos else 0)

    rec = _Recorder(fam, k, cfg.hidden_states, cfg.router_probs)
    handles = []
    for li, layer in enumerate(layers):
        handles.append(layer.attention.register_forward_pre_hook(rec.attention_hook(li), with_kwargs=True))
        handles.append(layer.router.register_forward_hook(rec.router_hook(li), with_kwargs=True))
    gen = torch.Generator().manual_seed(cfg.seed)
    clamp = _Clamp()
    was_training = model.training
    model.eval()
    seqs: list[_Seq] = []
    try:
        with torch.no_grad():
            for start in range(0, len(prompt_ids), cfg.batch_size):
                batch = prompt_ids[start : start + cfg.batch_size]
                seqs += _run_batch(model, batch, cfg, rec, L, gen, eos, pad, clamp, progress)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return _build_trace(
        model, fam, layers, E, k, seqs, prompt_ids, domains, cfg, clamp, model_name, names, source, extra
    )


def _stack(parts: list[np.ndarray], shape_tail: tuple[int, ...], dtype: Any) -> np.ndarray:
    return np.stack(parts).astype(dtype, copy=False) if parts else np.zeros((0, *shape_tail), dtype)


def _build_trace(
    model: Any,
    fam: Family,
    layers: list[MoELayer],
    E: int,
    k: int,
    seqs: list[_Seq],
    prompt_ids: list[list[int]],
    domains: Sequence[str],
    cfg: CaptureConfig,
    clamp: _Clamp,
    model_name: str,
    names: Sequence[str] | None,
    source: str,
    extra: dict | None,
) -> Trace:
    import transformers

    L = len(layers)
    id_dtype = np.int16 if np.iinfo(np.int16).max >= E else np.int32
    rows = [_stack(s.ids, (L, k), id_dtype) for s in seqs]
    # the recorded width when there is one (multimodal configs keep hidden_size in a text sub-config)
    first = next((s.hidden[0] for s in seqs if s.hidden), None)
    text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    hidden_size = int(first.shape[-1]) if first is not None else int(getattr(text_config, "hidden_size", 0))
    domain_names = tuple(dict.fromkeys(domains))
    dtype = next(model.parameters()).dtype
    layer_idx = tuple(layer.index for layer in layers)
    gen_desc = f"sampled (temperature {cfg.temperature}, seed {cfg.seed})" if cfg.sample else "greedy"
    meta_extra = {
        "capture": {
            "family": fam.key,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "decoding": "sample" if cfg.sample else "greedy",
            "temperature": cfg.temperature if cfg.sample else None,
            "seed": cfg.seed,
            "max_new_tokens": cfg.max_new_tokens,
            "batch_size": cfg.batch_size,
            "stop_on_eos": cfg.stop_on_eos,
            "model_dtype": str(dtype).replace("torch.", ""),
            "hidden_size": hidden_size,
            "router_probs": f"{fam.probs} of the router logits over all experts"
            if cfg.router_probs
            else None,
            "fp16_clipped_values": clamp.clipped,
        },
        "prompt_lengths": [len(p) for p in prompt_ids],
        **(extra or {}),
    }
    if names is not None:
        meta_extra["sequence_names"] = [str(n) for n in names]
    meta = TraceMeta(
        model=model_name or str(getattr(model.config, "_name_or_path", "") or fam.key),
        num_layers=L,
        num_experts=E,
        top_k=k,
        layer_indices=() if layer_idx == tuple(range(L)) else layer_idx,
        num_shared_experts=_shared_experts(model.config, fam),
        dtype=_DTYPE_NAMES.get(dtype, str(dtype).replace("torch.", "")),
        domains=domain_names,
        source=source
        or (
            f"moesim capture of {model_name or fam.title} ({fam.title} family, transformers "
            f"{transformers.__version__}, torch {torch.__version__}), {gen_desc}, "
            f"max_new_tokens {cfg.max_new_tokens}, batch {cfg.batch_size}"
        ),
        extra=meta_extra,
    )
    probs_dtype = np.float16 if cfg.probs_dtype == "float16" else np.float32
    lengths = [len(r) for r in rows]
    trace = Trace(
        meta=meta,
        experts=np.concatenate(rows),
        seq_offsets=offsets_from_lengths(np.asarray(lengths)),
        seq_domain=np.asarray([domain_names.index(d) for d in domains], dtype=np.int16),
        weights=np.concatenate([_stack(s.w, (L, k), np.float32) for s in seqs]),
        token_ids=np.asarray([t for s in seqs for t in s.tokens], dtype=np.int32),
        prefill_experts=np.concatenate([s.prefill.astype(id_dtype) for s in seqs if s.prefill is not None]),
        prefill_offsets=offsets_from_lengths(np.asarray([len(p) for p in prompt_ids])),
        hidden_states=np.concatenate([_stack(s.hidden, (L, hidden_size), np.float16) for s in seqs])
        if cfg.hidden_states
        else None,
        router_inputs=np.concatenate([_stack(s.rin, (L, hidden_size), np.float16) for s in seqs])
        if cfg.hidden_states
        else None,
        router_probs=np.concatenate([_stack(s.probs, (L, E), probs_dtype) for s in seqs])
        if cfg.router_probs
        else None,
    )
    from moesim.traces.validate import validate_trace

    validate_trace(trace, f"capture of {meta.model}")
    return trace


def _shared_experts(config: Any, fam: Family) -> int:
    n = getattr(config, "n_shared_experts", None)
    if isinstance(n, int):
        return n
    if getattr(config, "shared_expert_intermediate_size", 0):
        return 1
    if fam.key == "llama4":
        return 1  # Llama4TextMoe always adds one shared expert
    return 0


# ------------------------------------------------------------------------------------ from files


def load_model(path_or_id: str, dtype: str = "auto", device: str = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer or None) from a local folder or a cached hub id; safetensors only."""
    import transformers

    torch_dtype: Any = {
        "auto": "auto",
        "float32": torch.float32,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
    }.get(dtype)
    if torch_dtype is None:
        fail(f"--dtype {dtype!r}: use auto, float32, bfloat16 or float16")
    try:
        config = transformers.AutoConfig.from_pretrained(path_or_id)
    except Exception as exc:  # hub errors, missing files, bad JSON: all "cannot load"
        fail(f"{path_or_id}: cannot read the model config ({type(exc).__name__}: {str(exc).splitlines()[0]})")
    family_of(config)  # fail early, before loading weights, on a family we cannot hook
    try:
        # use_safetensors: never unpickle a .bin checkpoint
        model = transformers.AutoModelForCausalLM.from_pretrained(
            path_or_id, dtype=torch_dtype, use_safetensors=True
        )
    except Exception as exc:
        fail(f"{path_or_id}: cannot load the model ({type(exc).__name__}: {str(exc).splitlines()[0]})")
    model.to(device)
    tokenizer = None
    local = Path(path_or_id)
    tokenizer_files = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
    if not local.is_dir() or any((local / f).is_file() for f in tokenizer_files):
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(path_or_id)
        except Exception:  # a model without a tokenizer still works with token-id prompts
            tokenizer = None
    return model, tokenizer
