"""The prompt fixer: what in a prompt the model was not trained with, and a fix for each.

SoteDiffusion's captions came from SmilingWolf's wd-swinv2-tagger-v3, run with
``--remove_underscore`` (the model card), plus the card's own aesthetic, quality, date, rating and
source tags. That tagger's card: "Supports ratings, characters and general tags" (so no meta or
artist tags) and "Tags with less than 600 images were filtered out". Against that vocabulary (the shipped Danbooru
list, :mod:`.tagindex`, and :mod:`.tags`) the fixer finds, per tag of a prompt:

- ``unknown``: not a Danbooru tag; the fix is the nearest known one (a typo, the same words
  reordered, a missing space), when there is one;
- ``spelling``: a known tag written with underscores or unescaped brackets;
- ``alias``: a Danbooru alias (``longhair``), fixed to the tag's own name;
- ``untrained``: words the captions never held: SD quality words (``masterpiece``, ``8k``,
  ``ultra detailed``), Danbooru meta tags (``highres``, ``absurdres``), other rating and date
  spellings; mapped to the card's tag where it has one, dropped otherwise;
- ``duplicate``: a tag already earlier in the prompt (any spelling), dropped;
- ``past_chunks``: tags past the third 75-token chunk (with the encoder's chunk counter), dropped;
- ``lora``: ``<lora:name>`` naming no LoRA of the loras folder, and ``<lyco:...>`` and kin, which this app
  does not load, dropped (a LoRA that is here is left alone).

Fixes replace a tag's text inside its emphasis, so ``(lnog_hair:1.2)`` becomes ``(long hair:1.2)``.
Pure data and logic: no torch, no gradio.

Example::

    >>> fix_all("masterpiece, 1girl, lnog_hair, 1girl")
    'best quality, 1girl, long hair'
    >>> [f.kind for f in analyze("masterpiece, 1girl, lnog_hair, 1girl")]
    ['untrained', 'unknown', 'duplicate']
"""

from __future__ import annotations

import bisect
import re
import threading
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Callable, Iterable

from . import loras as lora_files
from . import tagindex, tags
from .suggestions import tags_past_trained

ChunkCounter = Callable[[str], "list[int] | None"]

POPULAR = 600  # the tagger only knows tags of at least 600 posts: typos are matched against those
META = 5  # Danbooru's meta category (highres, absurdres, commentary): the tagger writes none of them
MAX_OPTIONS = 3
ORDER = ("lora", "untrained", "alias", "spelling", "unknown", "duplicate", "past_chunks")

# Quality words of other models, mapped to the card's own tag ("" drops the word).
_QUALITY_WORDS = {
    "masterpiece": "best quality",
    "amazing quality": "best quality",
    "good quality": "great quality",
    "score 9": "best quality",
    "very awa": "very aesthetic",
    "worst aesthetic": "very displeasing",
}
# Stable Diffusion's photo and detail words: no caption of the dataset holds them.
_SD_WORDS = {
    "4k", "8k", "16k", "uhd", "hdr", "8k uhd", "8k wallpaper", "4k wallpaper", "unity 8k wallpaper",
    "extremely detailed cg unity 8k wallpaper", "extremely detailed cg", "ultra detailed", "ultra-detailed",
    "ultra high res", "ultra high resolution", "best resolution", "extremely detailed", "highly detailed",
    "hyper detailed", "hyperdetailed", "high detail", "high details", "intricate details", "intricate detail",
    "sharp focus", "high res", "detailed", "very detailed", "beautiful detailed eyes", "trending on artstation",
    "octane render", "unreal engine", "raw photo", "dslr", "award winning", "award-winning", "best aesthetic",
    "score 8 up", "score 7 up", "score 6 up", "score 5 up", "score 4 up", "score 8", "score 7", "score 6",
    "source anime", "newest quality",
}
_RATINGS = {"explicit": "explicit nsfw", "questionable": "nsfw", "safe": "general", "sensitive": "sensitive",
            "general": "general", "nsfw": "nsfw"}
