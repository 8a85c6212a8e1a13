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
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from .memory import ComponentSizes
from .models import ModelError, ModelSource, check_ref, is_local

PRIOR_PARTS = ("prior", "text_encoder", "tokenizer", "scheduler")
DECODER_PARTS = ("decoder", "scheduler", "vqgan")
_WEIGHTED = {"prior", "text_encoder", "decoder", "vqgan"}


@dataclass(frozen=True)
class Folders:
    """Local folders of both halves of the pair, ready to load."""

    prior: Path
    decoder: Path
    variant: str | None = None


def _patterns(parts: tuple[str, ...], variant: str | None) -> list[str]:
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
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=_patterns(parts, variant)))
    except RepositoryNotFoundError:
        raise ModelError(f"{role} {repo_id} was not found on the Hugging Face Hub; check the id") from None
    except GatedRepoError:
        raise ModelError(f"{role} {repo_id} is gated: accept its terms on the Hub and log in (hf auth login)") from None
    except LocalEntryNotFoundError:
        raise ModelError(
            f"{role} {repo_id} is not in the local cache and the Hub can't be reached (offline?); "
            "connect once to download it, or pass --prior/--decoder folders"
        ) from None
    except (HfHubHTTPError, OSError) as exc:
        raise ModelError(f"downloading {role} {repo_id} failed: {str(exc).splitlines()[0][:160]}") from None


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


def _variant(folder: Path, variant: str | None) -> str | None:
    if variant and any(_is_variant_file(f.name, variant) for f in folder.glob("*.safetensors")):
        return variant
    return None


def load_components(folders: Folders, dtype) -> Components:
    """Load every component on the CPU in ``dtype`` with its own class."""
    from diffusers import DDPMWuerstchenScheduler, StableCascadeUNet
    from diffusers.pipelines.deprecated.wuerstchen.modeling_paella_vq_model import PaellaVQModel
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    prior_dir, decoder_dir = folders.prior, folders.decoder
    try:
        tokenizer = CLIPTokenizer.from_pretrained(prior_dir, subfolder="tokenizer")
        text_encoder = CLIPTextModelWithProjection.from_pretrained(
            prior_dir, subfolder="text_encoder", dtype=dtype,
            variant=_variant(prior_dir / "text_encoder", folders.variant),
        ).eval()
        prior = StableCascadeUNet.from_pretrained(
            prior_dir, subfolder="prior", torch_dtype=dtype, variant=_variant(prior_dir / "prior", folders.variant)
        ).eval()
        prior_scheduler = DDPMWuerstchenScheduler.from_pretrained(prior_dir, subfolder="scheduler")
        decoder = StableCascadeUNet.from_pretrained(
            decoder_dir, subfolder="decoder", torch_dtype=dtype,
            variant=_variant(decoder_dir / "decoder", folders.variant),
        ).eval()
        decoder_scheduler = DDPMWuerstchenScheduler.from_pretrained(decoder_dir, subfolder="scheduler")
        vqgan = PaellaVQModel.from_pretrained(
            decoder_dir, subfolder="vqgan", torch_dtype=dtype, variant=_variant(decoder_dir / "vqgan", folders.variant)
        ).eval()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"loading the model failed: {str(exc).splitlines()[0][:200]}") from None
    for module in (text_encoder, prior, decoder, vqgan):
        module.requires_grad_(False)
    return Components(tokenizer, text_encoder, prior, prior_scheduler, decoder, decoder_scheduler, vqgan)
