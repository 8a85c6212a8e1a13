"""LoRA for stage C: the four formats people train, mapped onto diffusers' modules, applied at run time.

Formats, told apart by their keys (one file may mix them):

- **kohya** (sd-scripts' ``stable-cascade`` branch): ``lora_unet_<module>`` with Stability's module names
  (``attention.attn.to_q``, ``attention.attn.out_proj``) and ``lora_te_<module>`` for the CLIP text
  encoder, ``.lora_down`` / ``.lora_up`` / ``.alpha``, on Linear and Conv2d layers.
- **OneTrainer**: ``lora_prior_unet_<diffusers module>`` (older files: kohya's attention names) and
  ``lora_prior_te_<module>``; its newer files write ``unet.<module>`` / ``clip_g.<module>`` with the fused
  attention projection as ``attention.attn.in_proj.0/1/2`` (q, k, v).
- **diffusers / PEFT**: the diffusers module names themselves, bare or under ``prior.`` / ``unet.`` /
  ``text_encoder.`` / ``base_model.model.``, with ``lora_A`` / ``lora_B`` (or ``lora.down`` / ``lora.up``).
- **Stability's own** (``modules/lora.py`` of Stability-AI/StableCascade): ``weights.<i>.lora_down`` /
  ``lora_up`` in the order the training code met its layers, with no names, and ``embeddings.*`` for
  retrained token embeddings. The layers are found by matching that order and the shapes against the
  prior's layers (``module_filters`` such as ``['.attn']``); the fused attention input projection is split
  into its q, k and v thirds. Embedding rows of existing tokens are applied; new tokens (a trigger word
  the training added to the tokenizer) are not, and a note says so.

Every layer maps to a module of the prior UNet or the text encoder; keys that map nowhere are
reported by name, never dropped silently. A file for another model family (SD 1.x, SDXL) is named as such.

The layers are applied as forward hooks that add ``weight * scale * up(down(x))`` to a layer's
output: the base weights are never written, so quanto's 8-bit layers, offloaded models and the fp8
weight cache stay as they were, and switching LoRAs or weights costs a hook swap, not a reload.

Example::

    lora = read_lora(path, prior_pipe.prior, prior_pipe.text_encoder, name="ink")
    hooks = Adapters()
    hooks.use(prior_pipe.prior, prior_pipe.text_encoder, [(lora, 0.8, 0.8)])   # on
    hooks.use(prior_pipe.prior, prior_pipe.text_encoder, [])                   # off
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.errors import InputError
from ..core.loras import MAX_BYTES, file_hash

PRIOR = "prior"
TEXT = "text_encoder"
# (suffix, role); the longest suffixes first, so ``.lora.down.weight`` is not read as ``.weight``
_SUFFIXES = (
    (".lora_linear_layer.down.weight", "down"), (".lora_linear_layer.up.weight", "up"),
    (".lora_down.weight", "down"), (".lora_up.weight", "up"),
    (".lora_A.default.weight", "down"), (".lora_B.default.weight", "up"),
    (".lora_A.weight", "down"), (".lora_B.weight", "up"),
    (".lora.down.weight", "down"), (".lora.up.weight", "up"),
    (".alpha", "alpha"),
)
# Parts of other adapter kinds (LyCORIS LoHa, LoKr, LoCon's Tucker middle, DoRA, OFT).
_OTHER_KINDS = {"hada_w1_a": "LoHa", "hada_w2_a": "LoHa", "lokr_w1": "LoKr", "lokr_w2": "LoKr",
                "lora_mid": "LoCon with a Tucker middle", "dora_scale": "DoRA", "oft_blocks": "OFT",
                "oft_diag": "OFT"}
# Names only other model families have (SD 1.x/2.x/SDXL UNets and SDXL's two text encoders, DiT models).
_OTHER_FAMILY = re.compile(r"^(lora_te[12]_|lora_unet_(input_blocks|output_blocks|middle_block|"
                           r"(down|up)_blocks_\d+_attentions_|mid_block_)|lora_unet_(double|single)_blocks_|"
                           r"lora_transformer_|(unet\.|prior\.)?(down|up)_blocks\.\d+\.attentions\.|"
                           r"(transformer\.)?(transformer_blocks|single_transformer_blocks)\.)")
_MAX_NAMED = 3  # unknown keys named in an error


@dataclass(frozen=True)
class Target:
    """Where a key lands: the model (``prior`` or ``text_encoder``) and the diffusers module name."""

    part: str
    module: str


@dataclass
class LoraLayer:
    """One low-rank update: the layer's output gains ``scale * up(down(x))`` (times the LoRA's weight)."""

    part: str
    module: str
    down: torch.Tensor  # (rank, in) or (rank, in, kh, kw)
    up: torch.Tensor  # (out, rank) or (out, rank, 1, 1)
    scale: float

    def delta(self) -> torch.Tensor:
        """``scale * up @ down`` in the layer's weight shape (fp32)."""
        up = self.up.float().flatten(1)
        down = self.down.float()
        if down.dim() == 4:
            return torch.einsum("or,rihw->oihw", up, down) * self.scale
        return (up @ down.flatten(1)) * self.scale



