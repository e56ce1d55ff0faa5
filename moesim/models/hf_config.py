"""Build a :class:`ModelSpec` from a Hugging Face ``config.json``, and the routed-expert byte formulas.

The simulator only cares about an MoE model's shape as far as timing and memory go: which
layers route, how many experts there are, how many a token picks, and how many bytes one
expert occupies when it is moved between host and device. Those bytes are the bytes *as
stored in the published checkpoint* (weights plus any biases and quantisation scales),
because that is what an offloading runtime actually copies.

Supported ``model_type`` values: ``mixtral``, ``phimoe``, ``qwen2_moe``, ``qwen3_moe``,
``deepseek_v2``, ``deepseek_v3``, ``olmoe``, ``gpt_oss`` and ``llama4`` (read from its
``text_config``; a bare ``llama4_text`` config works too).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moesim.errors import MoesimInputError
from moesim.models.spec import DTYPE_BYTES, AttentionSpec, ModelSpec
from moesim.readers import read_json_file

__all__ = [
    "ExpertStorage",
    "SUPPORTED_MODEL_TYPES",
    "expert_bytes_breakdown",
    "expert_bytes_formula",
    "model_from_hf_config",
    "routed_expert_bytes",
]

# MXFP4 (OCP microscaling): 32 four-bit values share one 8-bit (E8M0) scale; a block of 32
# values packs into 16 bytes.
MXFP4_BLOCK = 32
_MXFP4_BLOCK_BYTES = MXFP4_BLOCK // 2

# Checkpoint dtypes of unquantised weights, as spelled in config.json's torch_dtype / dtype.
_TORCH_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


@dataclass(frozen=True)
class ExpertStorage:
    """How one routed expert's gate/up/down weights are laid out in the published checkpoint.

    ``dtype`` is a :data:`DTYPE_BYTES` key. ``block`` is the (rows, cols) tile that shares one
    fp32 scale for block-quantised fp8 (DeepSeek-V3: 128x128). ``bias_dtype`` is set only
    when the checkpoint stores per-expert biases (gpt-oss).
    """

    dtype: str
    block: tuple[int, int] | None = None
    bias_dtype: str | None = None

    def describe(self) -> str:
        if self.dtype == "mxfp4":
            text = f"mxfp4 (4-bit values, one uint8 scale per {MXFP4_BLOCK} values)"
        elif self.dtype == "fp8" and self.block is not None:
            text = f"fp8 e4m3 with fp32 scales per {self.block[0]}x{self.block[1]} block"
        else:
            text = self.dtype
        if self.bias_dtype is not None:
            text += f", {self.bias_dtype} biases"
        return text


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def expert_bytes_breakdown(
    hidden_size: int, intermediate_size: int, storage: ExpertStorage
) -> dict[str, int]:
    """Bytes of one routed expert split into ``weights``, ``scales`` and ``biases``.

    An expert is a gated MLP: gate and up project H -> I, down projects I -> H, so it holds
    3*H*I weights. Weight matrices are (out, in) as in every checkpoint here, which is what
    the block/scale counts below follow.
    """
    h, i = hidden_size, intermediate_size
    if h <= 0 or i <= 0:
        raise MoesimInputError(
            f"expert shape: hidden_size={h} and intermediate_size={i} must both be positive integers"
        )
    if storage.dtype not in DTYPE_BYTES:
        raise MoesimInputError(
            f"expert dtype: unknown dtype {storage.dtype!r}; use one of {', '.join(sorted(DTYPE_BYTES))}"
        )
    scales = 0
    if storage.dtype == "mxfp4":
        # Quantised along the input dim: gate+up rows (2I) each hold ceil(H/32) blocks, down rows
        # (H) each hold ceil(I/32) blocks; every block is 16 bytes of values plus 1 scale byte.
        blocks = 2 * i * _ceil_div(h, MXFP4_BLOCK) + h * _ceil_div(i, MXFP4_BLOCK)
        weights = blocks * _MXFP4_BLOCK_BYTES
        scales = blocks
    else:
        weight_bytes = 3 * h * i * DTYPE_BYTES[storage.dtype]
        if weight_bytes != int(weight_bytes):
            raise MoesimInputError(
                f"expert dtype: {storage.dtype!r} does not give a whole number of bytes for a "
                f"{h}x{i} expert; its block layout is unknown, so use a catalogued dtype"
            )
        weights = int(weight_bytes)
        if storage.block is not None:
            r, c = storage.block
            # fp8 block scales (weight_scale_inv): one fp32 per r x c tile, partial tiles padded.
            tiles = 2 * _ceil_div(i, r) * _ceil_div(h, c) + _ceil_div(h, r) * _ceil_div(i, c)
            scales = 4 * tiles
    biases = 0
    if storage.bias_dtype is not None:
        biases = int((2 * i + h) * DTYPE_BYTES[storage.bias_dtype])
    return {"weights": weights, "scales": scales, "biases": biases}


def routed_expert_bytes(hidden_size: int, intermediate_size: int, storage: ExpertStorage) -> int:
    """Exact bytes of one routed expert as stored (weights + scales + biases)."""
    return sum(expert_bytes_breakdown(hidden_size, intermediate_size, storage).values())


def expert_bytes_formula(hidden_size: int, intermediate_size: int, storage: ExpertStorage) -> str:
    """The byte formula with this model's numbers filled in, for docs and notes."""
    h, i = hidden_size, intermediate_size
    parts = expert_bytes_breakdown(h, i, storage)
    if storage.dtype == "mxfp4":
        text = (
            f"(2*{i}*ceil({h}/32) + {h}*ceil({i}/32)) blocks * (16 B values + 1 B scale)"
            f" = {parts['weights']:,} + {parts['scales']:,}"
        )
    else:
        per = DTYPE_BYTES[storage.dtype]
        per_text = f"{per:g}"
        text = f"3*{h}*{i}*{per_text} B = {parts['weights']:,}"
        if storage.block is not None:
            r, c = storage.block
            text += (
                f"; + 4 B * (2*ceil({i}/{r})*ceil({h}/{c}) + ceil({h}/{r})*ceil({i}/{c})) fp32 block scales"
                f" = {parts['scales']:,}"
            )
    if storage.bias_dtype is not None:
        text += f"; + (2*{i} + {h}) * {DTYPE_BYTES[storage.bias_dtype]:g} B biases = {parts['biases']:,}"
    return f"{text}; total {sum(parts.values()):,} B"


