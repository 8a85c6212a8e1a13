"""Fetch and load the prior/decoder pair, component by component.

``StableCascadeCombinedPipeline.from_pretrained`` fails on current diffusers
for the published repos (their decoder's ``model_index.json`` names the VQGAN
``["wuerstchen", "PaellaVQModel"]``), so each component is loaded with its own
class. Only what generation needs is downloaded: the prior's text encoder,
tokenizer, prior and scheduler; the decoder's decoder, scheduler and VQGAN
(the decoder repo's own text encoder never runs, and the image encoder is only
for image conditioning).

Example::

    folders = fetch(resolve_source())               # downloads on first use
    parts = load_components(folders, torch.bfloat16)
    parts = load_components(folders, torch.bfloat16, fp8="quanto", on_status=print)

fp8 weights never need more host memory than bf16: each component is read
tensor by tensor from its files and each layer is quantized as it arrives (the
bf16 original is dropped at once), and the result is cached on disk
(:mod:`sote_ui.engine.weight_cache`) so later starts read the fp8 weights back, checked against the
entry's content hash and the model's own keys, instead of quantizing again.
"""

from __future__ import annotations

import contextlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..core.errors import ModelError
from ..core.memory import ComponentSizes
from . import hub, weight_cache
from .devices import free_memory
from .models import ModelSource, check_ref, is_local
from .placement.fp8 import QUANTO_QTYPES, layerwise_skip, quanto_exclude

PRIOR_PARTS = ("prior", "text_encoder", "tokenizer", "scheduler")
DECODER_PARTS = ("decoder", "scheduler", "vqgan")
_WEIGHTED = {"prior", "text_encoder", "decoder", "vqgan"}

@dataclass(frozen=True)
class Folders:
    """Local folders of both halves of the pair, ready to load."""

    prior: Path
    decoder: Path
    variant: str | None = None


def download_patterns(parts: tuple[str, ...], variant: str | None) -> list[str]:
    """The Hub file patterns of ``parts`` (configs, and weights of ``variant`` only where one is asked for)."""
    patterns = ["model_index.json", "README.md"]
    for part in parts:
        patterns += [f"{part}/*.json", f"{part}/*.txt"]
        if part in _WEIGHTED:
            if variant:  # single files, shards (name.bf16-00001-of-00002.safetensors) and their index
                patterns += [f"{part}/*.{variant}.safetensors", f"{part}/*.{variant}-*-of-*.safetensors",
                             f"{part}/*.safetensors.index.{variant}.json"]
            else:
                patterns.append(f"{part}/*.safetensors")
    return patterns


def _is_variant_file(name: str, variant: str) -> bool:
    # model.bf16.safetensors, or a shard: model.bf16-00001-of-00002.safetensors
    return name.endswith(f".{variant}.safetensors") or f".{variant}-" in name


def _weights_files(folder: Path, variant: str | None) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    if variant:
        wanted = [f for f in files if _is_variant_file(f.name, variant)]
        return wanted or files
    plain = [f for f in files if f.name.count(".") == 1 or "-of-" in f.name]
    return plain or files


def check_folder(folder: Path, parts: tuple[str, ...], role: str, variant: str | None = None) -> None:
    """Raise ModelError naming the first missing piece of a pipeline folder."""
    if not folder.is_dir():
        raise ModelError(f"{role} folder {folder} does not exist")
    for part in parts:
        sub = folder / part
        if part == "tokenizer":
            needed = [sub / "vocab.json", sub / "merges.txt"]
            if (sub / "tokenizer.json").is_file():
                needed = [sub / "tokenizer.json"]
        elif part == "scheduler":
            needed = [sub / "scheduler_config.json"]
        else:
            needed = [sub / "config.json"]
        for path in needed:
            if not path.is_file():
                raise ModelError(
                    f"{role} folder {folder} is incomplete: {path.relative_to(folder)} is missing "
                    f"(a Stable Cascade {role} folder has {', '.join(p + '/' for p in parts)})"
                )
        if part in _WEIGHTED and not _weights_files(sub, variant):
            raise ModelError(f"{role} folder {folder} is incomplete: no .safetensors weights in {part}/")


