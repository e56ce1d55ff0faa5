"""Torch networks and training loops of the learned predictors.

Imported only from inside the learned predictors' methods (never by the registry at startup), so
this is the one predictor module allowed to import torch at its top.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from moesim.policies.predictors._common import report_progress


def deterministic(seed: int) -> torch.Generator:
    """Seed torch and ask for deterministic kernels; returns a generator for data shuffling."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op threads, then restore. One thread is the default for these small
    models: on a shared 2-core machine, spinning OpenMP workers made training 10-20x slower, and a
    fixed thread count keeps float reductions, hence results, reproducible."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def count_params(module: nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def state_to_numpy(module: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def load_numpy_state(module: nn.Module, tensors: dict[str, np.ndarray], prefix: str = "") -> None:
    state = {
        k[len(prefix) :]: torch.from_numpy(np.array(v)) for k, v in tensors.items() if k.startswith(prefix)
    }
    module.load_state_dict(state, strict=True)


def checked_module(
    path: Any, build: Callable[[], nn.Module], tensors: dict[str, np.ndarray], prefix: str = ""
) -> nn.Module:
    """The module ``build`` makes, loaded with ``tensors``; its shapes are first checked on the meta
    device (nothing allocated), so a model file whose config asks for gigabytes is refused before
    anything is allocated."""
    from moesim.errors import fail

    try:
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) or (1,) for k, v in build().state_dict().items()}
    except Exception as exc:  # torch raises many types for impossible sizes (negative, float, huge)
        fail(
            f"{path}: model config is invalid ({type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''})"
        )
    # a 0-d buffer (BatchNorm's counter) round-trips through safetensors as shape (1,)
    have = {k[len(prefix) :]: tuple(v.shape) or (1,) for k, v in tensors.items() if k.startswith(prefix)}
    if have != shapes:
        diff = sorted(set(have) ^ set(shapes)) or sorted(k for k in have if have[k] != shapes[k])
        k = diff[0]
        fail(
            f"{path}: model weights do not match its config (tensor {prefix}{k}: file {have.get(k)}, "
            f"config {shapes.get(k)})"
        )
    module = build()
    load_numpy_state(module, tensors, prefix)
    return module