# --------------------------------------------------------------------------------------------
# config.json reading
_INT_MAX = 1 << 24  # any size or count in a real config is far below this
_MAXIMA = {"num_hidden_layers": 1 << 16}


class _Config:
    """A config mapping plus where it came from, so every error can name the file and key."""

    def __init__(self, data: Mapping[str, Any], where: str, model_type: str) -> None:
        self.data = data
        self.where = where
        self.model_type = model_type

    def fail(self, key: str, problem: str, fix: str) -> MoesimInputError:
        return MoesimInputError(
            f"{self.where}: key {key!r} {problem} (model_type {self.model_type!r}); {fix}"
        )

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def integer(self, key: str, *, default: int | None = None, minimum: int = 1) -> int:
        value = self.data.get(key)
        if value is None:
            if default is not None:
                return default
            raise self.fail(key, "is missing", "copy it from the model's published config.json")
        # bool is an int subclass; a JSON true/false here is a typo, not a count.
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, got {value!r}", "fix the value in config.json")
        if value < minimum:
            raise self.fail(key, f"must be >= {minimum}, got {value}", "fix the value in config.json")
        maximum = _MAXIMA.get(key, _INT_MAX)
        if value > maximum:  # beyond any real model; sizes derived from it would not fit in memory
            raise self.fail(key, f"must be <= {maximum}, got {value}", "fix the value in config.json")
        return value

    def int_list(self, key: str) -> list[int]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise self.fail(
                key, f"must be a list of layer indices, got {value!r}", "fix the value in config.json"
            )
        return value


def _load(path_or_dict: str | Path | Mapping[str, Any]) -> tuple[Mapping[str, Any], str, str | None, str]:
    """Return (config, where-for-messages, default name, source)."""
    if isinstance(path_or_dict, Mapping):
        name_or_path = path_or_dict.get("_name_or_path")
        default = str(name_or_path).rstrip("/").rsplit("/", 1)[-1] if name_or_path else None
        return path_or_dict, "config dict", default, "config dict"
    path = Path(path_or_dict)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise MoesimInputError(f"{path}: no such config file; pass a config.json or the folder holding one")
    try:
        data = read_json_file(path, "model config")
    except MoesimInputError as exc:
        why = str(exc).removeprefix(f"{path}: ")
        raise MoesimInputError(f"{path}: not readable JSON ({why}); pass the model's config.json") from None
    if not isinstance(data, dict):
        raise MoesimInputError(f"{path}: top level must be a JSON object; pass the model's config.json")
    default = path.parent.name if path.name == "config.json" else path.stem
    return data, str(path), default or None, path.resolve().as_uri()


