"""Where the local LLM's weights come from: a ``.gguf`` file, or ``REPO/FILE.gguf`` on the
Hugging Face Hub (``huggingface_hub`` downloads it once into its cache, with its progress bar,
and finds it there offline). Every failure is a :class:`ModelFileError` that names the file
and what to do."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["GGUF_MAGIC", "ModelFileError", "hub_name", "model_id", "resolve"]

GGUF_MAGIC = b"GGUF"


class ModelFileError(RuntimeError):
    """The model file is missing, not a GGUF file, or cannot be fetched."""


def hub_name(model: str) -> tuple[str, str] | None:
    """``(repo, filename)`` when ``model`` names a file on the Hub (``owner/repo/FILE.gguf``,
    the file possibly in a folder), None for a local path."""
    if model.startswith(("/", ".", "~")) or not model.lower().endswith(".gguf"):
        return None
    parts = model.split("/")
    if len(parts) < 3 or not all(parts):
        return None
    return "/".join(parts[:2]), "/".join(parts[2:])


def model_id(model: str) -> str:
    """The id the API lists the model under: its file name without ``.gguf``."""
    name = model.rstrip("/").rsplit("/", 1)[-1]
    return name[: -len(".gguf")] if name.lower().endswith(".gguf") else name


def resolve(model: str) -> Path:
    """The local path of ``model``'s GGUF file (downloaded first when it names a file on the
    Hub), checked to be a GGUF file."""
    path = Path(model).expanduser()
    if not path.exists():
        hub = hub_name(model)
        if hub is None:
            raise ModelFileError(
                f"model {model!r}: no such file (give a .gguf file, or REPO/FILE.gguf on the "
                "Hugging Face Hub)"
            )
        path = _download(*hub)
    if path.is_dir():
        raise ModelFileError(f"model {model!r} is a directory; give its .gguf file")
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise ModelFileError(f"model {model!r}: cannot read {path}: {exc.strerror}") from exc
    if head != GGUF_MAGIC:
        raise ModelFileError(
            f"model {model!r}: {path} is not a GGUF file (it starts with {head!r}, not "
            f"{GGUF_MAGIC!r}); llama.cpp reads GGUF models only"
        )
    return path


def _download(repo: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return Path(hf_hub_download(repo, filename))
    except LocalEntryNotFoundError as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        why = "HF_HUB_OFFLINE is set" if offline else "the Hub cannot be reached"
        raise ModelFileError(
            f"model {filename} of {repo} is not in the Hugging Face cache and {why}: on a "
            f"machine with internet run `hf download {repo} {filename}` and copy the cache "
            "(~/.cache/huggingface, or $HF_HOME) here, or give the path of a local .gguf file"
        ) from exc
    except GatedRepoError as exc:
        raise ModelFileError(
            f"model {repo} is gated on the Hugging Face Hub: accept its licence there and "
            "log in (`hf auth login`, or HF_TOKEN)"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelFileError(f"model {repo}: no such repository on the Hugging Face Hub") from exc
    except EntryNotFoundError as exc:
        raise ModelFileError(
            f"model {repo} has no file {filename} on the Hugging Face Hub"
        ) from exc
    except OSError as exc:  # the Hub's other HTTP errors, a full disk, a cut download
        raise ModelFileError(f"model {filename} of {repo}: the download failed: {exc}") from exc
