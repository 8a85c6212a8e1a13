"""Wildcards: ``{red|blue|green} hair`` and ``__name__`` lines from ``wildcards/name.txt``.

Every ``{a|b|c}`` picks one option and every ``__name__`` one line of its
file, each time it occurs. The picks are seeded by the image's seed, so the
same seed gives the same prompt, and each image of a run (seed, seed+1, ...)
gets its own. Options and wildcard lines may themselves hold templates.

Wildcard files are looked up in the user folder (``~/.sote-studio/wildcards``,
or ``$SOTE_STUDIO_HOME/wildcards``), then in the project's shipped
``wildcards/`` folder. One option a line; blank lines and lines starting with
``#`` are skipped. ``\\{``, ``\\}`` and ``\\|`` write the characters themselves.
A name holds letters of any language, digits, spaces, ``.``, ``-``, ``/`` and
single ``_`` (``__my colors__``, ``__v1.2__``).

A request's templates are checked once, when it is validated: each file is
read, parsed and measured once however many lines lead to it, and a template
that nests too deep, loops, could grow past :data:`MAX_PIECES` or could leave
the prompt empty is refused. Each image then walks only its own picks.

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
MAX_NESTING = 20  # braces inside braces, this deep at most in one template
MAX_PIECES = 10_000  # pieces of text (and choices) one prompt may grow to, whatever is picked
MAX_CHARS = 100_000  # characters one prompt may grow to, whatever is picked
MAX_FILE_BYTES = 1024 * 1024
FIELDS = ("prompt", "negative_prompt")  # the request fields that may hold templates

# A name: letters and digits of any language, with spaces, '.', '-', '/' and single '_' between them. It
# starts and ends with a letter or digit, so "o__o" or "a__ b__" stay text.
_NAME_CHARS = r"(?:[^\W_]|[ .\-/]|_(?!_))"
_NAME = rf"[^\W_](?:{_NAME_CHARS}*?[^\W_])?"
_WILDCARD = re.compile(rf"__({_NAME})__")
_VALID_NAME = re.compile(rf"{_NAME}\Z")
_TYPED_NAME = re.compile(rf"__({_NAME_CHARS}*)\Z")


def user_dir() -> Path:
    """The user's wildcard folder (next to the presets folder)."""
    return user_home() / "wildcards"


def typed_name(text: str) -> str | None:
    """The start of a wildcard name being typed at the end of ``text`` (``"1girl, __ha"`` -> ``"ha"``), or None."""
    found = _TYPED_NAME.search(text)
    return found.group(1) if found else None


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
                # Everything that walks a template recurses once a brace: bounded here, not by Python's stack.
                if len(stack) >= MAX_NESTING:
                    raise InputError(f"{where}: braces nest more than {MAX_NESTING} deep at character {position + 1}")
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


@dataclass(frozen=True)
class Growth:
    """The most a template can grow to, whatever is picked: pieces, characters, files deep; and if it can be blank."""

    pieces: int = 0
    chars: int = 0
    depth: int = 0
    can_be_blank: bool = True

    def then(self, other: "Growth") -> "Growth":
        """This followed by ``other`` (capped just past the limits, so the numbers stay small)."""
        return Growth(min(self.pieces + other.pieces, MAX_PIECES + 1), min(self.chars + other.chars, MAX_CHARS + 1),
                      max(self.depth, other.depth), self.can_be_blank and other.can_be_blank)

    def widest(self, other: "Growth") -> "Growth":
        """The larger of two alternatives."""
        return Growth(max(self.pieces, other.pieces), max(self.chars, other.chars), max(self.depth, other.depth),
                      self.can_be_blank or other.can_be_blank)


def _blank(text: str) -> bool:
    return not text.replace(",", "").strip()  # commas and spaces alone make no tag