@dataclass
class LoraFile:
    """A LoRA read and mapped: its layers, its token-embedding rows, what it is and the notes on what was left."""

    name: str
    digest: str
    kind: str
    layers: list[LoraLayer]
    embeddings: dict[int, torch.Tensor] = field(default_factory=dict)  # token id -> row added to its embedding
    notes: list[str] = field(default_factory=list)

    @property
    def has_text(self) -> bool:
        return bool(self.embeddings) or any(layer.part == TEXT for layer in self.layers)

    @property
    def has_prior(self) -> bool:
        return any(layer.part == PRIOR for layer in self.layers)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for layer in self.layers for t in (layer.down, layer.up))


# 1. Module names in each format ------------------------------------------------------------------------

_ATTN_QKV = re.compile(r"^(.*\.attention)\.to_([qkv])$")
_ATTN_OUT = re.compile(r"^(.*\.attention)\.to_out\.0$")


def stability_name(module: str) -> str:
    """The prior module's name in Stability's and kohya's StageC (attention as ``attention.attn.*``)."""
    match = _ATTN_QKV.match(module)
    if match:
        return f"{match.group(1)}.attn.to_{match.group(2)}"
    match = _ATTN_OUT.match(module)
    if match:
        return f"{match.group(1)}.attn.out_proj"
    return module


def _omi_name(module: str) -> str:
    match = _ATTN_QKV.match(module)
    if match:
        return f"{match.group(1)}.attn.in_proj.{'qkv'.index(match.group(2))}"
    return stability_name(module)


def _flat(name: str) -> str:
    return name.replace(".", "_")


def adapted_layers(model) -> dict[str, torch.nn.Module]:
    """The model's Linear and Conv2d layers (quanto's 8-bit ones included) by module name."""
    return {name: module for name, module in model.named_modules()
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))}


def key_table(prior, text_encoder=None) -> dict[str, Target]:
    """Every base key (a key without its ``.lora_down.weight``-like suffix) of every format, and its target.

    Built from the models' own module names, so it fits the tiny and the full-size prior alike.
    """
    table: dict[str, Target] = {}
    for module in adapted_layers(prior):
        target = Target(PRIOR, module)
        for key in (module, "prior." + module, "unet." + module, "base_model.model." + module,
                    "lora_unet_" + _flat(stability_name(module)),
                    "lora_prior_unet_" + _flat(module), "lora_prior_unet_" + _flat(stability_name(module)),
                    "unet." + _omi_name(module)):
            table.setdefault(key, target)
    if text_encoder is not None:
        for module in adapted_layers(text_encoder):
            target = Target(TEXT, module)
            for key in (module, "text_encoder." + module, "te." + module, "lora_te_" + _flat(module),
                        "lora_prior_te_" + _flat(module), "clip_g." + module):
                table.setdefault(key, target)
    return table


_TABLES: dict[tuple[int, int], dict[str, Target]] = {}


def _table(prior, text_encoder) -> dict[str, Target]:
    key = (id(prior), id(text_encoder))
    if key not in _TABLES:
        _TABLES.clear()  # one model pair at a time
        _TABLES[key] = key_table(prior, text_encoder)
    return _TABLES[key]