def _download(repo_id: str, parts: tuple[str, ...], role: str, variant: str | None) -> Path:
    return hub.snapshot(repo_id, download_patterns(parts, variant), f"{role} {repo_id}",
                        "connect once to download it, or pass --prior/--decoder folders")


def fetch(source: ModelSource) -> Folders:
    """Local folders for ``source``: given folders as they are, Hub ids through the cache.

    Downloads show huggingface_hub's progress bars; ``HF_HUB_OFFLINE=1``
    uses the cache only.
    """
    folders = []
    for ref, parts, role in ((source.prior, PRIOR_PARTS, "prior"), (source.decoder, DECODER_PARTS, "decoder")):
        ref = check_ref(ref, role)
        folder = Path(ref).expanduser() if is_local(ref) else _download(ref, parts, role, source.variant)
        check_folder(folder, parts, role, source.variant)
        folders.append(folder)
    return Folders(folders[0], folders[1], source.variant)


def _safetensors_params(path: Path) -> int:
    # The header alone gives every tensor's shape: no weights are read.
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > path.stat().st_size - 8:  # garbage or a truncated file: don't try to read it
                raise ValueError("header length past the end of the file")
            header = json.loads(handle.read(length))
        total = 0
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in entry["shape"]:
                count *= dim
            total += count
    except (OSError, ValueError, struct.error, KeyError, TypeError, AttributeError):
        raise ModelError(f"{path} is not a readable .safetensors file (a broken or partial download?); "
                         "delete it and download again") from None
    return total


def component_sizes(folders: Folders) -> ComponentSizes:
    """Parameter counts of the four weighted components, read from file headers."""

    def count(folder: Path) -> int:
        return sum(_safetensors_params(f) for f in _weights_files(folder, folders.variant))

    return ComponentSizes(
        text_encoder=count(folders.prior / "text_encoder"),
        prior=count(folders.prior / "prior"),
        decoder=count(folders.decoder / "decoder"),
        vqgan=count(folders.decoder / "vqgan"),
    )


@dataclass
class Components:
    tokenizer: object
    text_encoder: object
    prior: object
    prior_scheduler: object
    decoder: object
    decoder_scheduler: object
    vqgan: object
    fp8: str | None = None  # "quanto", "quanto-int8" or "layerwise" once the weights are 8-bit
    notes: tuple[str, ...] = ()  # what loading did: fp8 cache built or used, and its size


def _variant(folder: Path, variant: str | None) -> str | None:
    if variant and any(_is_variant_file(f.name, variant) for f in folder.glob("*.safetensors")):
        return variant
    return None


def read_tensors(path: Path):
    """Yield ``(name, tensor)`` for each tensor of a .safetensors file, in file order.

    Each tensor is read into its own memory (the file is not mapped), so a
    tensor the caller drops is really gone: streaming a component through this
    never holds more than the tensors the caller keeps.
    """
    import torch

    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > path.stat().st_size - 8:
                raise ValueError("header length past the end of the file")
            header = json.loads(handle.read(length))
            header.pop("__metadata__", None)
            base = 8 + length
            for name, entry in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
                start, end = entry["data_offsets"]
                dtype = getattr(torch, weight_cache.SAFETENSORS_DTYPES[entry["dtype"]])
                raw = torch.empty(end - start, dtype=torch.uint8)
                handle.seek(base + start)
                if end > start and handle.readinto(memoryview(raw.numpy())) != end - start:
                    raise ValueError("file ends early")
                yield name, raw.view(dtype).reshape(entry["shape"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ModelError(f"{path} is not a readable .safetensors file ({reason}); delete it and download again") \
            from None


def _empty_model(kind: str, folder: Path, dtype):
    """The component's architecture from its config: parameters on ``meta``, buffers real."""
    import torch
    from accelerate import init_empty_weights

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters are created in the compute dtype (on meta: no memory)
    try:
        with init_empty_weights(include_buffers=False):
            if kind == "text_encoder":
                from transformers import CLIPTextConfig, CLIPTextModelWithProjection

                model = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder))
            else:
                from diffusers import StableCascadeUNet

                model = StableCascadeUNet.from_config(StableCascadeUNet.load_config(folder))
    finally:
        torch.set_default_dtype(previous)
    for module in model.modules():  # some classes pick their own dtype from the config
        for name, param in list(module._parameters.items()):
            if param is not None and param.is_meta and param.is_floating_point() and param.dtype != dtype:
                module._parameters[name] = torch.nn.Parameter(param.to(dtype), requires_grad=False)
    return model.eval().requires_grad_(False)


