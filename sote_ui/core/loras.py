"""LoRA files by name: the loras folder, ``<lora:name:weight>`` tags, and A1111's short hash.

Pure Python: finding, naming and hashing files. Reading the tensors and
applying them is the engine's (:mod:`sote_ui.engine.lora`).

The folder is ``$SOTE_LORA_DIR`` if set, else ``loras/`` in the user folder
(:func:`sote_ui.core.files.user_home`); a LoRA's name is the stem of its
``*.safetensors`` file.

Example::

    >>> text, refs = split_tags("1girl, <lora:ink:0.7>, smile")
    >>> text, refs
    ('1girl, smile', (LoraRef(name='ink', weight=0.7, te_weight=None),))
    >>> ref_text(refs[0])
    'ink:0.7'
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .files import remembered_hash, user_home

ENV = "SOTE_LORA_DIR"
SUFFIX = ".safetensors"
MAX_WEIGHT = 4.0  # A1111's sliders stop at +-2; past 4 a LoRA only burns the image
MAX_LORAS = 8
# A LoRA of the full-size prior at rank 128 on every layer is ~1.5 GB in fp32; a file past this bound is
# a checkpoint or a mistake, and reading it would only fill the memory.
MAX_BYTES = 2 * 1024**3
SHORT_HASH = 12  # A1111 records the first 12 hex digits of the file's "addnet" sha256
# <lora:name>, <lora:name:weight>, <lora:name:weight:text-encoder weight>
TAG = re.compile(r"<\s*lora\s*:\s*([^:<>]+?)\s*(?::\s*([^:<>]*?)\s*)?(?::\s*([^:<>]*?)\s*)?>", re.IGNORECASE)


@dataclass(frozen=True)
class LoraRef:
    """One LoRA of a request: its name, its weight on the prior, and on the text encoder.

    ``te_weight`` None means the same as ``weight``.
    """

    name: str
    weight: float = 1.0
    te_weight: float | None = None

    @property
    def text_weight(self) -> float:
        return self.weight if self.te_weight is None else self.te_weight


def lora_dir() -> Path:
    """The loras folder: ``$SOTE_LORA_DIR``, else ``<user folder>/loras`` (not created here)."""
    return Path(os.environ.get(ENV) or user_home() / "loras").expanduser()


def available() -> dict[str, Path]:
    """Every LoRA in the folder (and its subfolders) by name, names sorted; the first file of a name wins."""
    folder = lora_dir()
    found: dict[str, Path] = {}
    try:
        files = sorted(folder.rglob("*" + SUFFIX), key=lambda p: (len(p.relative_to(folder).parts), str(p)))
    except OSError:
        return {}
    for path in files:
        if path.is_file() and not path.name.startswith("."):
            found.setdefault(path.stem, path)
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def names() -> list[str]:
    """The names of the LoRAs in the folder."""
    return list(available())


def find(name: str) -> Path:
    """The file of the LoRA ``name``; :class:`InputError` naming the folder's setting if there is none."""
    path = available().get(name)
    if path is None:
        raise InputError(f"LoRA {name[:80]!r} is not in the loras folder (put {name[:80]}{SUFFIX} there, or set "
                         f"{ENV})")
    return path


