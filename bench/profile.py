"""Where a server's time per event goes: ``python -m bench.profile [burst|tick] [--runs N]``.

Runs a server (citadel unless ``--server``) under cProfile, streams N answers of 10,000
deltas through it and prints the functions with the most own time, then cumulative time.
Not part of ``python -m bench``: cProfile slows the server down several times, so the
ranking is what matters, not the totals.
"""

from __future__ import annotations

import argparse
import io
import pstats
import tempfile
from pathlib import Path

from bench.agui_throughput import DELTAS, SCENARIOS
from bench.client import new_loop, post_sse, run_input
from bench.servers import KINDS, running


def profile(scenario: str, runs: int, top: int, server_kind: str = "citadel") -> str:
    with tempfile.TemporaryDirectory() as directory:
        stats_file = str(Path(directory) / "server.prof")
        loop = new_loop()
        try:
            with running(server_kind, profile=stats_file) as server:
                for _ in range(runs):
                    body = run_input(SCENARIOS[scenario])
                    loop.run_until_complete(post_sse(server.port, body))
        finally:
            loop.close()
        out = io.StringIO()
        stats = pstats.Stats(stats_file, stream=out)
        print(f"{server_kind}, {runs} x {DELTAS:,} deltas ({scenario}):", file=out)
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS), nargs="?", default="tick")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--server", choices=KINDS, default="citadel")
    args = parser.parse_args()
    print(profile(args.scenario, args.runs, args.top, args.server))


if __name__ == "__main__":
    main()