_YEAR = re.compile(r"(?:year )?(\d{4})\Z")

_LORA = re.compile(r"<\s*(?:lora|lyco|hypernet|embedding)\s*:[^>]*>", re.IGNORECASE)
_WEIGHT_CLOSER = r":\s*[+-]?(?:\d+\.?\d*|\.\d+)\s*\)"
_CLOSERS = re.compile(rf"{_WEIGHT_CLOSER}|(?<!\\)[)\]]")
_TRAILING = re.compile(rf"(?:\s*(?:{_WEIGHT_CLOSER}|(?<!\\)[)\]]))+\s*\Z")
_LEADING = re.compile(r"\A[\s(\[]*")
_SEPARATOR = re.compile(r"[,\n]")
_WILDCARD = re.compile(r"[{}|]|__[^\W_]")
_BREAK = re.compile(r"\bBREAK\b")
_BRACKET = re.compile(r"(?<!\\)[()\[\]:]")


@dataclass(frozen=True)
class Finding:
    """One thing to fix in a prompt, and its fix.

    ``piece`` numbers the tag among the prompt's comma- and line-separated
    pieces; ``fix`` is the tag's new text (``""`` drops it, ``None``: nothing
    to apply); ``options`` are the nearest known tags, best first.
    """

    kind: str
    tag: str
    piece: int
    fix: str | None
    message: str
    options: tuple[str, ...] = field(default=())

    @property
    def action(self) -> str:
        return "none" if self.fix is None else "drop" if self.fix == "" else "replace"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["options"] = list(self.options)
        data["action"] = self.action
        return data


@dataclass
class _Piece:
    prefix: str  # leading space and emphasis openers
    core: str  # the tag as written
    suffix: str  # emphasis closers ("(tag:1.2)" gives ":1.2)") and trailing space
    sep: str  # the separator after it: ",", "\n" or "" at the end


def _pieces(text: str) -> list[_Piece]:
    pieces = []
    start = 0
    for match in [*_SEPARATOR.finditer(text), None]:
        end = match.start() if match else len(text)
        part = text[start:end]
        lead = _LEADING.match(part).group(0)
        rest = part[len(lead):]
        trail = _TRAILING.search(rest)
        core, suffix = (rest[:trail.start()], rest[trail.start():]) if trail else (rest, "")
        # "kanzaki_ranko_(cosplay)": a closer the core opened itself belongs to the tag, not to emphasis
        while suffix and _balance(core) > 0 and suffix.lstrip()[:1] == ")":
            head = suffix.index(")") + 1
            core, suffix = core + suffix[:head], suffix[head:]
        pieces.append(_Piece(lead, core, suffix, match.group(0) if match else ""))
        start = end + 1
    return pieces


def _balance(text: str) -> int:
    return len(re.findall(r"(?<!\\)\(", text)) - len(re.findall(r"(?<!\\)\)", text))


def _join(pieces: Iterable[_Piece]) -> str:
    return "".join(p.prefix + p.core + p.suffix + p.sep for p in pieces)


# 1. The vocabulary -----------------------------------------------------------------------------


