"""Presets: one flat JSON file each, keys from the request vocabulary.

Shipped presets live in the project's ``presets/`` folder and are read-only;
user presets are saved to and deleted from a separate folder. A malformed
file is reported and skipped; the others still load. Saving is atomic and
never replaces a file unless asked to.

Pure data and logic: no torch, no gradio.

Example::

    store = PresetStore(SHIPPED_DIR, Path("~/.sote-studio/presets").expanduser())
    request = store.request("card-recommended", {"prompt": "1girl, solo"})
    store.save("my-look", request)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError
from .files import TMP_SUFFIX, atomic_write, user_home
from .request import DEFAULT_LIMITS, REQUEST_KEYS, GenerationRequest, Limits, build_request

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "presets"
CURRENT = "(current settings)"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _\-.]{0,63}$")
_META_KEYS = {"description"}
MAX_PRESET_BYTES = 64 * 1024
MAX_PRESET_DEPTH = 16  # a preset is flat; this leaves room, and keeps the JSON parser out of deep recursion


_HOME = object()  # PresetStore's default user folder: $SOTE_STUDIO_HOME/presets, read when the store is made


def default_user_dir() -> Path:
    """Where user presets are saved: ``$SOTE_STUDIO_HOME/presets``."""
    return user_home() / "presets"


def nesting_depth(text: str) -> int:
    """How deeply ``[`` and ``{`` nest in JSON ``text`` (brackets inside strings don't count); one pass."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


@dataclass(frozen=True)
class Preset:
    name: str
    values: dict[str, Any]
    path: Path
    shipped: bool
    description: str = ""


def check_name(name: str) -> str:
    """Return a safe preset name or raise InputError: no separators, no '..', no hidden files."""
    name = (name or "").strip()
    if not name:
        raise InputError("the preset needs a name")
    if name == CURRENT or not _NAME.match(name) or ".." in name or name.endswith("."):
        raise InputError(
            f"preset name {name[:40]!r} is not allowed: use up to 64 letters, digits, spaces, '-', '_' or '.', "
            "starting with a letter or digit"
        )
    return name


def read_preset(path: Path, shipped: bool, limits: Limits = DEFAULT_LIMITS) -> Preset:
    """Read and validate one preset file; raise InputError naming the file."""
    try:
        if path.stat().st_size > MAX_PRESET_BYTES:
            raise InputError(f"preset {path.name}: larger than {MAX_PRESET_BYTES // 1024} KB")
        text = path.read_text(encoding="utf-8")
        if nesting_depth(text) > MAX_PRESET_DEPTH:
            raise InputError(f"preset {path.name}: nested more than {MAX_PRESET_DEPTH} levels deep; a preset is "
                             "one flat JSON object")
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InputError(f"preset {path.name}: not valid JSON ({str(exc).splitlines()[0][:80]})") from None
    if not isinstance(data, dict):
        raise InputError(f"preset {path.name}: must be a JSON object of settings")
    description = data.pop("description", "")
    if not isinstance(description, str):
        raise InputError(f"preset {path.name}: description must be text")
    try:
        build_request(data, limits=limits)
    except InputError as exc:
        raise InputError(f"preset {path.name}: {exc}") from None
    return Preset(path.stem, data, path, shipped, description)


class PresetStore:
    """Shipped presets (read-only) plus a user folder (save, delete)."""

    def __init__(self, shipped_dir: Path | None = SHIPPED_DIR, user_dir: Path | None | object = _HOME,
                 limits: Limits = DEFAULT_LIMITS):
        self.shipped_dir = Path(shipped_dir) if shipped_dir else None
        self.user_dir = default_user_dir() if user_dir is _HOME else Path(user_dir) if user_dir else None
        self.limits = limits

    def load(self) -> tuple[dict[str, Preset], list[str]]:
        """All presets by name (user presets after shipped ones) and the errors of skipped files."""
        presets: dict[str, Preset] = {}
        errors: list[str] = []
        for folder, shipped in ((self.shipped_dir, True), (self.user_dir, False)):
            if folder is None or not folder.is_dir():
                continue
            for path in sorted(folder.glob("*.json")):
                if path.name.startswith("."):
                    continue
                try:
                    preset = read_preset(path, shipped, self.limits)
                except InputError as exc:
                    errors.append(str(exc))
                    continue
                if preset.name in presets:
                    errors.append(f"preset {path.name}: a shipped preset has the same name; skipped")
                    continue
                presets[preset.name] = preset
        return presets, errors

    def clean_orphans(self) -> list[str]:
        """Remove temporary files an interrupted save left in the user folder (``.NAME.json.*.tmp``)."""
        removed: list[str] = []
        if self.user_dir is None or not self.user_dir.is_dir():
            return removed
        for path in self.user_dir.glob(".*.json.*" + TMP_SUFFIX):
            try:
                path.unlink()
                removed.append(path.name)
            except OSError:
                pass
        return sorted(removed)

    def names(self) -> list[str]:
        return list(self.load()[0])

    def get(self, name: str) -> Preset:
        presets, errors = self.load()
        if name not in presets:
            broken = [e for e in errors if e.startswith(f"preset {name}.json:")]
            if broken:
                raise InputError(broken[0])
            known = ", ".join(presets) or "none"
            raise InputError(f"unknown preset {name[:64]!r}; known presets: {known}")
        return presets[name]

    def request(self, name: str, overrides: dict[str, Any] | None = None) -> GenerationRequest:
        """The preset's settings over the defaults, then ``overrides`` (None values ignored)."""
        base = build_request(self.get(name).values, limits=self.limits)
        return build_request(overrides or {}, base=base, limits=self.limits)

    def save(self, name: str, values: GenerationRequest | dict[str, Any], *, overwrite: bool = False,
             description: str = "") -> Preset:
        """Write a user preset atomically. Refuses shipped names and, unless
        ``overwrite``, existing files."""
        name = check_name(name)
        if self.user_dir is None:
            raise InputError("saving presets is turned off here")
        if self.shipped_dir is not None and (self.shipped_dir / f"{name}.json").exists():
            raise InputError(f"{name!r} is a shipped preset; save under another name")
        data = values.to_dict() if isinstance(values, GenerationRequest) else dict(values)
        data = {k: v for k, v in data.items() if k in REQUEST_KEYS and v != []}  # no empty reference lists
        build_request(data, limits=self.limits)
        if description:
            data = {"description": description, **data}
        self.user_dir.mkdir(parents=True, exist_ok=True)
        path = self.user_dir / f"{name}.json"
        if path.exists() and not overwrite:
            raise InputError(f"a preset named {name!r} exists; tick overwrite or pick another name")
        atomic_write(path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
                     overwrite=overwrite)
        return read_preset(path, shipped=False)

    def delete(self, name: str) -> None:
        name = check_name(name)
        if self.shipped_dir is not None and (self.shipped_dir / f"{name}.json").exists():
            raise InputError(f"{name!r} is a shipped preset and can't be deleted")
        path = self.user_dir / f"{name}.json" if self.user_dir else None
        if path is None or not path.is_file():
            raise InputError(f"no user preset named {name!r}")
        path.unlink()