def _storage(
    cfg: _Config, outer: Mapping[str, Any], *, biases: bool, dtype_override: str | None
) -> ExpertStorage:
    """Stored dtype of the routed experts: a quantization_config wins over torch_dtype."""
    bias_dtype = None
    quant = cfg.data.get("quantization_config") or outer.get("quantization_config")
    if quant is not None and dtype_override is None:
        if not isinstance(quant, Mapping):
            raise cfg.fail("quantization_config", "must be an object", "fix the value in config.json")
        method = quant.get("quant_method")
        if method == "fp8":
            fmt = quant.get("fmt", "e4m3")
            block = quant.get("weight_block_size")
            if fmt != "e4m3":
                raise cfg.fail(
                    "quantization_config.fmt", f"is {fmt!r}", "only fp8 e4m3 checkpoints are supported"
                )
            if (
                not isinstance(block, list)
                or len(block) != 2
                or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)
            ):
                raise cfg.fail(
                    "quantization_config.weight_block_size",
                    f"must be [rows, cols], got {block!r}",
                    "block-scaled fp8 (e.g. [128, 128]) is the only fp8 layout supported",
                )
            return ExpertStorage("fp8", block=(block[0], block[1]))
        if method == "mxfp4":
            if cfg.model_type != "gpt_oss":
                raise cfg.fail(
                    "quantization_config.quant_method",
                    "is 'mxfp4'",
                    "MXFP4 experts are only modelled for gpt_oss; pass dtype= to override",
                )
            # gpt-oss keeps the expert biases in bf16 next to the MXFP4 blocks.
            return ExpertStorage("mxfp4", bias_dtype="bf16" if biases else None)
        raise cfg.fail(
            "quantization_config.quant_method",
            f"is {method!r}, which is not supported",
            "use an unquantised checkpoint's config, fp8 (block) or mxfp4, or pass dtype=",
        )
    if biases:
        bias_dtype = "bf16"
    if dtype_override is not None:
        if dtype_override not in DTYPE_BYTES:
            raise MoesimInputError(
                f"dtype={dtype_override!r} is not a known dtype; use one of {', '.join(sorted(DTYPE_BYTES))}"
            )
        return ExpertStorage(dtype_override, bias_dtype=bias_dtype)
    for key in ("torch_dtype", "dtype"):
        for source in (cfg.data, outer):
            value = source.get(key)
            if value is not None:
                if value not in _TORCH_DTYPES:
                    raise cfg.fail(
                        key,
                        f"is {value!r}",
                        f"use one of {', '.join(_TORCH_DTYPES)} or pass dtype= to model_from_hf_config",
                    )
                return ExpertStorage(_TORCH_DTYPES[value], bias_dtype=bias_dtype)
    raise cfg.fail(
        "torch_dtype",
        "is missing",
        'add the checkpoint\'s torch_dtype (e.g. "bfloat16") or pass dtype= to model_from_hf_config',
    )


def _gqa(cfg: _Config, hidden: int) -> AttentionSpec:
    heads = cfg.integer("num_attention_heads")
    kv_heads = cfg.integer("num_key_value_heads", default=heads)
    if heads % kv_heads:
        raise cfg.fail(
            "num_key_value_heads",
            f"({kv_heads}) does not divide num_attention_heads ({heads})",
            "fix the value in config.json",
        )
    if cfg.has("head_dim"):
        head_dim = cfg.integer("head_dim")
    elif hidden % heads == 0:
        head_dim = hidden // heads
    else:
        raise cfg.fail(
            "head_dim", "is missing and hidden_size is not a multiple of num_attention_heads", "add head_dim"
        )
    window = None
    # Qwen configs carry a sliding_window value even when use_sliding_window is false.
    if cfg.has("sliding_window") and cfg.data.get("use_sliding_window", True):
        window = cfg.integer("sliding_window")
    return AttentionSpec(
        kind="gqa", num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim, sliding_window=window
    )


def _mla(cfg: _Config) -> AttentionSpec:
    heads = cfg.integer("num_attention_heads")
    nope = cfg.integer("qk_nope_head_dim")
    rope = cfg.integer("qk_rope_head_dim")
    # DeepSeek-V2-Lite has no query compression: q_lora_rank is null there (some copies say 0).
    q_lora = cfg.data.get("q_lora_rank")
    q_lora_rank = cfg.integer("q_lora_rank") if q_lora not in (None, 0) else None
    return AttentionSpec(
        kind="mla",
        num_heads=heads,
        num_kv_heads=cfg.integer("num_key_value_heads", default=heads),
        head_dim=nope + rope,
        q_lora_rank=q_lora_rank,
        kv_lora_rank=cfg.integer("kv_lora_rank"),
        qk_nope_head_dim=nope,
        qk_rope_head_dim=rope,
        v_head_dim=cfg.integer("v_head_dim"),
    )


