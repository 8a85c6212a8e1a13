"""The emphasis syntax anime UIs use, parsed into (text, weight) pieces.

``(tag)`` multiplies the weight by 1.1, ``[tag]`` divides it by 1.1,
``(tag:1.3)`` sets a factor, and ``\\(``, ``\\)``, ``\\[``, ``\\]``, ``\\\\``
write the characters themselves (for tags such as ``kanzaki ranko \\(idolmaster\\)``).
An unclosed bracket applies to the end of the prompt; a stray closing bracket
is kept as text. Any input gives a result, never an error.

Example::

    >>> parse_emphasis("1girl, (smile:1.3), [hat]")
    [('1girl, ', 1.0), ('smile', 1.3), (', ', 1.0), ('hat', 0.9090909090909091)]
"""

from __future__ import annotations

import re

UP = 1.1
DOWN = 1 / 1.1
MAX_WEIGHT = 5.0  # an explicit (tag:w) weight must lie in 0..MAX_WEIGHT

_TOKEN = re.compile(
    r"""
    \\[\\()\[\]]            # escaped bracket or backslash
  | \(                      # open emphasis
  | \[                      # open de-emphasis
  | :\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)   # explicit weight, closing a (
  | \)
  | \]
  | [^\\()\[\]:]+           # plain text
  | .                       # anything else (a lone ':' or '\\')
    """,
    re.VERBOSE | re.DOTALL,
)


def parse_emphasis(text: str) -> list[tuple[str, float]]:
    """Split ``text`` into pieces with their weights; adjacent equal weights merge."""
    pieces: list[list] = []  # [text, weight]
    open_round: list[int] = []  # index into pieces where each "(" started
    open_square: list[int] = []

    def scale(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if token.startswith("\\") and len(token) == 2:
            pieces.append([token[1], 1.0])
        elif token == "(":
            open_round.append(len(pieces))
        elif token == "[":
            open_square.append(len(pieces))
        elif match.group(1) is not None:
            if open_round:
                weight = float(match.group(1))
                scale(open_round.pop(), weight)
            else:
                pieces.append([token, 1.0])
        elif token == ")":
            if open_round:
                scale(open_round.pop(), UP)
            else:
                pieces.append([token, 1.0])
        elif token == "]":
            if open_square:
                scale(open_square.pop(), DOWN)
            else:
                pieces.append([token, 1.0])
        else:
            pieces.append([token, 1.0])

    for start in open_round:
        scale(start, UP)
    for start in open_square:
        scale(start, DOWN)

    merged: list[tuple[str, float]] = []
    for piece_text, weight in pieces:
        if not piece_text:
            continue
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + piece_text, weight)
        else:
            merged.append((piece_text, weight))
    return merged


def strip_emphasis(text: str) -> str:
    """The prompt's plain text, as the tokenizer sees it."""
    return "".join(piece for piece, _ in parse_emphasis(text))


def explicit_weights(text: str) -> list[float]:
    """Every explicit ``(tag:w)`` weight in ``text``, as written (closing brackets that do close a ``(``)."""
    found: list[float] = []
    depth = 0
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if token == "(":
            depth += 1
        elif match.group(1) is not None and depth:
            depth -= 1
            found.append(float(match.group(1)))
        elif token == ")" and depth:
            depth -= 1
    return found


def check_weights(text: str, what: str = "the prompt") -> None:
    """Raise ValueError for an explicit weight outside 0..MAX_WEIGHT (a negative weight
    would flip the tag's embedding, which means nothing to the model)."""
    for weight in explicit_weights(text):
        if not 0 <= weight <= MAX_WEIGHT:
            raise ValueError(f"{what} has the weight {weight:g}; a (tag:weight) weight must be between 0 and "
                             f"{MAX_WEIGHT:g}")
