"""The model's kernels at its real shapes, with random weights (timing does not depend on values).

One class serves the LiveExecutor and the profiler, so a profile measures exactly the code a live
run executes: pre-attention RMS norm; attention = QKV projection, write of the new key/value into a
preallocated KV cache, ``scaled_dot_product_attention`` over ``context`` cached positions, output
projection; gate = post-attention RMS norm + router logits + softmax + top-k (computed for real,
then ignored: routing is forced from the trace); routed and shared experts = SwiGLU FFNs.

A routed expert is one contiguous buffer ``[gate_up (2I x H) | down (H x I)]`` so that moving it is
a single copy, as offloading runtimes lay experts out.

Approximations (documented in docs/live-executor.md): MLA attention (DeepSeek) runs as multi-head
attention with ``num_heads`` heads of ``head_dim``; a sliding window caps the attended positions.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from moesim.models.spec import ModelSpec

_RMS_EPS = 1e-6
_INIT_STD = 0.02
_FILL_BLOCK = 1 << 22  # elements of random values tiled over big buffers (randn is ~1 GB/s)


def fill_random(t: torch.Tensor, seed: int) -> torch.Tensor:
    """Fill ``t`` with N(0, 0.02) values; big buffers tile one random block (values do not matter,
    but they must be ordinary numbers: uninitialised memory can hold denormals or NaNs, which are
    slow on CPUs)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    flat = t.view(-1)
    n = flat.numel()
    block = (torch.randn(min(n, _FILL_BLOCK), generator=gen) * _INIT_STD).to(t.dtype)
    if t.device != block.device:
        block = block.to(t.device)
    for off in range(0, n, block.numel()):
        m = min(block.numel(), n - off)
        flat[off : off + m].copy_(block[:m])
    return t


def expert_numel(model: ModelSpec) -> int:
    return 3 * model.hidden_size * model.expert_intermediate_size


class LayerWeights:
    __slots__ = ("ln1", "ln2", "wq", "wkv", "wo", "wg", "shared", "k_cache", "v_cache")
    ln1: torch.Tensor
    ln2: torch.Tensor
    wq: torch.Tensor
    wkv: torch.Tensor
    wo: torch.Tensor
    wg: torch.Tensor
    shared: torch.Tensor | None  # None: the model has no shared expert
    k_cache: torch.Tensor
    v_cache: torch.Tensor