@dataclass
class _Shape:
    """What each family parser extracts; model_from_hf_config turns it into a ModelSpec."""

    moe_layers: list[int]
    num_experts: int
    top_k: int
    intermediate: int
    shared_experts: int = 0
    shared_intermediate: int = 0
    attention: AttentionSpec | None = None
    biases: bool = False
    extra: dict[str, Any] | None = None


def _every_layer(cfg: _Config) -> list[int]:
    return list(range(cfg.integer("num_hidden_layers")))


def _mixtral_like(cfg: _Config) -> _Shape:
    return _Shape(
        moe_layers=_every_layer(cfg),
        num_experts=cfg.integer("num_local_experts"),
        top_k=cfg.integer("num_experts_per_tok"),
        intermediate=cfg.integer("intermediate_size"),
    )


def _qwen_moe(cfg: _Config) -> _Shape:
    layers = cfg.integer("num_hidden_layers")
    step = cfg.integer("decoder_sparse_step", default=1)
    mlp_only = set(cfg.int_list("mlp_only_layers"))
    # transformers' Qwen2Moe/Qwen3Moe decoder layer: sparse iff not in mlp_only_layers and
    # (layer_idx + 1) % decoder_sparse_step == 0.
    moe = [i for i in range(layers) if i not in mlp_only and (i + 1) % step == 0]
    shape = _Shape(
        moe_layers=moe,
        num_experts=cfg.integer("num_experts"),
        top_k=cfg.integer("num_experts_per_tok"),
        intermediate=cfg.integer("moe_intermediate_size"),
        extra={"dense_intermediate_size": cfg.data.get("intermediate_size")},
    )
    if cfg.model_type == "qwen2_moe":
        shared = cfg.integer("shared_expert_intermediate_size", minimum=0)
        # One shared MLP (gated by a sigmoid shared_expert_gate) of this width, per layer.
        shape.shared_experts = 1 if shared else 0
        shape.shared_intermediate = shared
    return shape


def _deepseek(cfg: _Config) -> _Shape:
    layers = cfg.integer("num_hidden_layers")
    first_dense = cfg.integer("first_k_dense_replace", default=0, minimum=0)
    freq = cfg.integer("moe_layer_freq", default=1)
    # DeepSeek modeling code: MoE iff layer_idx >= first_k_dense_replace and
    # layer_idx % moe_layer_freq == 0. The MTP module (num_nextn_predict_layers) sits after the
    # main layers and is not part of decoding, so it is not counted.
    moe = [i for i in range(layers) if i >= first_dense and i % freq == 0]
    inter = cfg.integer("moe_intermediate_size")
    shared = cfg.integer("n_shared_experts", default=0, minimum=0)
    return _Shape(
        moe_layers=moe,
        num_experts=cfg.integer("n_routed_experts"),
        top_k=cfg.integer("num_experts_per_tok"),
        intermediate=inter,
        shared_experts=shared,
        shared_intermediate=shared * inter,
        attention=_mla(cfg),
        extra={
            "dense_intermediate_size": cfg.data.get("intermediate_size"),
            "first_k_dense_replace": first_dense,
            "mtp_layers": cfg.data.get("num_nextn_predict_layers", 0),
        },
    )


def _olmoe(cfg: _Config) -> _Shape:
    return _Shape(
        moe_layers=_every_layer(cfg),
        num_experts=cfg.integer("num_experts"),
        top_k=cfg.integer("num_experts_per_tok"),
        intermediate=cfg.integer("intermediate_size"),
    )


def _gpt_oss(cfg: _Config) -> _Shape:
    # gpt-oss configs spell top-k both ways; the transformers name wins when both are there.
    top_k_key = "num_experts_per_tok" if cfg.has("num_experts_per_tok") else "experts_per_token"
    return _Shape(
        moe_layers=_every_layer(cfg),
        num_experts=cfg.integer("num_local_experts"),
        top_k=cfg.integer(top_k_key),
        intermediate=cfg.integer("intermediate_size"),
        biases=True,
    )