def _fill(model, files: list[Path], dtype, on_weight=None) -> None:
    """Stream ``files`` into ``model`` (built by :func:`_empty_model`), one tensor at a time.

    Floating tensors are cast to ``dtype``. ``on_weight(module, name)`` runs
    after each tensor is in place (fp8 quantizes the layer there).
    """
    import torch

    for path in files:
        for name, tensor in read_tensors(path):
            owner, _, attr = name.rpartition(".")
            try:
                module = model.get_submodule(owner)
            except AttributeError:
                continue  # a tensor this version of the class doesn't have (e.g. old position_ids)
            if tensor.is_floating_point():
                tensor = tensor.to(dtype)
            if attr in module._parameters:
                module._parameters[attr] = torch.nn.Parameter(tensor, requires_grad=False)
            elif attr in module._buffers:
                module._buffers[attr] = tensor
            else:
                continue
            del tensor
            if on_weight:
                on_weight(module, attr)
    missing = [name for name, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if missing:
        raise ModelError(f"{files[0].parent} is incomplete: {len(missing)} weights are missing (first {missing[0]})")


def _quanto_component(kind: str, folder: Path, files: list[Path], dtype, exclude: list[str],
                      backend: str = "quanto"):
    """``(module, note)``: the component with 8-bit quanto weights, from the cache or quantized now.

    An entry that can't be restored for any reason is rebuilt from the model
    files, and the note says why in one line.
    """
    import torch
    from optimum.quanto import QModuleMixin, qtypes, quantize

    qtype = QUANTO_QTYPES[backend]
    key = weight_cache.entry_key(kind, files, exclude, {"weights": qtype, "dtype": str(dtype)})
    problem = ""
    try:
        restored = _from_cache(key, kind, folder, dtype, qtypes[qtype], exclude)
        if restored is not None:
            return restored
    except Exception as exc:  # whatever is wrong with the entry, the model files rebuild it
        problem = _reason(exc)
        with contextlib.suppress(OSError):
            weight_cache.remove(key.stem)
    if problem:
        free_memory()  # what the failed restore read went with its traceback: give it back first

    model = _empty_model(kind, folder, dtype)
    quantize(model, weights=qtypes[qtype], exclude=exclude or None)

    def freeze_layer(module, attr):
        if attr == "weight" and isinstance(module, QModuleMixin):
            module.freeze()

    for module in model.modules():  # quantize() left its activation scales on meta; they are ones
        if isinstance(module, QModuleMixin):
            for name, buffer in list(module._buffers.items()):
                if buffer is not None and buffer.is_meta:
                    module._buffers[name] = torch.ones_like(buffer, device="cpu")
    _fill(model, files, dtype, freeze_layer)
    model = model.eval().requires_grad_(False)
    try:
        size = weight_cache.save(key, model)
        note = f"fp8 cache built for the {kind} ({weight_cache.human(size)} in {weight_cache.cache_root()})"
    except OSError as exc:
        note = f"fp8 cache not written for the {kind} ({exc.strerror or exc}); the next start quantizes again"
    if problem:
        note += f"; the old entry was unusable ({problem})"
    return model, note


def _from_cache(key, kind: str, folder: Path, dtype, qtype, exclude: list[str]):
    """``(module, note)`` from ``key``'s entry, None if there is none; raises if it is unusable."""
    cached = weight_cache.load(key)
    if cached is None:
        return None
    state_dict, qmap, size = cached
    model = _restore(_empty_model(kind, folder, dtype), state_dict, qmap, qtype, exclude)
    return model, f"fp8 cache used for the {kind} ({weight_cache.human(size)})"


def _restore(model, state_dict: dict, qmap: dict, qtype, exclude: list[str]):
    """``model`` (from :func:`_empty_model`) with the cached weights: quantized the way a fresh build is,
    then every tensor taken from ``state_dict``. Raises CacheError unless the entry fits exactly.

    optimum-quanto's own ``requantize`` loads with ``strict=False`` after
    filling what is missing with ``torch.empty_like``: a key the entry lacks
    (a layer renamed by an upgrade) would run on uninitialised memory.
    """
    from optimum.quanto import quantization_map, quantize

    quantize(model, weights=qtype, exclude=exclude or None)
    if quantization_map(model) != qmap:
        raise weight_cache.CacheError("its quantization map doesn't match the model's")
    try:
        model.load_state_dict(state_dict, strict=False, assign=True)  # assigned: the read tensors are not copied
    except RuntimeError as exc:
        if "size mismatch" in str(exc):
            raise weight_cache.CacheError("a tensor's shape doesn't match the model's") from None
        raise
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
    if missing or unexpected:
        first = f"lacks {missing[0]}" if missing else f"has an unknown {unexpected[0]}"
        raise weight_cache.CacheError(f"its keys don't match the model's: {len(missing)} missing, "
                                      f"{len(unexpected)} unknown; it {first}")
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        data = getattr(tensor, "_data", tensor)
        if tensor.is_meta or data.is_meta:
            raise weight_cache.CacheError(f"it leaves {name} empty")
        if data is not tensor and data.shape != tensor.shape:
            raise weight_cache.CacheError(f"its {name} has the shape {list(data.shape)}, not {list(tensor.shape)}")
    return model.eval().requires_grad_(False)


def _reason(exc: Exception) -> str:
    """One short line for an entry that failed to restore, naming no path."""
    if isinstance(exc, weight_cache.CacheError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or 'not readable'}"
    first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _layerwise_component(kind: str, folder: Path, files: list[Path], dtype, skip: tuple[str, ...]):
    """The UNet with fp8 storage and ``dtype`` compute (diffusers' layerwise casting), read tensor by tensor."""
    import torch

    model = _empty_model(kind, folder, dtype)
    _fill(model, files, dtype)
    model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype, skip_modules_pattern=skip)
    return model


