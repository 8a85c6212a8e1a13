"""The tags SoteDiffusion Wuerstchen3 was trained with, and the prompt composer.

Pure data and logic: no torch, no gradio. The tables come from the model card;
the composer writes them in the dataset's tag order (aesthetic, quality, date,
custom, rating, then the user's own tags).

Example::

    >>> compose_prompt("1girl, solo", aesthetic="very aesthetic", quality="best quality", date="newest")
    'very aesthetic, best quality, newest, 1girl, solo'
"""

from __future__ import annotations

NONE = "none"

# Aesthetic score (shadowlilac/aesthetic-shadow-v2), best first.
AESTHETIC: tuple[str, ...] = (
    "extremely aesthetic",
    "very aesthetic",
    "aesthetic",
    "slightly aesthetic",
    "not displeasing",
    "not aesthetic",
    "slightly displeasing",
    "displeasing",
    "very displeasing",
)

# Quality score (waifu-diffusion aes-B32), best first.
QUALITY: tuple[str, ...] = (
    "best quality",
    "high quality",
    "great quality",
    "medium quality",
    "normal quality",
    "bad quality",
    "low quality",
    "worst quality",
)

# Date tag -> the years it covers, newest first.
DATE: dict[str, str] = {
    "newest": "2022-2024",
    "recent": "2019-2021",
    "mid": "2015-2018",
    "early": "2011-2014",
    "oldest": "2005-2010",
}

RATING: tuple[str, ...] = ("general", "sensitive", "nsfw", "explicit nsfw")

# Custom tags of the dataset's sources (pixiv artists get "art by NAME").
CUSTOM: tuple[str, ...] = ("visual novel cg", "anime wallpaper")

CATEGORIES: dict[str, tuple[str, ...]] = {
    "aesthetic": AESTHETIC,
    "quality": QUALITY,
    "date": tuple(DATE),
    "custom": CUSTOM,
    "rating": RATING,
}

ALL_KNOWN_TAGS: tuple[str, ...] = AESTHETIC + QUALITY + tuple(DATE) + CUSTOM + RATING

DEFAULT_TAGS = {"aesthetic": "very aesthetic", "quality": "best quality", "date": "newest", "custom": NONE,
                "rating": NONE, "artist": ""}
DEFAULT_NEGATIVE = "very displeasing, worst quality, oldest, monochrome, sketch, realistic,"

# The model was trained with max_token_length 225: three 75-token CLIP chunks.
CHUNK_TOKENS = 75  # tokens between the start and end token of each 77-token window
TRAINED_CHUNKS = 3
TOKEN_BUDGET = CHUNK_TOKENS * TRAINED_CHUNKS
MAX_CHUNKS = 8  # a hard cap: each chunk is one more text-encoder pass and 77 more tokens of conditioning
# The words both the budget line under the prompt and Generate's refusal use, so they name one limit alike.
OVER_CHUNK_LIMIT = f"over the {MAX_CHUNKS}-chunk limit"


def over_char_limit(limit: int) -> str:
    """The words for text past the character limit (``over the 8,000-character limit``)."""
    return f"over the {limit:,}-character limit"

ARTIST_PREFIX = "art by "


def split_tags(text: str) -> list[str]:
    """Split a comma-separated prompt into stripped, non-empty tags."""
    return [t.strip() for t in text.replace("\n", ",").split(",") if t.strip()]


def check_choice(category: str, value: str | None) -> str:
    """Return the normalised choice for a tag category, or raise ValueError."""
    value = (value or NONE).strip().lower()
    if value in ("", NONE):
        return NONE
    choices = CATEGORIES[category]
    if value not in choices:
        raise ValueError(f"unknown {category} tag {value!r}; choose one of: none, " + ", ".join(choices))
    return value


def compose_prompt(
    prompt: str = "",
    *,
    aesthetic: str | None = None,
    quality: str | None = None,
    date: str | None = None,
    custom: str | None = None,
    rating: str | None = None,
    artist: str | None = None,
) -> str:
    """Compose the final prompt in the dataset's tag order.

    Picked tags already present in the user's prompt are not repeated.
    """
    user_tags = split_tags(prompt)
    present = {t.lower() for t in user_tags}
    picked: list[str] = []
    for category, value in (("aesthetic", aesthetic), ("quality", quality), ("date", date)):
        choice = check_choice(category, value)
        if choice != NONE:
            picked.append(choice)
    if artist and artist.strip():
        picked.append(ARTIST_PREFIX + artist.strip())
    for category, value in (("custom", custom), ("rating", rating)):
        choice = check_choice(category, value)
        if choice != NONE:
            picked.append(choice)
    picked = [t for t in picked if t.lower() not in present]
    return ", ".join(picked + user_tags)


def decompose_prompt(prompt: str) -> dict[str, str]:
    """Split a composed prompt back into picker choices and the user's own tags.

    The inverse of :func:`compose_prompt`: ``compose_prompt(**decompose_prompt(p))``
    gives ``p`` back (tags normalised), so reusing an image's settings gives
    the same prompt. Only the leading tags written in the composer's order
    (aesthetic, quality, date, artist, custom, rating) become picker choices;
    everything from the first other tag on is kept in order as the user's
    tags, also known tags typed mid-prompt.
    """
    result = {"aesthetic": NONE, "quality": NONE, "date": NONE, "custom": NONE, "rating": NONE, "artist": ""}
    order = ("aesthetic", "quality", "date", "artist", "custom", "rating")
    parts = split_tags(prompt)
    position = 0  # the next category a leading tag may fill
    taken = 0
    for index, tag in enumerate(parts):
        low = tag.lower()
        if tag.startswith(ARTIST_PREFIX):
            name = tag[len(ARTIST_PREFIX):]
            category = "artist" if name == name.strip() else None
        else:
            category = next((c for c, values in CATEGORIES.items() if tag in values), None)
        later = {t.lower() for t in parts[index + 1:]}
        # compose_prompt drops a picked tag the user's tags repeat, so such a tag can't be a pick
        if category is None or order.index(category) < position or low in later:
            break
        if category == "artist":
            result["artist"] = tag[len(ARTIST_PREFIX):]
        else:
            result[category] = tag
        position = order.index(category) + 1
        taken = index + 1
    result["prompt"] = ", ".join(parts[taken:])
    return result
