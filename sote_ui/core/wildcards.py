"""Wildcards: ``{red|blue|green} hair`` and ``__name__`` lines from ``wildcards/name.txt``.

Every ``{a|b|c}`` picks one option and every ``__name__`` one line of its
file, each time it occurs. The picks are seeded by the image's seed, so the
same seed gives the same prompt, and each image of a run (seed, seed+1, ...)
gets its own. Options and wildcard lines may themselves hold templates.

Wildcard files are looked up in the user folder (``~/.sote-studio/wildcards``,
or ``$SOTE_STUDIO_HOME/wildcards``), then in the project's shipped
``wildcards/`` folder. One option a line; blank lines and lines starting with
``#`` are skipped. ``\\{``, ``\\}`` and ``\\|`` write the characters themselves.

Pure data and logic: no torch, no gradio.

Example::

    >>> resolve("{red|blue} hair, __eye_color__", seed=7) == resolve("{red|blue} hair, __eye_color__", seed=7)
    True
    >>> resolve("{red|blue} hair", seed=7) in ("red hair", "blue hair")
    True
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar, Union

from .emphasis import check_weights
from .errors import InputError
from .files import user_home

# A GenerationRequest (or any frozen dataclass with the FIELDS and a seed): wildcards work on its text only,
# so this module needs nothing of the request's.
Request = TypeVar("Request")

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "wildcards"
MAX_DEPTH = 10  # wildcard files referring to wildcard files, this deep at most
MAX_FILE_BYTES = 1024 * 1024
FIELDS = ("prompt", "negative_prompt")  # the request fields that may hold templates

_NAME = r"[A-Za-z0-9][A-Za-z0-9_\-/]*?"
_WILDCARD = re.compile(rf"__({_NAME})__")


def user_dir() -> Path:
    """The user's wildcard folder (next to the presets folder)."""
    return user_home() / "wildcards"


# A parsed template: text pieces, wildcard references and choices (lists of alternatives).
@dataclass(frozen=True)
class Ref:
    name: str


@dataclass(frozen=True)
class Choice:
    options: tuple["Template", ...]


Template = tuple[Union[str, Ref, Choice], ...]


def has_template(text: str) -> bool:
    """Whether ``text`` holds any wildcard syntax (cheap; no parsing)."""
    return "{" in text or "}" in text or bool(_WILDCARD.search(text))


def parse(text: str, where: str = "prompt") -> Template:
    """Parse ``text``; raise InputError naming ``where`` and the position of a bad brace."""
    position = 0
    stack: list[tuple[int, list[Template], list]] = []  # (where the brace opened, options so far, current)
    current: list = []

    def add_text(piece: str) -> None:
        for index, part in enumerate(_WILDCARD.split(piece)):
            if not part:
                continue
            if index % 2:
                current.append(Ref(part))
            elif current and isinstance(current[-1], str):
                current[-1] += part
            else:
                current.append(part)

    buffer = []
    while position < len(text):
        char = text[position]
        if char == "\\" and position + 1 < len(text) and text[position + 1] in "{}|":
            buffer.append("\x00" + text[position + 1])  # escaped: never a wildcard name or syntax
            position += 2
            continue
        if char in "{|}":
            add_text("".join(buffer))
            buffer = []
            if char == "{":
                stack.append((position, [], current))
                current = []
            elif not stack:
                if char == "|":
                    buffer.append("|")  # a bar outside braces is plain text
                else:
                    raise InputError(f"{where}: '}}' at character {position + 1} closes no '{{'")
            elif char == "|":
                stack[-1][1].append(tuple(current))
                current = []
            else:
                opened, options, outer = stack.pop()
                options.append(tuple(current))
                current = outer
                current.append(Choice(tuple(options)))
        else:
            buffer.append(char)
        position += 1
    add_text("".join(buffer))
    if stack:
        raise InputError(f"{where}: '{{' at character {stack[-1][0] + 1} is never closed with '}}'")
    return _unescape(tuple(current))


def _unescape(template: Template) -> Template:
    out = []
    for part in template:
        if isinstance(part, str):
            out.append(re.sub(r"\x00(.)", r"\1", part))
        elif isinstance(part, Choice):
            out.append(Choice(tuple(_unescape(option) for option in part.options)))
        else:
            out.append(part)
    return tuple(out)