def load_components(folders: Folders, dtype, fp8: str | None = None,
                    on_status: Callable[[str], None] | None = None) -> Components:
    """Load every component on the CPU in ``dtype`` with its own class.

    ``fp8="quanto"`` gives the text encoder and both UNets optimum-quanto
    qfloat8 weights (``"quanto-int8"``: qint8, for CPUs), ``fp8="layerwise"`` gives the UNets diffusers' fp8
    layerwise casting. Either way the largest component comes first, each is
    read tensor by tensor, and freed memory goes back to the OS before the
    next one, so the process never holds more than the bf16 model would.
    """
    if fp8:
        return _load_fp8(folders, dtype, fp8, on_status or (lambda message: None))
    from diffusers import StableCascadeUNet
    from transformers import CLIPTextModelWithProjection

    prior_dir, decoder_dir = folders.prior, folders.decoder
    try:
        text_encoder = CLIPTextModelWithProjection.from_pretrained(
            prior_dir, subfolder="text_encoder", dtype=dtype,
            variant=_variant(prior_dir / "text_encoder", folders.variant),
        ).eval()
        prior = StableCascadeUNet.from_pretrained(
            prior_dir, subfolder="prior", torch_dtype=dtype, variant=_variant(prior_dir / "prior", folders.variant)
        ).eval()
        decoder = StableCascadeUNet.from_pretrained(
            decoder_dir, subfolder="decoder", torch_dtype=dtype,
            variant=_variant(decoder_dir / "decoder", folders.variant),
        ).eval()
        tokenizer, prior_scheduler, decoder_scheduler, vqgan = _small_parts(folders, dtype)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"loading the model failed: {str(exc).splitlines()[0][:200]}") from None
    for module in (text_encoder, prior, decoder, vqgan):
        module.requires_grad_(False)
    return Components(tokenizer, text_encoder, prior, prior_scheduler, decoder, decoder_scheduler, vqgan)


