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
