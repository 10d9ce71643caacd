"""``citadel``: serve, chat with a running server, join LiveKit rooms as the voice agent,
check the setup, show the configuration, ingest documents, manage the database, verify a
recorded stream."""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import sys
import uuid
from pathlib import Path

import httpx
import orjson

from agent_server.config import ConfigError, read_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="citadel", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host", help="bind address (default CITADEL_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default CITADEL_PORT or 8000)")

    chat = commands.add_parser("chat", help="ask a running server and stream the answer")
    chat.add_argument("question")
    chat.add_argument("--url", default=None, help="server base URL (default from settings)")
    chat.add_argument("--thread", default=None, help="continue this thread id")

    voice = commands.add_parser(
        "voice", help="the LiveKit voice agent: join the rooms it is dispatched to"
    )
    voice.add_argument(
        "--health-port",
        type=int,
        default=0,
        help="port of the worker's health server on 127.0.0.1 (default: any free port)",
    )

    commands.add_parser("doctor", help="check the configuration and every configured backend")

    config = commands.add_parser("config", help="the configuration")
    config_actions = config.add_subparsers(dest="action", required=True)
    config_actions.add_parser("show", help="the effective configuration, secrets masked")

    ingest = commands.add_parser("ingest", help="add files or folders to the knowledge base")
    ingest.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    ingest.add_argument("--kb", help="the knowledge base (default: CITADEL_KNOWLEDGE_BASE)")
    ingest.add_argument("--tag", action="append", default=[], help="tag every document")
    ingest.add_argument(
        "--prune", action="store_true", help="delete documents no longer under the paths"
    )

    db = commands.add_parser("db", help="the database schema")
    db.add_argument("action", choices=["upgrade", "status"])

    keys = commands.add_parser("keys", help="project API keys (machine credentials)")
    key_actions = keys.add_subparsers(dest="action", required=True)
    create = key_actions.add_parser("create", help="a new key; its secret is shown this once")
    create.add_argument("name", help="what the key is for, shown by `keys list`")
    create.add_argument(
        "--scope",
        dest="scopes",
        metavar="SCOPE",
        action="append",
        required=True,
        help="agents, kb:<name> or kb:<name>:write (repeat for more)",
    )
    key_actions.add_parser("list", help="every key, revoked ones too")
    revoke = key_actions.add_parser("revoke", help="refuse a key from now on")
    revoke.add_argument("id", help="the key's id (key_...)")

    verify = commands.add_parser("verify", help="check a recorded AG-UI stream (.sse or .jsonl)")
    verify.add_argument("file", type=Path)
    verify.add_argument(
        "--legacy", action="store_true", help="judge it as a 0.0.59 client (CopilotKit 1.7x)"
    )

    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args.host, args.port)
        if args.command == "chat":
            return asyncio.run(_chat(args.question, args.url, args.thread))
        if args.command == "voice":
            return _voice(args.health_port)
        if args.command == "doctor":
            from agent_server.doctor import run_doctor

            return asyncio.run(run_doctor())
        if args.command == "config":
            from agent_server.config_cli import show_config

            return show_config(read_settings())
        if args.command == "ingest":
            from agent_server.ingest_cli import run_ingest

            return asyncio.run(
                run_ingest(
                    args.paths,
                    read_settings(),
                    knowledge_base=args.kb,
                    tags=args.tag,
                    prune=args.prune,
                )
            )
        if args.command == "db":
            from agent_server.db_cli import run_db_command

            return asyncio.run(run_db_command(args.action, read_settings()))
        if args.command == "keys":
            from agent_server.keys_cli import run_keys_command

            return asyncio.run(run_keys_command(args, read_settings()))
        return _verify(args.file, args.legacy)
    except ConfigError as error:
        for problem in error.problems:
            print(f"configuration error: {problem}", file=sys.stderr)
        return 2


def tune_garbage_collector() -> None:
    """Every streamed token allocates short-lived objects; with CPython's default thresholds
    the resulting full collections paused the loop for up to 285 ms under load (bench/)."""
    gc.collect()
    gc.freeze()  # modules and the app live forever: never scan them again
    gc.set_threshold(50_000, 20, 100)


def _serve(host: str | None, port: int | None) -> int:
    import uvicorn

    from agent_server.app import create_app
    from agent_server.observability.logs import configure_logging

    overrides = {key: value for key, value in (("host", host), ("port", port)) if value}
    load = functools.partial(read_settings, **overrides)  # a reload keeps the command line's
    settings = load()
    configure_logging(settings)
    app = create_app(settings, load=load, sighup=True)
    tune_garbage_collector()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # uvicorn's records go to our handler, with the request's id
    )
    return 0


def _voice(health_port: int) -> int:
    try:
        from voice.worker import run_voice_worker
    except ImportError as missing:
        print(
            f"the voice packages are not installed ({missing}); run `make setup`", file=sys.stderr
        )
        return 2
    return run_voice_worker(read_settings(), health_port)


async def _chat(question: str, url: str | None, thread: str | None) -> int:
    from protocol.framing import parse_sse_stream

    settings = read_settings()
    base = (url or f"http://{settings.host}:{settings.port}").rstrip("/")
    body = {
        "threadId": thread or f"cli_{uuid.uuid4().hex}",
        "runId": f"run_{uuid.uuid4().hex}",
        "protocolVersion": "1.0",
        "messages": [{"id": f"msg_{uuid.uuid4().hex}", "role": "user", "content": question}],
    }
    out, err = sys.stdout, sys.stderr
    status = 0
    try:
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client,
            client.stream("POST", f"{base}/agui", json=body) as response,
        ):
            if response.status_code != 200:
                error = orjson.loads(await response.aread()).get("error", {})
                print(f"error {response.status_code}: {error.get('message')}", file=err)
                return 1
            async for event in parse_sse_stream(response.aiter_bytes()):
                kind = event["type"]
                if kind == "TEXT_MESSAGE_CONTENT":
                    out.write(event["delta"])
                    out.flush()
                elif kind == "TEXT_MESSAGE_END":
                    out.write("\n")
                elif kind == "TOOL_CALL_START":
                    print(f"[calling {event['toolCallName']}]", file=err)
                elif kind == "TOOL_CALL_RESULT":
                    print(f"[result] {event['content']}", file=err)
                elif kind == "RUN_ERROR":
                    print(f"error ({event.get('code')}): {event['message']}", file=err)
                    status = 1
    except httpx.ConnectError:
        print(f"no Citadel server at {base}; start one with `make run`", file=err)
        return 1
    print(f"(thread {body['threadId']})", file=err)
    return status


def _verify(path: Path, legacy: bool) -> int:
    from protocol.verifier import events_from_recording, verify_events
    from protocol.versions import WireVersion

    try:
        recorded = events_from_recording(path.read_bytes())
    except (OSError, ValueError) as error:
        print(f"cannot read {path}: {error}", file=sys.stderr)
        return 2
    findings = verify_events(recorded, WireVersion.LEGACY if legacy else WireVersion.V1)
    for finding in findings:
        print(finding)
    print(f"{len(recorded)} events, {len(findings)} problem(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
