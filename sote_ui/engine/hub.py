"""Downloads from the Hugging Face Hub, with one translation of their failures.

Every download of the engine (the pair's folders, a model card, the image
encoder of image remix, Stability's previewer) goes through :func:`snapshot`
or :func:`file`, so a missing repo, a gated one, an offline machine or a
network error reads the same everywhere: one line naming what was wanted and
what to do. ``HF_HUB_OFFLINE=1`` uses the local cache only.

Example::

    folder = snapshot("Disty0/sotediffusion-wuerstchen3", ["prior/*"], "prior Disty0/sotediffusion-wuerstchen3",
                      offline_hint="connect once to download it")
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..core.errors import ModelError


def _fetched(download: Callable[[], str], what: str, offline_hint: str) -> Path:
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(download())
    except GatedRepoError:  # a subclass of RepositoryNotFoundError: asked first
        raise ModelError(f"{what} is gated: accept its terms on the Hub and log in (hf auth login)") from None
    except RepositoryNotFoundError:
        raise ModelError(f"{what} was not found on the Hugging Face Hub; check the id") from None
    except LocalEntryNotFoundError:
        raise ModelError(f"{what} is not in the local cache and the Hub can't be reached (offline?); "
                         f"{offline_hint}") from None
    except (HfHubHTTPError, OSError) as exc:
        raise ModelError(f"downloading {what} failed: {str(exc).splitlines()[0][:160]}") from None


def snapshot(repo_id: str, patterns: list[str], what: str, offline_hint: str) -> Path:
    """The local folder of ``repo_id`` holding the files that match ``patterns`` (downloaded on first use)."""
    from huggingface_hub import snapshot_download

    return _fetched(lambda: snapshot_download(repo_id, allow_patterns=patterns), what, offline_hint)


def file(repo_id: str, filename: str, what: str, offline_hint: str) -> Path:
    """The local path of one file of ``repo_id`` (downloaded on first use)."""
    from huggingface_hub import hf_hub_download

    return _fetched(lambda: hf_hub_download(repo_id, filename), what, offline_hint)


def cached_snapshot(repo_id: str, patterns: list[str]) -> Path | None:
    """The local folder of ``repo_id`` if its files are in the local cache already, else None (no download)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def offline() -> bool:
    """True where the Hub is switched off (``HF_HUB_OFFLINE=1``): only the local cache can be used."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


__all__ = ["cached_snapshot", "file", "offline", "snapshot"]
