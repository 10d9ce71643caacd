"""An earlier commit of Citadel, checked out beside this one, to measure side by side.

``python -m bench.agui_throughput`` runs the current server and the one of
:data:`BASELINE_REF` in the same run, so a change's cost is a ratio of two figures taken on
the same machine at the same time. The checkout is a detached ``git worktree`` in a
temporary folder, removed afterwards; it runs on this checkout's virtual environment.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator

# The last commit on the Starlette app, before the FastAPI move and the run API (issue 12).
BASELINE_REF = "e664cc7"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def checkout(ref: str = BASELINE_REF) -> Iterator[str]:
    """The folder of a checkout of ``ref``; raises RuntimeError if git cannot make one (a
    copy of the code without its history)."""
    with tempfile.TemporaryDirectory(prefix="citadel-baseline-") as parent:
        folder = os.path.join(parent, ref)
        added = subprocess.run(
            ["git", "-C", ROOT, "worktree", "add", "--detach", folder, ref],
            capture_output=True,
            text=True,
            check=False,
        )
        if added.returncode != 0:
            raise RuntimeError(f"cannot check out the baseline {ref}: {added.stderr.strip()}")
        try:
            yield folder
        finally:
            subprocess.run(
                ["git", "-C", ROOT, "worktree", "remove", "--force", folder],
                capture_output=True,
                check=False,
            )
