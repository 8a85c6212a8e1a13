"""Which prior/decoder pair to load: known pairs from ``models.json``, explicit
folders, or a single repo whose model card names its partner.

No torch, no gradio. Reaching the Hub (only for a single unknown repo id) goes
through huggingface_hub, which honours ``HF_HUB_OFFLINE`` and the normal cache.

Example::

    source = resolve_source(model="Disty0/sotediffusion-wuerstchen3")
    source = resolve_source(prior="./models/prior", decoder="./models/decoder")
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ModelError
from . import hub

MODELS_FILE = Path(__file__).with_name("models.json")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSource:
    """Where the prior and the decoder come from: Hub ids or local folders."""

    prior: str
    decoder: str
    variant: str | None = None
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or f"{self.prior} + {self.decoder}"


def known_models() -> dict:
    return json.loads(MODELS_FILE.read_text(encoding="utf-8"))


def default_source() -> ModelSource:
    table = known_models()
    return _from_table(table["default"], table["models"][table["default"]])


def _from_table(name: str, entry: dict) -> ModelSource:
    return ModelSource(entry["prior"], entry["decoder"], entry.get("variant"), name)


def is_local(ref: str) -> bool:
    return Path(ref).expanduser().is_dir()


def recorded_name(ref: str) -> str:
    """How a PNG names a model: the Hub id as given, or a local folder's name (never a path of this machine)."""
    return Path(ref).expanduser().name if is_local(ref) else ref


def check_ref(ref: str, role: str) -> str:
    """Return a usable local folder path or Hub id, or raise ModelError."""
    ref = (ref or "").strip()
    if not ref:
        raise ModelError(f"no {role} given")
    path = Path(ref).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if path.exists():
        raise ModelError(f"{role} {ref!r} is a file; give the model folder (the one with model_index.json)")
    if _HUB_ID.match(ref) and not ref.startswith((".", "~")):
        return ref
    raise ModelError(f"{role} folder {ref!r} does not exist (and it is not a Hub id like owner/name)")


def _card_partner(ref: str) -> tuple[str | None, str | None]:
    """(decoder, prior) named in a repo's model card front matter."""
    from huggingface_hub.repocard import metadata_load

    if is_local(ref):
        card = Path(ref).expanduser() / "README.md"
        if not card.is_file():
            return None, None
    else:
        card = hub.file(ref, "README.md", f"the model card of {ref}", "connect once, or pass --prior and --decoder")
    meta = metadata_load(card) or {}

    def first(value):
        if isinstance(value, list):
            value = value[0] if value else None
        return str(value) if value else None

    return first(meta.get("decoder")), first(meta.get("prior"))


def _partner_ref(value: str, base: str) -> str:
    # A card written next to its partner may name it by path; else it is a Hub id.
    if is_local(base):
        candidate = Path(value).expanduser()
        if not candidate.is_absolute():
            sibling = Path(base).expanduser().resolve().parent / candidate.name
            candidate = sibling if sibling.is_dir() else Path(base).expanduser() / candidate
        if candidate.is_dir():
            return str(candidate.resolve())
    return value


def resolve_source(model: str | None = None, prior: str | None = None, decoder: str | None = None) -> ModelSource:
    """Pick the pair to load.

    ``prior`` + ``decoder`` win; one of them alone is completed from its card.
    ``model`` is a name from models.json, a known prior or decoder id, or any
    single repo or folder whose card names its partner (``decoder:``/``prior:``).
    Nothing given: the default pair.
    """
    table = known_models()
    if prior and decoder:
        known = next((entry for entry in table["models"].values()
                      if (entry["prior"], entry["decoder"]) == (prior, decoder)), {})
        return ModelSource(check_ref(prior, "prior"), check_ref(decoder, "decoder"), known.get("variant"))
    if prior or decoder:
        model = prior or decoder
    if not model:
        return default_source()
    model = model.strip()
    if model in table["models"]:
        return _from_table(model, table["models"][model])
    for name, entry in table["models"].items():
        if model in (entry["prior"], entry["decoder"]):  # first pair listing it wins
            return _from_table(name, entry)
    ref = check_ref(model, "model")
    found_decoder, found_prior = _card_partner(ref)
    if found_decoder:
        return ModelSource(ref, check_ref(_partner_ref(found_decoder, ref), "decoder"))
    if found_prior:
        return ModelSource(check_ref(_partner_ref(found_prior, ref), "prior"), ref)
    raise ModelError(
        f"{model} names no partner in its model card (no 'decoder:' or 'prior:' field); "
        "pass both --prior and --decoder"
    )