class ModelKernels:
    """Per-layer attention, norm, gate and shared-expert weights plus KV caches, on one device."""

    def __init__(
        self,
        model: ModelSpec,
        num_layers: int,
        device: torch.device,
        dtype: torch.dtype,
        max_batch: int,
        max_context: int,
        seed: int = 0,
    ):
        self.model = model
        self.device = device
        self.dtype = dtype
        self.H = H = model.hidden_size
        self.I = model.expert_intermediate_size
        att = model.attention
        self.heads = att.num_heads
        self.kv_heads = att.num_kv_heads if att.kind == "gqa" else att.num_heads
        self.head_dim = att.head_dim
        self.window = att.sliding_window
        self.top_k = model.top_k
        self.max_batch = max_batch
        ctx = max(1, max_context)
        self.max_context = min(ctx, self.window) if self.window else ctx
        self.gqa = self.heads != self.kv_heads
        self._sdpa_gqa = _sdpa_has_gqa()
        Is = model.shared_expert_intermediate_size if model.num_shared_experts > 0 else 0
        self.shared_I = Is
        E = model.num_experts
        qd, kvd = self.heads * self.head_dim, self.kv_heads * self.head_dim
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.layers: list[LayerWeights] = []
        for layer in range(num_layers):
            w = LayerWeights()
            w.ln1 = torch.ones(H, **kw)
            w.ln2 = torch.ones(H, **kw)
            w.wq = fill_random(torch.empty(qd, H, **kw), seed + 11 * layer + 1)
            w.wkv = fill_random(torch.empty(2 * kvd, H, **kw), seed + 11 * layer + 2)
            w.wo = fill_random(torch.empty(H, qd, **kw), seed + 11 * layer + 3)
            w.wg = fill_random(torch.empty(E, H, **kw), seed + 11 * layer + 4)
            w.shared = fill_random(torch.empty(3 * H * Is, **kw), seed + 11 * layer + 5) if Is else None
            shape = (max_batch, self.kv_heads, self.max_context, self.head_dim)
            w.k_cache = fill_random(torch.empty(shape, **kw), seed + 11 * layer + 6)
            w.v_cache = fill_random(torch.empty(shape, **kw), seed + 11 * layer + 7)
            self.layers.append(w)
        # token inputs: a few random rows, enough that consecutive tokens do not reuse one
        self.inputs = fill_random(torch.empty(8, max_batch, H, **kw), seed + 97)

    # -- kernels ----------------------------------------------------------------------------------
    def hidden(self, token: int, batch: int) -> torch.Tensor:
        return self.inputs[token % len(self.inputs), :batch].clone()

    def prompt_hidden(self, tokens: int) -> torch.Tensor:
        """Hidden states of a prompt pass (fresh each time: its length varies by group)."""
        g = torch.Generator(device="cpu").manual_seed(tokens)
        h = torch.randn(tokens, self.H, generator=g) * _INIT_STD
        return h.to(device=self.device, dtype=self.dtype)

    def norm(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(h, (self.H,), self.layers[layer].ln1, _RMS_EPS)

    def attention(self, layer: int, x: torch.Tensor, context: int) -> torch.Tensor:
        w = self.layers[layer]
        B = x.shape[0]
        n = max(1, min(context, self.max_context))
        q = F.linear(x, w.wq).view(B, self.heads, 1, self.head_dim)
        kv = F.linear(x, w.wkv).view(B, 2, self.kv_heads, self.head_dim)
        w.k_cache[:B, :, n - 1] = kv[:, 0]
        w.v_cache[:B, :, n - 1] = kv[:, 1]
        k = w.k_cache[:B, :, :n]
        v = w.v_cache[:B, :, :n]
        if self.gqa and self._sdpa_gqa:
            o = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        else:
            if self.gqa:  # torch < 2.5: expand the shared key/value heads explicitly
                rep = self.heads // self.kv_heads
                k = k.repeat_interleave(rep, dim=1)
                v = v.repeat_interleave(rep, dim=1)
            o = F.scaled_dot_product_attention(q, k, v)
        return F.linear(o.reshape(B, self.heads * self.head_dim), w.wo)

    def prefill_attention(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """The prompt pass: causal attention of the group's P prompt tokens over each other, as one
        sequence, filling the first P positions of the KV cache."""
        w = self.layers[layer]
        P = x.shape[0]
        q = F.linear(x, w.wq).view(P, self.heads, self.head_dim).transpose(0, 1).unsqueeze(0)
        kv = F.linear(x, w.wkv).view(P, 2, self.kv_heads, self.head_dim)
        n = min(P, self.max_context)
        w.k_cache[0, :, :n] = kv[:n, 0].transpose(0, 1)
        w.v_cache[0, :, :n] = kv[:n, 1].transpose(0, 1)
        k = kv[:, 0].transpose(0, 1).unsqueeze(0)
        v = kv[:, 1].transpose(0, 1).unsqueeze(0)
        if self.gqa:
            rep = self.heads // self.kv_heads
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.linear(o.squeeze(0).transpose(0, 1).reshape(P, self.heads * self.head_dim), w.wo)

    def gate(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """Post-attention norm and the router. Returns the normed input of the experts."""
        w = self.layers[layer]
        x = F.rms_norm(h, (self.H,), w.ln2, _RMS_EPS)
        probs = torch.softmax(F.linear(x, w.wg).float(), dim=-1)
        torch.topk(probs, self.top_k, dim=-1)
        return x

    def expert(self, weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return swiglu(weights, x, self.H, self.I)

    def shared(self, layer: int, x: torch.Tensor) -> torch.Tensor | None:
        sw = self.layers[layer].shared
        return swiglu(sw, x, self.H, self.shared_I) if sw is not None else None


def swiglu(flat: torch.Tensor, x: torch.Tensor, H: int, I: int) -> torch.Tensor:  # noqa: E741
    gu = F.linear(x, flat[: 2 * I * H].view(2 * I, H))
    g, u = gu.chunk(2, dim=-1)
    return F.linear(F.silu(g) * u, flat[2 * I * H :].view(H, I))


def _sdpa_has_gqa() -> bool:
    import inspect

    try:
        return "enable_gqa" in inspect.signature(F.scaled_dot_product_attention).parameters
    except (TypeError, ValueError):  # a builtin without a signature: probe it
        q = torch.zeros(1, 2, 1, 4)
        kv = torch.zeros(1, 1, 2, 4)
        try:
            F.scaled_dot_product_attention(q, kv, kv, enable_gqa=True)
            return True
        except TypeError:
            return False