class WildcardStore:
    """Wildcard files from the user folder, then the shipped folder; files re-read when they change."""

    def __init__(self, folders: list[Path] | None = None):
        self._folders = folders
        self._cache: dict[Path, tuple[float, list[str]]] = {}

    @property
    def folders(self) -> list[Path]:
        return self._folders if self._folders is not None else [user_dir(), SHIPPED_DIR]

    def path(self, name: str) -> Path | None:
        if ".." in name.split("/"):
            return None
        for folder in self.folders:
            candidate = folder / f"{name}.txt"
            if candidate.is_file():
                return candidate
        return None

    def names(self) -> list[str]:
        """Every wildcard name available, sorted."""
        found = set()
        for folder in self.folders:
            if folder.is_dir():
                found |= {p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.txt")}
        return sorted(found)

    def lines(self, name: str) -> list[str]:
        """The options of ``__name__``; raise InputError naming it when missing or empty."""
        path = self.path(name)
        if path is None:
            where = " or ".join(str(folder) for folder in self.folders)
            raise InputError(f"wildcard __{name}__ not found: no {name}.txt in {where}")
        stat = path.stat()
        cached = self._cache.get(path)
        if cached and cached[0] == stat.st_mtime:
            return cached[1]
        if stat.st_size > MAX_FILE_BYTES:
            raise InputError(f"wildcard __{name}__: {path.name} is larger than {MAX_FILE_BYTES // 1024} KB")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"wildcard __{name}__: {path.name} can't be read ({exc})") from None
        lines = [line.strip() for line in text.splitlines()]
        lines = [line for line in lines if line and not line.startswith("#")]
        if not lines:
            raise InputError(f"wildcard __{name}__: {path} has no options (one a line)")
        self._cache[path] = (stat.st_mtime, lines)
        return lines

    # 1. Checking a template up front ---------------------------------------------------

    def check(self, text: str, where: str = "prompt") -> None:
        """Raise InputError if ``text`` is malformed or names a missing, empty or self-referring wildcard."""
        if has_template(text):
            self._check(parse(text, where), where, ())

    def _check(self, template: Template, where: str, chain: tuple[str, ...]) -> None:
        for part in template:
            if isinstance(part, Choice):
                for option in part.options:
                    self._check(option, where, chain)
            elif isinstance(part, Ref):
                if part.name in chain:
                    raise InputError(f"wildcard __{part.name}__ refers to itself (through "
                                     + " -> ".join(f"__{n}__" for n in chain + (part.name,)) + ")")
                if len(chain) >= MAX_DEPTH:
                    raise InputError(f"wildcard __{part.name}__: wildcards nest more than {MAX_DEPTH} deep")
                for line in self.lines(part.name):
                    self._check(parse(line, f"wildcard __{part.name}__"), where, chain + (part.name,))

    # 2. Resolving it for one image -------------------------------------------------------

    def resolve(self, text: str, seed: int, where: str = "prompt") -> str:
        """``text`` with every choice and wildcard picked, seeded by ``seed``."""
        if not has_template(text):
            return text
        self.check(text, where)
        rng = random.Random(f"{where}:{seed}")
        return self._resolve(parse(text, where), rng, 0)

    def _resolve(self, template: Template, rng: random.Random, depth: int) -> str:
        out = []
        for part in template:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, Choice):
                out.append(self._resolve(rng.choice(part.options), rng, depth))
            else:
                line = rng.choice(self.lines(part.name))
                out.append(self._resolve(parse(line, f"wildcard __{part.name}__"), rng, depth + 1))
        return "".join(out)

    def resolve_request(self, request: Request) -> Request:
        """The request with its prompt and negative prompt resolved for its own seed."""
        if not any(has_template(getattr(request, key)) for key in FIELDS):
            return request
        if request.seed < 0:
            raise InputError("wildcards need a concrete seed; pick one before resolving")
        resolved = {key: self.resolve(getattr(request, key), request.seed, key) for key in FIELDS}
        for key, text in resolved.items():
            try:  # a wildcard line may bring a weight the template itself did not have
                check_weights(text, f"the {key.replace('_', ' ')} (wildcards picked for seed {request.seed})")
            except ValueError as exc:
                raise InputError(str(exc)) from None
        return replace(request, **resolved)


_default = WildcardStore()


def default_store() -> WildcardStore:
    return _default


def resolve(text: str, seed: int, where: str = "prompt") -> str:
    """Resolve ``text`` with the default folders (user, then shipped)."""
    return _default.resolve(text, seed, where)


def resolve_request(request: Request) -> Request:
    """One image's request with its templates resolved from its seed (used by the engine for every job)."""
    return _default.resolve_request(request)


def check_request(request: Any) -> None:
    """Raise InputError before any work if a template in ``request`` is malformed or names a missing wildcard."""
    for key in FIELDS:
        _default.check(getattr(request, key), key)


__all__ = ["SHIPPED_DIR", "WildcardStore", "check_request", "default_store", "has_template", "parse", "resolve",
           "resolve_request", "user_dir"]
