"""What one browser session keeps between events: its gallery, its selection, its drafts.

Kept in ``gr.State``, so never shared between users.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..service.studio import Shot


@dataclass
class SessionState:
    """Per-browser-session values (kept in gr.State, never shared between users)."""

    shots: list[Shot] = field(default_factory=list)
    last_seed: int | None = None
    selected: int | None = None  # index into shots
    jobs: int = 0
    order: list[int] = field(default_factory=list)  # shots' indices as the gallery shows them
    previewing: bool = False  # a run's live preview leads the gallery, before the shots in ``order``
    draft_values: dict[str, Any] | None = None  # the settings the last drafts were made with
    draft_seeds: list[int] = field(default_factory=list)  # the seeds those drafts show