class _Vocabulary:
    """Exact lookups on the whole tag list; near matches among the tags the tagger knows."""

    def __init__(self, index: tagindex.TagIndex):
        self.index = index
        self.words: dict[str, int] = {}  # the words sorted: "hair long" finds long hair
        self.squashed: dict[str, int] = {}  # without spaces: "longhair" finds long hair
        self.deletes: dict[str, int | tuple[int, ...]] = {}  # each key with one letter left out, and itself
        for number, name in enumerate(index.names):
            if index.counts[number] < POPULAR or index.categories[number] == META:
                continue
            key = tagindex.normalize(name)
            self.words.setdefault(" ".join(sorted(key.split())), number)
            self.squashed.setdefault(key.replace(" ", ""), number)
            for variant in {key} | {key[:i] + key[i + 1:] for i in range(len(key))}:
                old = self.deletes.get(variant)
                self.deletes[variant] = number if old is None else (*((old,) if isinstance(old, int) else old),
                                                                    number)

    def exact(self, key: str) -> tuple[int, bool] | None:
        """``(tag number, is an alias)`` for a key, names before aliases."""
        keys = self.index.keys
        position = bisect.bisect_left(keys, key)
        found = None
        while position < len(keys) and keys[position] == key:
            number, alias = self.index.entry_tag[position], bool(self.index.entry_alias[position])
            if not alias:
                return number, False
            if found is None or self.index.counts[number] > self.index.counts[found[0]]:
                found = (number, True)
            position += 1
        return found

    def is_prefix(self, key: str) -> bool:
        """Whether some tag starts with ``key`` (the tag still being typed)."""
        keys = self.index.keys
        position = bisect.bisect_left(keys, key)
        return (position < len(keys) and keys[position].startswith(key)) or any(
            t.startswith(key) for t in tags.ALL_KNOWN_TAGS)

    def nearest(self, key: str) -> list[int]:
        """Known tags close to an unknown ``key``, best first: reordered words, a missing space, then typos."""
        found: list[int] = []
        for number in (self.words.get(" ".join(sorted(key.split()))), self.squashed.get(key.replace(" ", ""))):
            if number is not None and number not in found:
                found.append(number)
        if len(key) < 4:  # two letters off a three-letter word is another word, not a typo
            return found
        limit = 1 if len(key) < 7 else 2
        candidates: set[int] = set()
        for variant in {key} | {key[:i] + key[i + 1:] for i in range(len(key))}:
            hit = self.deletes.get(variant)
            if hit is not None:
                candidates.update((hit,) if isinstance(hit, int) else hit)
        scored = []
        for number in candidates:
            distance = _distance(key, tagindex.normalize(self.index.names[number]), limit)
            if distance <= limit:
                scored.append((distance, -self.index.counts[number], number))
        found += [number for *_, number in sorted(scored) if number not in found]
        if not found:  # a tag left unfinished: the most used one it starts
            found += [n for n in self.completions(key) if n not in found]
        return found[:MAX_OPTIONS]

    def completions(self, key: str) -> list[int]:
        keys = self.index.keys
        start = bisect.bisect_left(keys, key)
        end = bisect.bisect_left(keys, key + "\U0010ffff", start)
        if end - start > 500:  # a short start matches too much to guess from
            return []
        # only a few letters short: "text" is a word of its own, not "text focus" cut off
        numbers = {self.index.entry_tag[p] for p in range(start, end) if len(keys[p]) - len(key) <= 3}
        return sorted(numbers, key=lambda n: -self.index.counts[n])[:1]


def _distance(a: str, b: str, limit: int) -> int:
    """Edit distance with swapped neighbours counting one (optimal string alignment), capped at limit + 1."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    before, row = None, list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            current[j] = min(row[j] + 1, current[j - 1] + 1, row[j - 1] + (ca != cb))
            if before is not None and i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], before[j - 2] + 1)
        if min(current) > limit:
            return limit + 1
        before, row = row, current
    return row[-1]


_vocabulary: _Vocabulary | None = None
_lock = threading.Lock()


def vocabulary() -> _Vocabulary:
    """The fixer's lookups over the shipped tag list, built on first use (a second or two) and kept."""
    global _vocabulary
    if _vocabulary is None:
        with _lock:
            if _vocabulary is None:
                _vocabulary = _Vocabulary(tagindex.index())
    return _vocabulary


def ready() -> bool:
    """Whether the lookups are built (so a check now does not wait for them)."""
    return _vocabulary is not None


def warm_up() -> None:
    """Build the lookups in the background so the first check finds them ready."""
    threading.Thread(target=vocabulary, name="sote-fixer-vocabulary", daemon=True).start()


# 2. One tag --------------------------------------------------------------------------------------


