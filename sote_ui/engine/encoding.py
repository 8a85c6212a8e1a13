"""Prompt encoding past CLIP's 77 tokens, with emphasis weights.

The model was trained with kohya's sd-scripts at ``max_token_length 225``:
three 75-token chunks, each wrapped in start/end tokens, padded to 77 and
encoded on its own. (sd-scripts then keeps the first start token, each
chunk's 75 inner states and the last end token, 227 states; here each chunk
keeps all 77, as A1111 and SD.Next concatenate them.) Prompts are split into
such chunks (at a comma near the end of a chunk where there is one, so tags
stay whole); ``BREAK`` (in capitals, as a word of its own) starts a new chunk,
as in A1111 and SD.Next; the negative prompt is padded to the same number of
chunks.

Padding: sd-scripts calls the text encoder with no attention mask, so the
hidden states at the padding positions are those of pad tokens that attend to
the prompt; that is the default here. diffusers' pipelines (the model card's
script) pass the tokenizer's attention mask instead: ``mask_padding=True``
encodes a prompt that fits one chunk exactly as they do. CLIP's attention is
causal, so the two differ only at the padding, never at the prompt's own
tokens or the pooled embedding.

Example::

    embeds = encode_pair(tokenizer, text_encoder, "very aesthetic, (1girl:1.2), ...", "worst quality", "cpu")
    embeds.prompt.shape   # (1, 77 * chunks, hidden)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..core.emphasis import parse_emphasis
from ..core.errors import InputError
from ..core.tags import CHUNK_TOKENS, MAX_CHUNKS, OVER_CHUNK_LIMIT, TRAINED_CHUNKS

CHUNK = CHUNK_TOKENS
COMMA_LOOKBACK = 20
# A1111's and SD.Next's BREAK: the word in capitals standing alone (between spaces, commas, line breaks or
# the ends of a piece) ends the chunk. The separators around it go with it, so the next chunk starts with a
# tag, not a comma; "jailBREAK", "BREAK_dance", "smile-BREAK" and "break" stay text.
BREAK = re.compile(r"[\s,]*(?<![^\s,])BREAK(?![^\s,])[\s,]*")


@dataclass
class PromptEmbeds:
    prompt: torch.Tensor
    prompt_pooled: torch.Tensor
    negative: torch.Tensor
    negative_pooled: torch.Tensor
    chunks: int
    tokens: int

    def conditioning(self, guided: bool) -> dict:
        """Keyword arguments for either Stable Cascade pipeline.

        Both pipelines apply CFG only when its scale is above 1, and then need
        the negative embeddings; without CFG they must get none (the prior
        would batch them against a single latent).
        """
        return {
            "prompt_embeds": self.prompt,
            "prompt_embeds_pooled": self.prompt_pooled,
            "negative_prompt_embeds": self.negative if guided else None,
            "negative_prompt_embeds_pooled": self.negative_pooled if guided else None,
        }


def tokenize_sections(tokenizer, text: str) -> list[tuple[list[int], list[float]]]:
    """Token ids (no start/end tokens) and emphasis weights of each ``BREAK``-separated section of ``text``.

    Sections without tokens are left out, so ``BREAK`` at either end, alone or twice in a row adds nothing.
    """
    sections: list[tuple[list[int], list[float]]] = [([], [])]
    for piece, weight in parse_emphasis(text):
        # BREAK is found inside emphasised pieces too: "(a BREAK b:1.2)" weights both sides.
        for index, part in enumerate(BREAK.split(piece)):
            if index:
                sections.append(([], []))
            if part:
                part_ids = tokenizer(part, add_special_tokens=False, truncation=False).input_ids
                sections[-1][0].extend(part_ids)
                sections[-1][1].extend([weight] * len(part_ids))
    return [section for section in sections if section[0]]


def tokenize_weighted(tokenizer, text: str) -> tuple[list[int], list[float]]:
    """Token ids of ``text`` (no start/end tokens, no ``BREAK``) and each token's emphasis weight."""
    ids: list[int] = []
    weights: list[float] = []
    for section_ids, section_weights in tokenize_sections(tokenizer, text):
        ids += section_ids
        weights += section_weights
    return ids, weights


def prompt_chunks(tokenizer, text: str, comma: int | None) -> list[tuple[list[int], list[float]]]:
    """The chunks :func:`encode_pair` encodes for ``text``: each ``BREAK`` section cut by
    :func:`split_chunks`. Text without tokens is one empty chunk."""
    chunks = [chunk for ids, weights in tokenize_sections(tokenizer, text) for chunk in split_chunks(ids, weights, comma)]
    return chunks or [([], [])]