# 2. Reading a file ---------------------------------------------------------------------------------------


def _read_tensors(path: Path, name: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    try:
        size = path.stat().st_size
    except OSError:
        raise InputError(f"LoRA {name!r} can't be read") from None
    if size > MAX_BYTES:
        raise InputError(f"LoRA {name!r} is {size / 1e9:.1f} GB, over the {MAX_BYTES / 1e9:.1f} GB a LoRA may be; "
                         "is it a whole model?")
    try:
        tensors = {}
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            for key in handle.keys():
                tensors[key] = handle.get_tensor(key)
        return tensors
    except (SafetensorError, OSError, ValueError, RuntimeError, EOFError):
        raise InputError(f"LoRA {name!r} is not a readable safetensors file (damaged or another format)") from None


def _split_key(key: str) -> tuple[str, str] | None:
    for suffix, role in _SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)], role
    return None


def _named(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_NAMED])
    return shown + (f" and {len(keys) - _MAX_NAMED} more" if len(keys) > _MAX_NAMED else "")


def _check_family(name: str, keys: list[str]) -> None:
    foreign = [key for key in keys if _OTHER_FAMILY.match(key)]
    if foreign and len(foreign) * 2 >= len(keys):
        raise InputError(f"LoRA {name!r} is for another model family (SD 1.x/SDXL or a DiT, e.g. "
                         f"{foreign[0][:80]}), not Stable Cascade")
    for key in keys:
        for part, kind in _OTHER_KINDS.items():
            if part in key:
                raise InputError(f"LoRA {name!r} is a {kind} adapter ({key[:80]}); only plain LoRA (down/up) is "
                                 "supported")


def read_lora(path: str | Path, prior, text_encoder=None, *, name: str | None = None) -> LoraFile:
    """Read a LoRA file in any of the four formats and map it onto ``prior`` (and ``text_encoder``).

    Raises :class:`InputError` with one line for a file that is too big,
    damaged, for another model family, of another adapter kind, has no key
    that fits these models (a few are named), or whose shapes don't fit.
    """
    path = Path(path)
    name = name or path.stem
    tensors = _read_tensors(path, name)
    if not tensors:
        raise InputError(f"LoRA {name!r} holds no tensors")
    digest = file_hash(path)
    if any(key.startswith("weights.") for key in tensors) and all(
            key.startswith(("weights.", "embeddings.")) for key in tensors):
        return _read_stability(name, digest, tensors, prior, text_encoder)
    _check_family(name, list(tensors))
    table = _table(prior, text_encoder)
    groups: dict[str, dict[str, torch.Tensor]] = {}
    unknown = []
    for key, tensor in tensors.items():
        split = _split_key(key)
        if split is None or split[0] not in table:
            if not key.startswith("bundle_emb"):
                unknown.append(key)
            continue
        groups.setdefault(split[0], {})[split[1]] = tensor
    notes = []
    if any(key.startswith("bundle_emb") for key in tensors):
        notes.append(f"LoRA {name}: its bundled embeddings are not loaded (not supported)")
    if not groups:
        raise InputError(f"LoRA {name!r} has no layer of this model: keys like {_named(sorted(unknown))}")
    if unknown:
        raise InputError(f"LoRA {name!r} has {len(unknown)} key(s) that fit no layer of this model: "
                         f"{_named(sorted(unknown))}")
    layers = []
    modules = {PRIOR: adapted_layers(prior), TEXT: adapted_layers(text_encoder) if text_encoder is not None else {}}
    seen = {}
    for base, parts in groups.items():
        target = table[base]
        if "down" not in parts or "up" not in parts:
            raise InputError(f"LoRA {name!r}: {base[:80]} has no {'up' if 'down' in parts else 'down'} matrix")
        if target in seen:
            raise InputError(f"LoRA {name!r}: {base[:80]} and {seen[target][:80]} are the same layer")
        seen[target] = base
        down, up = parts["down"], parts["up"]  # kept as stored (fp16 in most files): hooks stack them in fp32
        rank = down.shape[0]
        alpha = float(parts["alpha"].float().item()) if "alpha" in parts else float(rank)
        layer = LoraLayer(target.part, target.module, down, up, alpha / rank if rank else 0.0)
        _check_shapes(name, base, layer, modules[target.part][target.module])
        layers.append(layer)
    kinds = sorted({_kind(base) for base in groups})
    return LoraFile(name, digest, "+".join(kinds), layers, notes=notes)