def _untrained(key: str) -> tuple[str, str] | None:
    """``(replacement, why)`` for a word the captions never held ("" drops it)."""
    if key in _QUALITY_WORDS:
        return _QUALITY_WORDS[key], "its quality tag is"
    if key in _SD_WORDS:
        return "", "a quality word of other models, not one this model was trained with"
    rating = re.sub(r"^rating[: ]\s*", "", key) if key.startswith("rating") else None
    if rating in _RATINGS or key in ("explicit", "questionable"):
        return _RATINGS[rating or key], "its rating tag is"
    year = _YEAR.match(key)
    if year:
        for date, years in tags.DATE.items():
            first, last = (int(y) for y in years.split("-"))
            if first <= int(year.group(1)) <= last:
                return date, f"its date tag for {year.group(1)} is"
    return None


@lru_cache(maxsize=4096)
def _judge(core: str, last: bool) -> tuple[str, str | None, str, tuple[str, ...], str] | None:
    """``(kind, fix, message, options, canonical key)`` for one tag, or ``("", ...)`` when it is fine.

    ``last``: the tag is still being typed, so a tag that starts a known one is not unknown yet.
    """
    key = tagindex.normalize(core).strip()
    shown = f"`{core}`"
    if core.strip() in tags.ALL_KNOWN_TAGS or key in tags.ALL_KNOWN_TAGS:
        if core.strip().lower() != key:
            return "spelling", key, f"{shown}: the model was trained with spaces: `{key}`", (), key
        return "", None, "", (), key
    untrained = _untrained(key)
    if untrained is not None:
        replacement, why = untrained
        if replacement:
            return "untrained", replacement, f"{shown} is not a tag the model was trained with; {why} " \
                                             f"`{replacement}`", (replacement,), replacement
        return "untrained", "", f"{shown} is {why}: drop it", (), key
    words = vocabulary()
    index = words.index
    hit = words.exact(key)
    if hit is not None:
        number, alias = hit
        name = index.names[number]
        canonical = tagindex.escape_tag(name)
        name_key = tagindex.normalize(name)
        if index.categories[number] == META:
            return "untrained", "", f"{shown} is a Danbooru meta tag; the tagger that captioned the training " \
                                    "images writes none: drop it", (), name_key
        if alias:
            return "alias", canonical, f"{shown} is Danbooru's alias of `{canonical}`, the tag the model was " \
                                       "trained with", (canonical,), name_key
        if core.strip().lower() != canonical.lower():
            why = "brackets in a tag need a backslash, or they read as emphasis" if "_" not in core \
                else "the model was trained with spaces"
            return "spelling", canonical, f"{shown}: {why}: `{canonical}`", (canonical,), name_key
        return "", None, "", (), name_key
    if last and words.is_prefix(key):
        return "", None, "", (), key
    if _BRACKET.search(core):  # emphasis or weights inside the tag's own words: nothing safe to suggest
        return "", None, "", (), key
    options = tuple(tagindex.escape_tag(index.names[n]) for n in words.nearest(key))
    if options:
        return "unknown", options[0], f"{shown} is not a Danbooru tag: did you mean `{options[0]}`?", options, \
            tagindex.normalize(index.names[words.nearest(key)[0]])
    return "unknown", None, f"{shown} is not a Danbooru tag, and none is close to it", (), key


def _lora_message(found: list[str]) -> str:
    """What is wrong with a piece's ``<lora:...>``-like tags ('' when each names a LoRA that is here)."""
    here = None
    missing, other = [], []
    for tag in found:
        match = lora_files.TAG.fullmatch(tag.strip())
        if match is None:
            other.append(tag)
            continue
        here = lora_files.available() if here is None else here
        if match.group(1) not in here:
            missing.append(tag)
    parts = []
    if missing:
        parts.append(f"{', '.join(f'`{x}`' for x in missing)}: no such LoRA in the loras folder: add the file or "
                     "drop the tag")
    if other:
        parts.append(f"{', '.join(f'`{x}`' for x in other)}: LyCORIS, hypernetwork and embedding tags are not "
                     "supported here: drop them")
    return "; ".join(parts)