def count_tokens(tokenizer, text: str) -> int:
    return len(tokenize_weighted(tokenizer, text)[0])


def chunk_token_counts(tokenizer, text: str) -> list[int]:
    """Tokens in each 75-token chunk of ``text``, split exactly as :func:`encode_pair` splits it.

    Chunks are cut at a comma near their end, so they often hold fewer than 75
    tokens: a prompt of 222 tokens can need 4 chunks. ``BREAK`` ends a chunk early.
    An empty prompt is one empty chunk.
    """
    return [len(chunk_ids) for chunk_ids, _ in prompt_chunks(tokenizer, text, comma_id(tokenizer))]


def check_chunks(tokenizer, text: str, what: str = "the prompt") -> list[int]:
    """:func:`chunk_token_counts`, refusing text past :data:`MAX_CHUNKS` with a one-line message."""
    counts = chunk_token_counts(tokenizer, text)
    if len(counts) > MAX_CHUNKS:
        raise InputError(
            f"{what} needs {len(counts)} chunks of {CHUNK} tokens ({sum(counts)} tokens), {OVER_CHUNK_LIMIT} "
            f"(the model was trained with {TRAINED_CHUNKS}): shorten it"
        )
    return counts


def split_chunks(ids: list[int], weights: list[float], comma: int | None) -> list[tuple[list[int], list[float]]]:
    """Cut token ids (and their weights) into chunks of at most 75, after the last comma of each chunk's
    final 20 tokens where there is one, so a tag is not split across two chunks."""
    chunks = []
    while len(ids) > CHUNK:
        cut = CHUNK
        if comma is not None:
            window = ids[CHUNK - COMMA_LOOKBACK:CHUNK]
            if comma in window:
                cut = CHUNK - COMMA_LOOKBACK + len(window) - window[::-1].index(comma)
        chunks.append((ids[:cut], weights[:cut]))
        ids, weights = ids[cut:], weights[cut:]
    chunks.append((ids, weights))
    return chunks


def comma_id(tokenizer) -> int | None:
    """The comma's token id (chunks are cut after a comma where one is near), or None."""
    ids = tokenizer(",", add_special_tokens=False).input_ids
    return ids[0] if len(ids) == 1 else None


@torch.no_grad()
def _encode_chunks(tokenizer, text_encoder, chunks, device, mask_padding: bool) -> tuple[torch.Tensor, torch.Tensor]:
    length = tokenizer.model_max_length
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    hidden_states = []
    pooled = None
    for ids, weights in chunks:
        row = [bos] + ids + [eos]
        mask = [1] * len(row) + [0] * (length - len(row))
        row = row + [pad] * (length - len(row))
        output = text_encoder(
            torch.tensor([row], device=device),
            attention_mask=torch.tensor([mask], device=device) if mask_padding else None,
            output_hidden_states=True,
        )
        states = output.hidden_states[-1]
        if any(w != 1.0 for w in weights):
            # Scale emphasised tokens, then restore the chunk's mean so the
            # overall magnitude the model expects is kept.
            original_mean = states.float().mean()
            factors = torch.tensor([1.0] + weights + [1.0] * (length - 1 - len(weights)), device=states.device)
            scaled = states.float() * factors[None, :, None]
            scaled = scaled * (original_mean / scaled.mean())
            states = scaled.to(states.dtype)
        hidden_states.append(states)
        if pooled is None:
            pooled = output.text_embeds.unsqueeze(1)
    return torch.cat(hidden_states, dim=1), pooled


def encode_pair(tokenizer, text_encoder, prompt: str, negative_prompt: str, device, *,
                mask_padding: bool = False) -> PromptEmbeds:
    """Encode prompt and negative prompt to the same number of 77-token chunks.

    ``mask_padding`` False (the request's ``prompt_padding`` "unmasked") encodes as the model was trained;
    True masks the padding out of attention, as diffusers' pipelines do.
    """
    comma = comma_id(tokenizer)
    pos_chunks = prompt_chunks(tokenizer, prompt, comma)
    neg_chunks = prompt_chunks(tokenizer, negative_prompt, comma)
    count = max(len(pos_chunks), len(neg_chunks))
    pos_chunks += [([], [])] * (count - len(pos_chunks))
    neg_chunks += [([], [])] * (count - len(neg_chunks))
    prompt_embeds, prompt_pooled = _encode_chunks(tokenizer, text_encoder, pos_chunks, device, mask_padding)
    negative_embeds, negative_pooled = _encode_chunks(tokenizer, text_encoder, neg_chunks, device, mask_padding)
    tokens = sum(len(ids) for ids, _ in pos_chunks)
    return PromptEmbeds(prompt_embeds, prompt_pooled, negative_embeds, negative_pooled, count, tokens)