def _small_parts(folders: Folders, dtype) -> tuple:
    """The tokenizer, both schedulers and the VQGAN: loaded the same way in every weight format."""
    from diffusers import DDPMWuerstchenScheduler
    from diffusers.pipelines.deprecated.wuerstchen.modeling_paella_vq_model import PaellaVQModel
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(folders.prior, subfolder="tokenizer")
    prior_scheduler = DDPMWuerstchenScheduler.from_pretrained(folders.prior, subfolder="scheduler")
    decoder_scheduler = DDPMWuerstchenScheduler.from_pretrained(folders.decoder, subfolder="scheduler")
    vqgan = PaellaVQModel.from_pretrained(
        folders.decoder, subfolder="vqgan", torch_dtype=dtype,
        variant=_variant(folders.decoder / "vqgan", folders.variant),
    ).eval()
    return tokenizer, prior_scheduler, decoder_scheduler, vqgan


def _load_fp8(folders: Folders, dtype, backend: str, say: Callable[[str], None]) -> Components:
    from transformers import CLIPTextModelWithProjection

    prior_dir, decoder_dir = folders.prior, folders.decoder
    built: dict = {}
    notes: list[str] = []
    if backend in QUANTO_QTYPES:
        try:
            count, size = weight_cache.prune()
            if count:
                say(f"fp8 cache: removed {count} unusable or leftover file(s), {weight_cache.human(size)}")
        except OSError:  # an unwritable cache is reported when an entry is written
            pass
    try:
        for kind, folder in (("prior", prior_dir / "prior"), ("decoder", decoder_dir / "decoder"),
                             ("text_encoder", prior_dir / "text_encoder")):
            files = _weights_files(folder, folders.variant)
            if backend in QUANTO_QTYPES:
                say(f"fp8: preparing the {kind}")
                built[kind], note = _quanto_component(kind, folder, files, dtype, quanto_exclude(kind), backend)
                notes.append(note)
                say(note)
            elif kind == "text_encoder":
                built[kind] = CLIPTextModelWithProjection.from_pretrained(
                    prior_dir, subfolder="text_encoder", dtype=dtype,
                    variant=_variant(prior_dir / "text_encoder", folders.variant)).eval()
            else:
                say(f"fp8: casting the {kind}")
                built[kind] = _layerwise_component(kind, folder, files, dtype, layerwise_skip())
            free_memory()
        tokenizer, prior_scheduler, decoder_scheduler, vqgan = _small_parts(folders, dtype)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"loading the model failed: {str(exc).splitlines()[0][:200]}") from None
    for module in (*built.values(), vqgan):
        module.requires_grad_(False)
    return Components(tokenizer, built["text_encoder"], built["prior"], prior_scheduler, built["decoder"],
                      decoder_scheduler, vqgan, fp8=backend, notes=tuple(notes))


def weight_bytes(module) -> int:
    """Bytes the module's weights take as stored (quantized tensors counted by their data and scales)."""
    total = 0
    for tensor in list(module.parameters()) + list(module.buffers()):
        inner = [getattr(tensor, name) for name in ("_data", "_scale") if hasattr(tensor, name)]
        if inner:
            total += sum(t.numel() * t.element_size() for t in inner)
        else:
            total += tensor.numel() * tensor.element_size()
    return total
