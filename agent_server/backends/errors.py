"""How a backend fails: a chat model, an embedder or a reranker, in-process or remote.

Each class has the stable code a run reports when its model fails that way (``RUN_ERROR``
``code``); the knowledge base reports its own backends' failures as
``retrieval_unavailable`` instead.
"""

from __future__ import annotations


class BackendError(Exception):
    """The backend answered, but not usefully (bad request, garbage, a mid-stream error)."""

    code = "model_error"


class BackendUnavailable(BackendError):
    """The backend cannot be reached, is overloaded, or its circuit is open."""

    code = "model_unavailable"


class BackendTimeout(BackendError):
    """The backend stopped producing output within the configured time."""

    code = "timeout"