class WildcardStore:
    """Wildcard files from the user folder, then the shipped folder; files re-read when they change.

    Each file is read and parsed once per change; checking a template measures
    each file it reaches once, however many paths lead to it.
    """

    def __init__(self, folders: list[Path] | None = None):
        self._folders = folders
        # path -> (mtime in ns, size, its lines, each line parsed or the InputError parsing it raised)
        self._cache: dict[Path, tuple[int, int, list[str], list[Template | InputError]]] = {}

    @property
    def folders(self) -> list[Path]:
        return self._folders if self._folders is not None else [user_dir(), SHIPPED_DIR]

    def path(self, name: str) -> Path | None:
        if not _VALID_NAME.match(name) or any(part in ("", ".", "..") for part in name.split("/")):
            return None
        for folder in self.folders:
            candidate = folder / f"{name}.txt"
            if candidate.is_file():
                return candidate
        return None

    def names(self) -> list[str]:
        """Every wildcard name available (only those a prompt can name), sorted."""
        found = set()
        for folder in self.folders:
            if folder.is_dir():
                found |= {p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.txt")}
        return sorted(name for name in found if _VALID_NAME.match(name))

    def _load(self, name: str) -> tuple[list[str], list[Template | InputError]]:
        path = self.path(name)
        if path is None:
            raise InputError(f"wildcard __{name}__ not found: no {name}.txt in your wildcards folder or the shipped ones")
        stat = path.stat()
        cached = self._cache.get(path)
        if cached and cached[:2] == (stat.st_mtime_ns, stat.st_size):
            return cached[2], cached[3]
        if stat.st_size > MAX_FILE_BYTES:
            raise InputError(f"wildcard __{name}__: {name}.txt is larger than {MAX_FILE_BYTES // 1024} KB")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise InputError(f"wildcard __{name}__: {name}.txt can't be read (it is not UTF-8 text)") from None
        except OSError as exc:  # its strerror alone: the message never shows a server path
            raise InputError(f"wildcard __{name}__: {name}.txt can't be read ({exc.strerror})") from None
        numbered = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)]
        numbered = [(number, line) for number, line in numbered if line and not line.startswith("#")]
        if not numbered:
            raise InputError(f"wildcard __{name}__: {name}.txt has no options (one a line)")
        lines = [line for _, line in numbered]
        templates: list[Template | InputError] = []
        for number, line in numbered:
            try:
                templates.append(parse(line, f"wildcard __{name}__ line {number}"))
            except InputError as exc:  # reported when the file is used, not when it is listed
                templates.append(exc)
        self._cache[path] = (stat.st_mtime_ns, stat.st_size, lines, templates)
        return lines, templates

    def lines(self, name: str) -> list[str]:
        """The options of ``__name__``; raise InputError naming it when missing or empty."""
        return self._load(name)[0]

    def templates(self, name: str) -> list[Template]:
        """The options of ``__name__``, parsed; raise InputError for a missing or empty file or a bad line."""
        parsed = self._load(name)[1]
        for item in parsed:
            if isinstance(item, InputError):
                raise item
        return parsed  # type: ignore[return-value]

    # 1. Checking a template up front ---------------------------------------------------

    def check(self, text: str, where: str = "prompt") -> Growth:
        """How far ``text`` can grow; raise InputError if it is malformed, names a missing, empty or
        self-referring wildcard, nests too deep or can grow past :data:`MAX_PIECES` / :data:`MAX_CHARS`."""
        if not has_template(text):
            return Growth(1, len(text), 0, _blank(text))
        grown, measured = Growth(), {}
        for part in parse(text, where):
            grown = grown.then(self._measure((part,), [], measured))
            if grown.pieces > MAX_PIECES or grown.chars > MAX_CHARS:
                what = f"__{part.name}__" if isinstance(part, Ref) else "the wildcards"
                limit = f"{MAX_PIECES:,} pieces" if grown.pieces > MAX_PIECES else f"{MAX_CHARS:,} characters"
                raise InputError(f"{where}: {what} can grow to more than {limit} of text; "
                                 "name fewer wildcards a line in its files")
        return grown

    def _measure(self, template: Template, chain: list[str], measured: dict[str, Growth]) -> Growth:
        grown = Growth()
        for part in template:
            if isinstance(part, str):
                grown = grown.then(Growth(1, len(part), 0, _blank(part)))
            elif isinstance(part, Choice):
                widest = None
                for option in part.options:
                    one = self._measure(option, chain, measured)
                    widest = one if widest is None else widest.widest(one)
                grown = grown.then(Growth(1).then(widest or Growth()))
            else:
                grown = grown.then(Growth(1).then(self._measure_file(part.name, chain, measured)))
        return grown

    def _measure_file(self, name: str, chain: list[str], measured: dict[str, Growth]) -> Growth:
        """One file's growth, measured once per check however many paths reach it (``measured``)."""
        if name in chain:
            raise InputError(f"wildcard __{name}__ refers to itself (through "
                             + " -> ".join(f"__{n}__" for n in chain[chain.index(name):] + [name]) + ")")
        known = measured.get(name)
        depth = len(chain) + (known.depth if known is not None else 1)  # files deep, this one's chain included
        if depth > MAX_DEPTH:
            raise InputError(f"wildcard __{name}__: wildcards nest more than {MAX_DEPTH} deep")
        if known is not None:
            return known
        chain.append(name)
        try:
            widest = None
            for template in self.templates(name):
                one = self._measure(template, chain, measured)
                widest = one if widest is None else widest.widest(one)
        finally:
            chain.pop()
        grown = replace(widest, depth=widest.depth + 1)
        measured[name] = grown
        return grown

    # 2. Resolving it for one image -------------------------------------------------------

    def resolve(self, text: str, seed: int, where: str = "prompt") -> str:
        """``text`` with every choice and wildcard picked, seeded by ``seed``.

        Only the picked lines are walked, so one image costs what its prompt
        holds; the full check (:meth:`check`) runs once, when the request is
        validated. A file changed since then can't make it run away: the walk
        stops at the same depth and size limits.
        """
        if not has_template(text):
            return text
        rng = random.Random(f"{where}:{seed}")
        out: list[str] = []
        self._resolve(parse(text, where), rng, [], out, [0, 0])
        return "".join(out)

    def _resolve(self, template: Template, rng: random.Random, chain: list[str], out: list[str],
                 pieces: list[int]) -> None:  # pieces: [parts walked, characters written] so far
        for part in template:
            pieces[0] += 1
            pieces[1] += len(part) if isinstance(part, str) else 0
            if pieces[0] > MAX_PIECES or pieces[1] > MAX_CHARS:
                raise InputError(f"the wildcards grew past {MAX_PIECES:,} pieces or {MAX_CHARS:,} characters "
                                 "of text; name fewer wildcards a line in their files")
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, Choice):
                self._resolve(rng.choice(part.options), rng, chain, out, pieces)
            else:
                if part.name in chain or len(chain) >= MAX_DEPTH:
                    self._measure_file(part.name, chain, {})  # raises the check's own message
                chain.append(part.name)
                self._resolve(rng.choice(self.templates(part.name)), rng, chain, out, pieces)
                chain.pop()

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
        request = replace(request, **resolved)
        composed = getattr(request, "composed_prompt", None)
        if composed is not None and not composed().strip():  # a file changed since the check
            raise InputError(f"the prompt came out empty for seed {request.seed}: give every choice a tag")
        return request

    def check_request(self, request: Any) -> None:
        """Raise InputError if a template of ``request`` is bad (see :meth:`check`) or its prompt can come
        out empty: some pick leaves no tag, and no picked tag (quality, date, ...) fills in."""
        growth = {key: self.check(getattr(request, key), key) for key in FIELDS}
        if growth["prompt"].can_be_blank and has_template(request.prompt):
            if not replace(request, prompt="").composed_prompt().strip():
                raise InputError("the prompt can come out empty: a choice or wildcard line may pick nothing "
                                 "and no tags are picked; give each choice a tag or pick a tag")


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
    """Raise InputError before any work if a template in ``request`` is bad (malformed, a missing wildcard,
    too deep or too big) or its prompt can come out empty."""
    _default.check_request(request)


__all__ = ["SHIPPED_DIR", "Growth", "WildcardStore", "check_request", "default_store", "has_template", "parse",
           "resolve", "resolve_request", "typed_name", "user_dir"]