def _llama4(cfg: _Config) -> _Shape:
    layers = cfg.integer("num_hidden_layers")
    if cfg.has("moe_layers"):
        moe = sorted(set(cfg.int_list("moe_layers")))
    else:
        # transformers Llama4TextConfig: range(step - 1, num_hidden_layers, step).
        step = cfg.integer("interleave_moe_layer_step", default=1)
        moe = list(range(step - 1, layers, step))
    inter = cfg.integer("intermediate_size")
    return _Shape(
        moe_layers=moe,
        num_experts=cfg.integer("num_local_experts"),
        top_k=cfg.integer("num_experts_per_tok"),
        intermediate=inter,
        # Llama4TextMoe always adds one shared expert of the routed experts' width.
        shared_experts=1,
        shared_intermediate=inter,
        extra={"dense_intermediate_size": cfg.data.get("intermediate_size_mlp")},
    )


_PARSERS: dict[str, Callable[[_Config], _Shape]] = {
    "mixtral": _mixtral_like,
    "phimoe": _mixtral_like,
    "qwen2_moe": _qwen_moe,
    "qwen3_moe": _qwen_moe,
    "deepseek_v2": _deepseek,
    "deepseek_v3": _deepseek,
    "olmoe": _olmoe,
    "gpt_oss": _gpt_oss,
    "llama4": _llama4,
    "llama4_text": _llama4,
}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(_PARSERS)


def model_from_hf_config(
    path_or_dict: str | Path | Mapping[str, Any],
    name: str | None = None,
    *,
    hf_id: str | None = None,
    dtype: str | None = None,
) -> ModelSpec:
    """Read a Hugging Face ``config.json`` (a file, its folder, or the parsed dict).

    ``name`` defaults to the folder holding config.json (lower-cased). ``hf_id`` defaults to
    ``_name_or_path`` when that looks like ``org/model``. ``dtype`` overrides the stored
    dtype of the experts (a :data:`DTYPE_BYTES` key) when the config does not say it right.
    Missing or malformed keys raise :class:`MoesimInputError` naming the file and key.
    """
    outer, where, default_name, source = _load(path_or_dict)
    model_type = outer.get("model_type")
    if not isinstance(model_type, str) or model_type not in _PARSERS:
        raise MoesimInputError(
            f"{where}: key 'model_type' is {model_type!r}, which is not supported; "
            f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    data: Mapping[str, Any] = outer
    if model_type == "llama4":
        text = outer.get("text_config")
        if not isinstance(text, Mapping):
            raise MoesimInputError(
                f"{where}: key 'text_config' is missing or not an object (model_type 'llama4'); "
                "Llama 4 keeps the language model's shape there, copy it from the published config.json"
            )
        data = text
        where = f"{where} [text_config]"
    cfg = _Config(data, where, model_type)

    num_layers = cfg.integer("num_hidden_layers")
    hidden = cfg.integer("hidden_size")
    shape = _PARSERS[model_type](cfg)
    if not shape.moe_layers:
        raise cfg.fail("num_hidden_layers", "leaves no MoE layer", "check the MoE layer keys in config.json")
    bad = [i for i in shape.moe_layers if not 0 <= i < num_layers]
    if bad:
        raise cfg.fail("moe_layers", f"has indices {bad} outside 0..{num_layers - 1}", "fix the layer list")
    if shape.top_k > shape.num_experts:
        raise cfg.fail(
            "num_experts_per_tok",
            f"({shape.top_k}) exceeds the number of routed experts ({shape.num_experts})",
            "fix the value in config.json",
        )
    storage = _storage(cfg, outer, biases=shape.biases, dtype_override=dtype)
    attention = shape.attention or _gqa(cfg, hidden)
    breakdown = expert_bytes_breakdown(hidden, shape.intermediate, storage)

    if hf_id is None:
        name_or_path = outer.get("_name_or_path")
        hf_id = str(name_or_path) if isinstance(name_or_path, str) and name_or_path.count("/") == 1 else ""
    spec_name = (name or default_name or str(model_type)).lower()
    extra: dict[str, Any] = {
        "model_type": model_type,
        "expert_storage": storage,
        "expert_bytes_breakdown": breakdown,
    }
    extra.update({k: v for k, v in (shape.extra or {}).items() if v is not None})
    return ModelSpec(
        name=spec_name,
        hf_id=hf_id,
        num_layers=num_layers,
        moe_layer_indices=tuple(shape.moe_layers),
        num_experts=shape.num_experts,
        top_k=shape.top_k,
        num_shared_experts=shape.shared_experts,
        hidden_size=hidden,
        expert_intermediate_size=shape.intermediate,
        shared_expert_intermediate_size=shape.shared_intermediate,
        attention=attention,
        vocab_size=cfg.integer("vocab_size"),
        dtype=storage.dtype,
        expert_bytes=sum(breakdown.values()),
        source=source,
        notes="",
        extra=extra,
    )