def _kind(base: str) -> str:
    if base.startswith(("lora_unet_", "lora_te_")):
        return "kohya"
    if base.startswith(("lora_prior_", "clip_g.")) or re.search(r"\.attn\.in_proj\.\d$", base):
        return "onetrainer"
    return "diffusers"


def _check_shapes(name: str, base: str, layer: LoraLayer, module) -> None:
    weight_shape = tuple(module.weight.shape)
    down, up = layer.down, layer.up
    fits = down.dim() == up.dim() and up.shape[1] == down.shape[0]
    if isinstance(module, torch.nn.Conv2d):
        if module.groups != 1:
            raise InputError(f"LoRA {name!r}: {base[:80]} targets a grouped convolution, which a LoRA can't adapt")
        fits = fits and down.dim() == 4 and tuple(up.shape[2:]) == (1, 1) and down.shape[1] == weight_shape[1] \
            and tuple(down.shape[2:]) == weight_shape[2:] and up.shape[0] == weight_shape[0]
    else:
        fits = fits and down.dim() == 2 and down.shape[1] == weight_shape[1] and up.shape[0] == weight_shape[0]
    if not fits:
        raise InputError(f"LoRA {name!r}: {base[:80]} is {tuple(up.shape)} x {tuple(down.shape)}, the layer "
                         f"{tuple(weight_shape)}; it was trained for another model size")


# Stability's format: layers in training order -------------------------------------------------------------

# Stability's StageC registers its parts in this order (diffusers' differs); a LoRA's layers follow it.
_STABILITY_SECTIONS = ("clip_txt_mapper", "clip_txt_pooled_mapper", "clip_img_mapper", "embedding", "down_blocks",
                       "down_downscalers", "down_repeat_mappers", "up_blocks", "up_upscalers", "up_repeat_mappers",
                       "clf")
# module_filters people train with (Stability's config uses ['.attn']); None is every layer.
_STABILITY_FILTERS = ((".attn",), ("attention",), (".attn", "kv_mapper"), ("channelwise",), ("mapper",), None)


def _stability_layers(prior) -> list[tuple[str, tuple[str, ...], tuple[int, ...]]]:
    """(Stability name, diffusers modules, weight shape) of each layer the training code would wrap, in its order.

    The fused attention input projection (``attention.attn``, q/k/v stacked)
    comes after its output projection, as the parametrized module's children
    are met.
    """
    layers = adapted_layers(prior)
    order = {section: i for i, section in enumerate(_STABILITY_SECTIONS)}
    names = sorted(layers, key=lambda n: order.get(n.split(".")[0], len(order)))  # stable: keeps the rest's order
    found = []
    for module in names:
        match = _ATTN_QKV.match(module)
        if match:
            if match.group(2) == "q":  # the three become one fused projection, after out_proj
                pending = (f"{match.group(1)}.attn", tuple(f"{match.group(1)}.to_{x}" for x in "qkv"),
                           (3 * layers[module].weight.shape[0], layers[module].weight.shape[1]))
                found.append(("pending", pending))
            continue
        weight = layers[module].weight
        found.append(("layer", (stability_name(module), (module,), tuple(weight.shape))))
        if _ATTN_OUT.match(module):
            # the fused projection (registered earlier) comes after out_proj
            for i in range(len(found) - 1, -1, -1):
                if found[i][0] == "pending":
                    item = found.pop(i)
                    found.append(("layer", item[1]))
                    break
    return [item for kind, item in found if kind == "layer"]