# -- Prophet ---------------------------------------------------------------------------------------
class ProphetNet(nn.Module):
    """A small transformer over routing tokens.

    Tokens, in order: ``c`` context layer-steps (the last c steps' experts, most recent first) and
    ``H`` query tokens, one per horizon ``d``, each carrying the previous token's experts at its target
    layer (temporal reuse). A token is the rank-weighted mean of its experts' embeddings (one
    embedding per (layer, expert), learned weights per router rank) plus a layer embedding (the
    step's layer; the target layer for queries) and a role embedding (its position). Each query's
    output gives one logit per expert of its target layer (a shared projection plus a per-layer bias).
    """

    def __init__(
        self, L: int, E: int, c: int, H: int, d: int, layers: int, heads: int, ff: int, dropout: float
    ):
        super().__init__()
        self.L, self.E, self.c, self.H = L, E, c, H
        self.pad = L * E
        self.expert_emb = nn.Embedding(L * E + 1, d, padding_idx=L * E)
        self.rank_logit = nn.Parameter(torch.zeros(E))  # per rank position; union sets may exceed k
        self.layer_emb = nn.Embedding(L, d)
        self.role_emb = nn.Embedding(c + H, d)
        block = nn.TransformerEncoderLayer(
            d, heads, ff, dropout, batch_first=True, norm_first=True, activation="gelu"
        )
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, E)
        self.layer_bias = nn.Parameter(torch.zeros(L, E))

    def forward(self, ids: torch.Tensor, layers: torch.Tensor) -> torch.Tensor:
        """ids (B, c+H, m) global expert ids in rank order (pad = L*E); layers (B, c+H).
        Returns (B, H, E) logits for the H queries' target layers."""
        m = ids.shape[-1]
        emb = self.expert_emb(ids)  # (B, T, m, d); the pad row is zero
        w = torch.exp(self.rank_logit[:m])[None, None, :] * (ids != self.pad).to(emb.dtype)
        x = (emb * w[..., None]).sum(2) / w.sum(-1, keepdim=True).clamp(min=1e-6)
        x = x + self.layer_emb(layers) + self.role_emb.weight[None]
        x = self.norm(self.encoder(x)[:, -self.H :])  # (B, H, d)
        return self.out(x) + self.layer_bias[layers[:, -self.H :]]

    def infer(self, ids: torch.Tensor, layers: torch.Tensor, heads: tuple[int, ...]) -> torch.Tensor:
        """Inference only (eval mode, under no_grad/inference_mode): (B, len(heads), E) logits of the
        queries of horizons ``heads`` (1-based). The same function as ``forward`` (dropout off), up
        to float rounding, written out so the last encoder layer computes only the rows it returns
        (a third of the work at one horizon) and every op is a row-wise kernel or a GEMM whose rows
        do not depend on the other rows of the batch (``ProphetModel.probs_for`` relies on this)."""
        B, T, m = ids.shape
        w = torch.exp(self.rank_logit[:m])[None, None, :] * (ids != self.pad).to(torch.float32)
        # the rank-weighted mean of each token's expert embeddings, without the (B, T, m, d) tensor
        x = nn.functional.embedding_bag(
            ids.reshape(B * T, m),
            self.expert_emb.weight,
            mode="sum",
            per_sample_weights=w.reshape(B * T, m),
            padding_idx=self.pad,
        ).reshape(B, T, -1)
        x = x / w.sum(-1, keepdim=True).clamp(min=1e-6)
        x = x + self.layer_emb(layers) + self.role_emb.weight[None]
        blocks = list(self.encoder.layers)
        for block in blocks[:-1]:
            x = _encoder_block(block, x, None)
        rows = [self.c + d - 1 for d in heads]
        x = self.norm(_encoder_block(blocks[-1], x, rows))  # (B, len(heads), d)
        return self.out(x) + self.layer_bias[layers[:, rows]]


def _encoder_block(
    block: nn.TransformerEncoderLayer, x: torch.Tensor, rows: list[int] | None
) -> torch.Tensor:
    """One pre-norm ``TransformerEncoderLayer`` (GELU, eval) for the query rows ``rows`` of ``x``
    (all rows when None); every token is still a key and a value."""
    attn = block.self_attn
    B, T, d = x.shape
    nh = attn.num_heads
    dh = d // nh
    h = block.norm1(x)
    W, b = attn.in_proj_weight, attn.in_proj_bias
    if rows is None:
        xq, r = x, T
        qkv = nn.functional.linear(h, W, b).view(B, T, 3, nh, dh)
        q = qkv[:, :, 0].transpose(1, 2)
    else:
        xq, r = x[:, rows], len(rows)
        q = nn.functional.linear(h[:, rows], W[:d], b[:d]).view(B, r, nh, dh).transpose(1, 2)
        qkv = nn.functional.linear(h, W[d:], b[d:]).view(B, T, 2, nh, dh)
    k, v = qkv[:, :, -2].transpose(1, 2), qkv[:, :, -1].transpose(1, 2)  # (B, nh, T, dh) views
    o = nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, r, d)
    y = xq + attn.out_proj(o)
    return y + block.linear2(nn.functional.gelu(block.linear1(block.norm2(y))))


@dataclass
class TrainLog:
    epochs: int
    samples: int
    final_loss: float
    seconds: float


