"""Embedding models we know by name, and their output dimensions.

A collection is created with the model's dimensions before the first vector exists, so a
known model needs no probe request; an unknown one is asked once (see HTTPEmbedder).
Names are matched as Ollama and OpenAI-compatible servers spell them: ``nomic-embed-text``,
``nomic-embed-text:latest``, ``nomic-ai/nomic-embed-text-v1.5``.
"""

from __future__ import annotations

KNOWN_DIMENSIONS = {
    "all-minilm": 384,
    "all-minilm-l6-v2": 384,
    "nomic-embed-text": 768,
    "mxbai-embed-large": 1024,
    "bge-m3": 1024,
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
}


def model_key(model: str) -> str:
    """``model`` without its owner and tag, lower-cased: how one model is recognised under the
    names different servers give it."""
    return model.lower().rsplit("/", 1)[-1].split(":", 1)[0]


def known_dimensions(model: str) -> int | None:
    """The dimensions of ``model``, or None if it is not one we know."""
    name = model_key(model)
    for known, dimensions in KNOWN_DIMENSIONS.items():
        if name == known or name.startswith(f"{known}-v"):
            return dimensions
    return None