def _weight(text: str, what: str, name: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise InputError(f"LoRA {name[:80]!r}: {what} {str(text)[:40]!r} is not a number") from None
    return value


def parse_ref(text: str) -> LoraRef:
    """``name``, ``name:weight`` or ``name:weight:te_weight`` as a :class:`LoraRef` (checked)."""
    parts = [part.strip() for part in str(text).strip().split(":")]
    if not parts[0] or len(parts) > 3:
        raise InputError(f"{str(text)[:80]!r} is not a LoRA: write NAME, NAME:WEIGHT or NAME:WEIGHT:TEXT_WEIGHT")
    name = parts[0]
    weight = _weight(parts[1], "weight", name) if len(parts) > 1 and parts[1] else 1.0
    te_weight = _weight(parts[2], "text encoder weight", name) if len(parts) > 2 and parts[2] else None
    ref = LoraRef(name, weight, te_weight)
    check(ref)
    return ref


def check(ref: LoraRef) -> None:
    """Raise :class:`InputError` for a weight that is not a number in -MAX..MAX or a name no file can have."""
    if not ref.name or any(ch in ref.name for ch in "<>:/\\\x00") or ref.name in (".", ".."):
        raise InputError(f"{ref.name[:80]!r} is not a LoRA name")
    for what, value in (("weight", ref.weight), ("text encoder weight", ref.te_weight)):
        if value is None:
            continue
        if not math.isfinite(value) or not -MAX_WEIGHT <= value <= MAX_WEIGHT:
            raise InputError(f"LoRA {ref.name[:80]!r}: {what} {value:g} is outside -{MAX_WEIGHT:g}..{MAX_WEIGHT:g}")


def _num(value: float) -> str:
    return f"{value:g}"


def ref_text(ref: LoraRef) -> str:
    """The vocabulary's form of one LoRA: ``name:weight`` (``:te_weight`` when it has its own)."""
    text = f"{ref.name}:{_num(ref.weight)}"
    return text + (f":{_num(ref.te_weight)}" if ref.te_weight is not None else "")


def tag_text(ref: LoraRef) -> str:
    """A1111's prompt tag for one LoRA."""
    return f"<lora:{ref_text(ref)}>"


def split_tags(prompt: str) -> tuple[str, tuple[LoraRef, ...]]:
    """The prompt without its ``<lora:...>`` tags (what is encoded), and the LoRAs the tags name.

    The comma a tag leaves behind goes with it, so ``a, <lora:x>, b`` reads ``a, b``.
    """
    refs = []
    for match in TAG.finditer(prompt or ""):
        name = match.group(1)
        weight = _weight(match.group(2), "weight", name) if match.group(2) else 1.0
        te_weight = _weight(match.group(3), "text encoder weight", name) if match.group(3) else None
        ref = LoraRef(name, weight, te_weight)
        check(ref)
        refs.append(ref)
    if not refs:
        return prompt, ()
    text = TAG.sub("", prompt)
    text = re.sub(r",(?:[ \t]*,)+", ",", text)  # the comma a tag leaves behind
    text = re.sub(r"[ \t]{2,}", " ", text).strip(" \t,")
    return text, tuple(refs)


def merge(first: tuple[LoraRef, ...], then: tuple[LoraRef, ...]) -> tuple[LoraRef, ...]:
    """One LoRA per name: ``then``'s entry replaces ``first``'s of the same name (a tag beats the picker)."""
    merged: dict[str, LoraRef] = {}
    for ref in (*first, *then):
        merged[ref.name] = ref
    return tuple(merged.values())


def addnet_hash(path: str | Path) -> str:
    """sha256 of a safetensors file's tensor data (its JSON header left out), as A1111 and kohya hash LoRAs.

    A header edit (new metadata) keeps the hash, so an image's ``Lora hashes``
    still match the same weights.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) != 8:
            raise InputError(f"LoRA file {Path(path).name[:80]!r} is not a safetensors file (too short)")
        handle.seek(8 + int.from_bytes(head, "little"))
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_hash(path: str | Path) -> str:
    """:func:`addnet_hash`, remembered per path, size and modification time."""
    return remembered_hash(path, "addnet", addnet_hash)


def short_hash(path: str | Path) -> str:
    """The 12 hex digits A1111 writes in ``Lora hashes``."""
    return file_hash(path)[:SHORT_HASH]


def hashes_value(pairs: list[tuple[str, str]]) -> str:
    """``Lora hashes``' value: ``name: hash, name: hash``."""
    return ", ".join(f"{name}: {digest}" for name, digest in pairs)


def parse_hashes(text: str) -> dict[str, str]:
    """``Lora hashes``' value as {name: hash}."""
    found = {}
    for part in str(text or "").split(","):
        name, sep, digest = part.rpartition(":")
        if sep and name.strip():
            found[name.strip()] = digest.strip()
    return found


def missing_note(prompt: str, hashes: dict[str, str] | None = None) -> str:
    """One line naming the LoRAs an image used (tags in its prompt, its ``Lora hashes``) that are not here, or ''.

    A LoRA whose file is here but whose hash differs is named too: it is another version.
    """
    try:
        refs = split_tags(prompt or "")[1]
    except InputError:
        refs = ()
    wanted = dict.fromkeys([ref.name for ref in refs] + list(hashes or {}))
    if not wanted:
        return ""
    here = available()
    missing, other = [], []
    for name in wanted:
        if name not in here:
            missing.append(name)
        elif hashes and hashes.get(name) and not file_hash(here[name]).startswith(hashes[name].lower()):
            other.append(name)
    parts = []
    if missing:
        parts.append("missing here: " + ", ".join(f"LoRA {name}" for name in missing))
    if other:
        parts.append("another version here (hash differs): " + ", ".join(f"LoRA {name}" for name in other))
    return "; ".join(parts)


__all__ = [
    "ENV",
    "LoraRef",
    "MAX_BYTES",
    "MAX_LORAS",
    "MAX_WEIGHT",
    "addnet_hash",
    "available",
    "check",
    "file_hash",
    "find",
    "hashes_value",
    "lora_dir",
    "merge",
    "missing_note",
    "names",
    "parse_hashes",
    "parse_ref",
    "ref_text",
    "short_hash",
    "split_tags",
    "tag_text",
]