def train_loop(
    model: nn.Module,
    n: int,
    batch_fn: Callable[[torch.Tensor], float | torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    gen: torch.Generator,
    time_budget_s: float | None = None,
) -> TrainLog:
    """AdamW with linear warm-up and cosine decay over shuffled index batches; ``batch_fn(idx)``
    returns the loss of one batch. Stops early (at a batch boundary) past ``time_budget_s``."""
    import time

    t0 = time.perf_counter()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    total = max(1, epochs * steps_per_epoch)
    warm = max(1, total // 20)

    def lr_at(i: int) -> float:
        if i < warm:
            return lr * (i + 1) / warm
        return lr * 0.5 * (1 + math.cos(math.pi * (i - warm) / max(1, total - warm)))

    step = 0
    last = float("nan")
    done_epochs = 0
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        run, cnt = 0.0, 0
        for b in range(steps_per_epoch):
            idx = perm[b * batch_size : (b + 1) * batch_size]
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            loss = batch_fn(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[union-attr]
            opt.step()
            step += 1
            run += float(loss.detach())  # type: ignore[union-attr]
            cnt += 1
        last = run / max(1, cnt)
        done_epochs += 1
        report_progress(
            f"  epoch {done_epochs}/{epochs}: loss {last:.5f} ({time.perf_counter() - t0:.0f} s, {n:,} samples)"
        )
        if time_budget_s is not None and time.perf_counter() - t0 > time_budget_s:
            break
    model.eval()
    return TrainLog(done_epochs, n, last, time.perf_counter() - t0)


def fit_temperature(logits: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """The temperature T minimising the mean binary cross-entropy of sigmoid(logits / T) on held-out
    rows (a grid over [0.25, 4]; deterministic). logits/target (N, E), mask (N,)."""
    z = torch.from_numpy(logits[mask].astype(np.float32))
    y = torch.from_numpy(target[mask].astype(np.float32))
    if len(z) == 0:
        return 1.0
    best, best_t = float("inf"), 1.0
    for t in np.exp(np.linspace(math.log(0.25), math.log(4.0), 41)):
        loss = float(nn.functional.binary_cross_entropy_with_logits(z / float(t), y))
        if loss < best - 1e-9:
            best, best_t = loss, float(t)
    return best_t


# -- pre-attention MLPs (seed 002, section 4.3) ----------------------------------------------------
def pre_attention_mlp(arch: int, H: int, hidden: int, E: int, dropout: float = 0.1) -> nn.Module:
    """Architecture 1: Linear-BatchNorm1d-GELU-Dropout(0.1)-Linear; architecture 2: Linear-SiLU-Linear."""
    if arch == 1:
        return nn.Sequential(
            nn.Linear(H, hidden), nn.BatchNorm1d(hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, E)
        )
    return nn.Sequential(nn.Linear(H, hidden), nn.SiLU(), nn.Linear(hidden, E))


def weighted_bce(logits: torch.Tensor, rank: torch.Tensor, tiers: tuple[int, int], k: int) -> torch.Tensor:
    """Seed 002 eq. (6)-(8)/(10): BCE on the k selected experts, weighted 3.0 for the true top-``tiers[0]``,
    1.5 for ranks up to ``tiers[1]`` and 0.5 otherwise. ``rank`` (N, E) is each expert's true router
    rank (0 = highest; a huge value where unknown)."""
    y = (rank < k).to(logits.dtype)
    w = torch.full_like(logits, 0.5)
    w = torch.where(rank < tiers[1], torch.full_like(w, 1.5), w)
    w = torch.where(rank < tiers[0], torch.full_like(w, 3.0), w)
    return (w * nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")).mean()


def ranking_loss(logits: torch.Tensor, top_ids: torch.Tensor, margin: float) -> torch.Tensor:
    """Seed 002 eq. (11): hinge ReLU(m - (z_j - z_k)) over pairs of the true top experts with j ranked
    above k. ``top_ids`` (N, r) are the true top experts in rank order. Averaged over samples (the
    paper sums; the mean keeps lambda independent of the batch size)."""
    z = logits.gather(1, top_ids)  # (N, r) in true rank order
    diff = z[:, :, None] - z[:, None, :]  # z_j - z_k
    r = top_ids.shape[1]
    upper = torch.triu(torch.ones(r, r, dtype=torch.bool), diagonal=1)  # j ranked above k
    hinge = torch.relu(margin - diff)[:, upper]
    return hinge.sum(1).mean() if hinge.numel() else logits.sum() * 0.0
