"""``moesim profile``: the ops of a whole token besides its MoE layers (``runtime.whole_token``).

- ``embedding`` (tokens): ``F.embedding`` of random token ids from a vocab x hidden table;
- ``lm_head`` (tokens): final RMSNorm + logits over the vocabulary (an untied vocab x hidden
  matrix: the LM head reads it whole every token, tied or not), cast to fp32 as HF does;
- ``sampling`` (batch): temperature, softmax, top-p (sort, cumsum, mask) and a multinomial draw
  over fp32 logits;
- ``dense_ffn`` (tokens): one dense layer's SwiGLU of ``dense_intermediate_size``, rotating over
  buffers larger than the last-level cache (models without dense layers get no table).

On CUDA each table also carries the host's issue times (``moesim.profiling.timing``), which the
simulator reads as the ops' host times.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from moesim.engine.live.kernels import fill_random, swiglu

if TYPE_CHECKING:
    from moesim.profiling.profiler import Profiler

TOKEN_OPS = ("embedding", "dense_ffn", "lm_head", "sampling")
TOP_P, TEMPERATURE = 0.9, 0.7  # common chat sampling settings; the cost barely depends on them


def _grid(vals: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted({int(v) for v in vals}))


def measure_token_ops(prof: Profiler) -> None:
    """Append the whole-token tables ``prof.s.ops`` asks for to ``prof.tables``."""
    ops = set(prof.s.ops) & set(TOKEN_OPS)
    if not ops:
        return
    s, m, dev, dtype = prof.s, prof.model, prof.dev.torch_device, prof.dtype
    tokens = _grid(s.tokens)
    H, V = m.hidden_size, m.vocab_size
    x = fill_random(torch.empty(max(tokens), H, device=dev, dtype=dtype), s.seed + 7)
    if ops & {"embedding", "lm_head"}:
        table = fill_random(torch.empty(V, H, device=dev, dtype=dtype), s.seed + 8)
        if "embedding" in ops:
            gen = torch.Generator(device="cpu").manual_seed(s.seed + 9)
            ids = torch.randint(0, V, (max(tokens),), generator=gen).to(dev)
            samples = [prof._time(lambda i, t=t: F.embedding(ids[:t], table)) for t in tokens]
            prof._table1(
                "embedding", "tokens", tokens, samples, "F.embedding of t token ids (vocab x hidden)"
            )
        if "lm_head" in ops:
            w = torch.ones(H, device=dev, dtype=dtype)
            samples = [
                prof._time(lambda i, t=t: F.linear(F.rms_norm(x[:t], (H,), w, 1e-6), table).float())
                for t in tokens
            ]
            prof._table1(
                "lm_head", "tokens", tokens, samples, "RMSNorm + logits (vocab x hidden) + fp32 cast"
            )
        del table
    if "sampling" in ops:
        _sampling(prof, V)
    inter = m.dense_intermediate_size
    if "dense_ffn" in ops and inter and m.num_layers > m.num_moe_layers:
        numel = 3 * H * inter
        n = prof._rotation(numel * prof.elem)
        pool = fill_random(torch.empty(n, numel, device=dev, dtype=dtype), s.seed + 10)
        samples = [prof._time(lambda i, t=t: swiglu(pool[i % n], x[:t], H, inter)) for t in tokens]
        prof._table1(
            "dense_ffn",
            "tokens",
            tokens,
            samples,
            f"SwiGLU of the dense MLP ({inter}) rotating over {n} buffers",
        )
        del pool


def _sampling(prof: Profiler, V: int) -> None:
    batches = _grid(prof.s.batches)
    dev = prof.dev.torch_device
    logits = fill_random(torch.empty(max(batches), V, device=dev, dtype=torch.float32), prof.s.seed + 11)
    gen = torch.Generator(device=dev).manual_seed(prof.s.seed + 12)

    def draw(b: int) -> torch.Tensor:
        p = torch.softmax(logits[:b] / TEMPERATURE, dim=-1)
        sp, si = torch.sort(p, dim=-1, descending=True)
        sp = sp.masked_fill(torch.cumsum(sp, dim=-1) - sp > TOP_P, 0.0)
        return si.gather(-1, torch.multinomial(sp, 1, generator=gen))

    samples = [prof._time(lambda i, b=b: draw(b)) for b in batches]
    prof._table1(
        "sampling",
        "batch",
        batches,
        samples,
        f"temperature {TEMPERATURE}, softmax, top-p {TOP_P} (sort, cumsum, mask), multinomial over fp32 logits",
    )