# 3. A prompt -------------------------------------------------------------------------------------


def analyze(text: str, chunk_counts: ChunkCounter | None = None, typing: bool = False) -> list[Finding]:
    """Every finding of ``text``, in the prompt's order.

    ``chunk_counts`` (the encoder's tokens per chunk, e.g. ``studio.chunk_counts``
    over the composed prompt) adds the tags past the third chunk; ``typing``
    leaves the unfinished last tag alone while it still starts a known tag.
    """
    text = str(text or "")
    pieces = _pieces(text)
    findings: list[Finding] = []
    seen: dict[str, tuple[int, str, bool]] = {}  # canonical key -> (piece, tag, has emphasis)
    last = max((i for i, p in enumerate(pieces) if p.core.strip()), default=-1)
    for number, piece in enumerate(pieces):
        core = piece.core.strip()
        if not core or _WILDCARD.search(core) or _BREAK.search(core) or core.startswith(tags.ARTIST_PREFIX):
            continue
        loras = _LORA.findall(core)
        if loras:
            message = _lora_message(loras)
            if message:
                rest = " ".join(_LORA.sub(" ", core).split())
                findings.append(Finding("lora", core, number, rest, message))
            continue
        kind, fix, message, options, canonical = _judge(core, typing and number == last and not piece.sep)
        weighted = bool(piece.prefix.strip() or piece.suffix.strip())
        if canonical in seen:
            first, first_core, first_weighted = seen[canonical]
            if weighted and not first_weighted:  # keep the repeat that carries the emphasis
                findings = [f for f in findings if f.piece != first]
                findings.append(_duplicate(first_core, first, core))
                seen[canonical] = (number, core, weighted)
                if kind:
                    findings.append(Finding(kind, core, number, fix, message, options))
            else:
                findings.append(_duplicate(core, number, first_core))
            continue
        seen[canonical] = (number, core, weighted)
        if kind:
            findings.append(Finding(kind, core, number, fix, message, options))
    findings.sort(key=lambda f: f.piece)
    if chunk_counts is not None:
        findings += _past_chunks(text, pieces, chunk_counts)
    return findings


def _duplicate(core: str, number: int, other: str) -> Finding:
    said = "is already in the prompt" if core == other else f"means the same as `{other}`"
    return Finding("duplicate", core, number, "", f"`{core}` {said}: drop the repeat")


def _past_chunks(text: str, pieces: list[_Piece], chunk_counts: ChunkCounter) -> list[Finding]:
    past = tags_past_trained(text, chunk_counts)
    if not past:
        return []
    filled = [i for i, p in enumerate(pieces) if (p.prefix + p.core + p.suffix).strip()]
    return [Finding("past_chunks", pieces[number].core.strip(), number, "",
                    f"`{pieces[number].core.strip()}` is past the third 75-token chunk, which the model was not "
                    "trained with: drop it, or move it up")
            for number in filled[len(filled) - len(past):]]