def _read_stability(name, digest, tensors, prior, text_encoder) -> LoraFile:
    count = 1 + max((int(key.split(".")[1]) for key in tensors if key.startswith("weights.")), default=-1)
    pairs = []
    for i in range(count):
        down, up = tensors.get(f"weights.{i}.lora_down"), tensors.get(f"weights.{i}.lora_up")
        if down is None or up is None:
            raise InputError(f"LoRA {name!r} (Stability's format) lacks weights.{i}.lora_down or lora_up")
        pairs.append((down.float(), up.float()))
    candidates = _stability_layers(prior)
    chosen = None
    for filters in _STABILITY_FILTERS:
        wanted = [c for c in candidates if filters is None or any(f in c[0] for f in filters)]
        if len(wanted) == count and all(
                up.shape[0] == shape[0] and down.shape[1] == _prod(shape[1:]) for (down, up), (_, _, shape)
                in zip(pairs, wanted)):
            chosen = wanted
            break
    if chosen is None:
        raise InputError(f"LoRA {name!r} (Stability's format) has {count} layers that match no known set of this "
                         "prior's layers (module_filters other than '.attn', 'attention', 'kv_mapper', 'mapper', "
                         "'channelwise' or all are not supported)")
    layers = []
    for (down, up), (_, modules, shape) in zip(pairs, chosen):
        scale = 1.0 / down.shape[0]  # Stability's LoRA: alpha 1 over the rank
        if len(modules) == 3:
            rows = shape[0] // 3
            for i, module in enumerate(modules):
                layers.append(LoraLayer(PRIOR, module, down, up[i * rows:(i + 1) * rows].contiguous(), scale))
        else:
            module = adapted_layers(prior)[modules[0]]
            if isinstance(module, torch.nn.Conv2d):
                down = down.view(down.shape[0], *shape[1:]) if down.dim() == 2 else down
                up = up.view(*up.shape, 1, 1)
            layers.append(LoraLayer(PRIOR, modules[0], down, up, scale))
    embeddings, notes = {}, []
    rows, indices = tensors.get("embeddings.embeddings"), tensors.get("embeddings.indices")
    if rows is not None and indices is not None:
        vocab = text_encoder.get_input_embeddings().weight.shape[0] if text_encoder is not None else 0
        new = [int(i) for i in indices.tolist() if int(i) >= vocab]
        if rows.shape[-1] != (text_encoder.get_input_embeddings().weight.shape[1] if text_encoder else -1):
            notes.append(f"LoRA {name}: its token embeddings are {rows.shape[-1]} wide, not this text encoder's; "
                         "left out")
        else:
            for i, row in zip(indices.tolist(), rows.float()):
                if int(i) < vocab:
                    embeddings[int(i)] = row
        if new:
            notes.append(f"LoRA {name}: {len(new)} new token(s) it trained (token ids {_named([str(i) for i in new])}) "
                         "are not loaded: this app can't add tokens to the tokenizer")
    return LoraFile(name, digest, "stability", layers, embeddings, notes)


def _prod(values) -> int:
    total = 1
    for value in values:
        total *= int(value)
    return total


# 3. Applying at run time ---------------------------------------------------------------------------------


class _Hook:
    """The forward hook of one layer: its output plus ``up(down(x))``, where the active LoRAs' matrices are
    stacked along the rank with each one's weight and scale folded into its ``up``: two small matmuls per
    layer however many LoRAs are on."""

    def __init__(self, module, entries: list[tuple[LoraLayer, float]]):
        self.conv = isinstance(module, torch.nn.Conv2d)
        self.stride, self.padding, self.dilation = ((module.stride, module.padding, module.dilation) if self.conv
                                                    else (None, None, None))
        self.down = torch.cat([layer.down.float() for layer, _ in entries])
        self.up = torch.cat([layer.up.float() * (weight * layer.scale) for layer, weight in entries], dim=1)
        self._placed: dict = {}

    def placed(self, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (str(device), dtype)
        if key not in self._placed:
            self._placed.clear()  # the model moved (offload) or changed dtype: one copy at a time
            self._placed[key] = (self.down.to(device, dtype), self.up.to(device, dtype))
        return self._placed[key]

    def __call__(self, module, args, output):
        x = args[0]
        down, up = self.placed(x.device, x.dtype)
        if self.conv:
            part = F.conv2d(F.conv2d(x, down, None, self.stride, self.padding, self.dilation), up)
        else:
            part = F.linear(F.linear(x, down), up)
        return output + part.to(output.dtype)


class _EmbeddingHook:
    """Adds retrained rows to the token embeddings of the ids they belong to."""

    def __init__(self, rows: dict[int, torch.Tensor]):
        self.rows = rows

    def __call__(self, module, args, output):
        ids = args[0]
        output = output.clone()
        for token, row in self.rows.items():
            mask = ids == token
            if mask.any():
                output[mask] += row.to(output.device, output.dtype)
        return output


class Adapters:
    """The LoRAs applied to one prior and text encoder now, as forward hooks; :meth:`use` switches them."""

    def __init__(self):
        self._handles: list = []
        self._key: tuple | None = None

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def use(self, prior, text_encoder, loras: list[tuple[LoraFile, float, float]]) -> None:
        """Apply exactly ``loras`` ((file, weight, text-encoder weight) each); an empty list removes them all.

        A LoRA at weight 0 adds nothing and gets no hook, so the layers run as if it were not there.
        """
        key = (id(prior), id(text_encoder), tuple((lora.digest, weight, te_weight) for lora, weight, te_weight
                                                  in loras))
        if key == self._key:
            return
        self.clear()
        per_module: dict[tuple[str, str], list[tuple[LoraLayer, float]]] = {}
        rows: dict[int, torch.Tensor] = {}
        for lora, weight, te_weight in loras:
            for layer in lora.layers:
                factor = weight if layer.part == PRIOR else te_weight
                if factor:
                    per_module.setdefault((layer.part, layer.module), []).append((layer, factor))
            if te_weight:
                for token, row in lora.embeddings.items():
                    rows[token] = rows.get(token, 0) + row * te_weight
        modules = {PRIOR: adapted_layers(prior), TEXT: adapted_layers(text_encoder) if text_encoder is not None
                   else {}}
        for (part, name), entries in per_module.items():
            module = modules[part][name]
            self._handles.append(module.register_forward_hook(_Hook(module, entries)))
        if rows and text_encoder is not None:
            embedding = text_encoder.get_input_embeddings()
            self._handles.append(embedding.register_forward_hook(_EmbeddingHook(rows)))
        self._key = key

    def clear(self) -> None:
        """Remove every hook: the models compute as without LoRA."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._key = None


# 4. Merging (the alternative, measured in bench/bench_lora.py) ---------------------------------------------


def merge_into(prior, text_encoder, loras: list[tuple[LoraFile, float, float]]) -> dict[str, torch.Tensor]:
    """Add the LoRAs into plain (bf16/fp32) weights in place; returns the originals to :func:`restore`.

    Only for unquantized weights: quanto's 8-bit weights would have to be
    dequantized and quantized again, which loses most of a LoRA's small change.
    """
    saved: dict[str, torch.Tensor] = {}
    modules = {PRIOR: adapted_layers(prior), TEXT: adapted_layers(text_encoder) if text_encoder is not None else {}}
    with torch.no_grad():
        for lora, weight, te_weight in loras:
            for layer in lora.layers:
                factor = weight if layer.part == PRIOR else te_weight
                module = modules[layer.part][layer.module]
                key = f"{layer.part}:{layer.module}"
                if key not in saved:
                    saved[key] = module.weight.detach().to("cpu", copy=True)
                delta = layer.delta().to(module.weight.device)
                module.weight += (delta.view(module.weight.shape) * factor).to(module.weight.dtype)
    return saved


def restore(prior, text_encoder, saved: dict[str, torch.Tensor]) -> None:
    """Put back the weights :func:`merge_into` saved."""
    modules = {PRIOR: adapted_layers(prior), TEXT: adapted_layers(text_encoder) if text_encoder is not None else {}}
    with torch.no_grad():
        for key, weight in saved.items():
            part, name = key.split(":", 1)
            modules[part][name].weight.copy_(weight)


__all__ = ["Adapters", "LoraFile", "LoraLayer", "Target", "adapted_layers", "key_table", "merge_into", "read_lora",
           "restore", "stability_name"]