def apply(text: str, findings: Iterable[Finding]) -> str:
    """``text`` with the fixes of ``findings`` (found in this same text) applied; emphasis stays around each tag."""
    text = str(text or "")
    pieces = _pieces(text)
    drops: set[int] = set()
    for finding in findings:
        if finding.fix is None or finding.piece >= len(pieces) or pieces[finding.piece].core.strip() != finding.tag:
            continue
        if finding.fix == "":
            drops.add(finding.piece)
        else:
            piece = pieces[finding.piece]
            pad = piece.core[:len(piece.core) - len(piece.core.lstrip())]
            tail = piece.core[len(piece.core.rstrip()):]
            piece.core = pad + finding.fix + tail
    if not drops:
        return _join(pieces)
    kept: list[_Piece] = []
    carried = ""  # emphasis a dropped tag opened, for the next tag to keep it open
    for number, piece in enumerate(pieces):
        if number not in drops:
            if carried:
                lead = len(piece.prefix) - len(piece.prefix.lstrip())
                piece.prefix = piece.prefix[:lead] + carried + piece.prefix[lead:]
                carried = ""
            kept.append(piece)
            continue
        openers = piece.prefix.strip()
        closers = _CLOSERS.findall(piece.suffix)
        paired = min(len(openers), len(closers))
        carried += openers[:len(openers) - paired]
        if closers[paired:] and kept:
            kept[-1].suffix = kept[-1].suffix.rstrip() + "".join(closers[paired:])
        if piece.sep == "\n" and kept and kept[-1].sep == ",":
            kept[-1].sep = "\n"
        elif not piece.sep and kept:  # the last tag went: so does the comma before it
            kept[-1].sep = ""
    if carried and kept:
        kept[-1].prefix += carried
    result = _join(kept)
    if not text[:1].isspace():
        result = result.lstrip()
    return result


def fix_all(text: str, chunk_counts: ChunkCounter | None = None) -> str:
    """``text`` with every fix applied, checked again after each round (fixes can make repeats)."""
    text = str(text or "")
    for _ in range(4):
        findings = analyze(text, chunk_counts)
        fixed = apply(text, findings)
        if fixed == text:
            break
        text = fixed
    return text


def fix_prompt(text: str, chunk_counts: ChunkCounter | None = None) -> tuple[str, list[dict]]:
    """``(fixed text, findings as dicts)``: what ``/fix_prompt`` and ``fix-prompt`` answer."""
    findings = analyze(text, chunk_counts)
    return fix_all(text, chunk_counts), [f.to_dict() for f in findings]


def rewrite_a1111(text: str) -> tuple[str, list[str]]:
    """An A1111 prompt in this model's tags, with a note per change.

    Quality and aesthetic words become the card's, underscores spaces, aliases
    their tags and typos the nearest tag; repeats, meta tags and LoRA tags go;
    emphasis stays. Tags past the third chunk are left for the Generate tab to show.
    """
    findings = analyze(text)
    fixed = fix_all(text)
    notes = []
    for finding in findings:
        if finding.fix is None:
            continue
        change = f"dropped `{finding.tag}`" if finding.fix == "" else f"`{finding.tag}` → `{finding.fix}`"
        reason = {"lora": "no such LoRA here" if finding.tag.lstrip("( ").lower().startswith("<lora")
                  else "not supported here", "duplicate": "a repeat",
                  "untrained": "not trained with" if finding.fix == "" else None}.get(finding.kind)
        notes.append(f"{change} ({reason})" if reason else change)
    return fixed, notes


def flags_markdown(findings: list[Finding], shown: int = 8) -> str:
    """The findings as one short line for under the prompt box ('' when there are none); past-chunk tags
    are left out (the budget line names them)."""
    parts = []
    for finding in sorted((f for f in findings if f.kind != "past_chunks"), key=lambda f: ORDER.index(f.kind)):
        if finding.kind == "duplicate":
            parts.append(f"repeat `{finding.tag}`")
        elif finding.kind == "unknown":
            parts.append(f"unknown `{finding.tag}`" + (f" → `{finding.fix}`" if finding.fix else ""))
        elif finding.kind == "lora":
            parts.append(f"LoRA `{finding.tag}`")
        elif finding.kind == "untrained":
            parts.append(f"untrained `{finding.tag}`" + (f" → `{finding.fix}`" if finding.fix else ""))
        else:
            parts.append(f"`{finding.tag}` → `{finding.fix}`")
    if not parts:
        return ""
    more = f" and {len(parts) - shown} more" if len(parts) > shown else ""
    return "**Check**: " + " · ".join(parts[:shown]) + more


__all__ = ["Finding", "analyze", "apply", "fix_all", "fix_prompt", "flags_markdown", "ready", "rewrite_a1111",
           "vocabulary", "warm_up"]
