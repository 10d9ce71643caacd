"""The event bus in Redis Streams, shared by every worker.

* ``citadel:feed``: one entry per flush of a worker (the batches of the runs that had news,
  or a note), trimmed to about ``feed_length`` entries; its ids are Redis' own (``<ms>-<n>``),
  so "replay from a time" is reading after ``<ms>-0``. Each batch's thread, run, first seq,
  size and owner share one line of one field, its events one line each of another: fields
  are what every reader pays to parse, and a busy worker's flush is one entry, not hundreds.
* ``citadel:run:<thread> <run>``: the run's batches, each under the id ``0-<last seq>``, so
  "the events after seq N" is ``XREAD ... 0-N``; the key expires ``retention`` seconds after
  its last batch.

One script appends a flush's batches to both, atomically and idempotently: a batch whose run
stream already has its id (a retry after an unclear failure) is skipped, on the feed too.
Redis Cluster is not supported (the script touches keys of many runs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from agent_server.store.base import EventBatch

from .bus import FEED_RUN, BusUnavailable, FeedEntry, RunEvents, worker_name

if TYPE_CHECKING:
    import redis.asyncio as redis

FEED_KEY = "citadel:feed"

_PUBLISH = """
local ttl, length, worker = ARGV[1], ARGV[2], ARGV[3]
local about, bodies = {}, {}
for i = 2, #KEYS do
  local b = 4 + (i - 2) * 4
  local added = redis.pcall('XADD', KEYS[i], '0-' .. ARGV[b + 1], 's', ARGV[b], 'e', ARGV[b + 3])
  if type(added) == 'table' and added.err then
    if not string.find(added.err, 'equal or smaller', 1, true) then
      return redis.error_reply(added.err)
    end
  else
    redis.call('PEXPIRE', KEYS[i], ttl)
    about[#about + 1] = ARGV[b + 2]
    bodies[#bodies + 1] = ARGV[b + 3]
  end
end
if #about > 0 then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', length, '*', 'k', 'run', 'w', worker,
    'm', table.concat(about, '\\n'), 'e', table.concat(bodies, '\\n'))
end
return #about
"""


def run_stream_key(thread_id: str, run_id: str) -> str:
    return f"citadel:run:{thread_id} {run_id}"  # ids have no spaces: the key is unambiguous


class RedisBus:
    def __init__(
        self,
        client: redis.Redis,
        blocking_client: redis.Redis,
        *,
        retention: float,
        feed_length: int = 100_000,
    ) -> None:
        """``client`` answers at once (publishing); ``blocking_client`` waits in XREAD and
        needs a socket timeout longer than any ``block``."""
        self.worker = worker_name()
        self._client = client
        self._blocking = blocking_client
        self._retention_ms = int(retention * 1000)
        self._feed_length = feed_length
        self._publish = client.register_script(_PUBLISH)

    async def publish(self, batches: list[EventBatch]) -> None:
        keys: list[str] = [FEED_KEY]
        args: list[str | bytes | int] = [self._retention_ms, self._feed_length, self.worker]
        for batch in batches:
            keys.append(run_stream_key(batch.thread_id, batch.run_id))
            size = len(batch.events)
            about = f"{batch.thread_id} {batch.run_id} {batch.seq_from} {size} {batch.owner}"
            args += [batch.seq_from, batch.seq_from + size - 1, about]
            args.append(b"\n".join(batch.events))  # JSON has no raw newlines
        try:
            await self._publish(keys=keys, args=args)
        except RedisError as error:
            raise BusUnavailable(f"Redis: {error}") from error

    async def note(self, kind: str, body: bytes, owner: str = "") -> None:
        fields = {"k": kind, "w": self.worker, "u": owner, "n": body}
        try:
            await self._client.xadd(FEED_KEY, fields, maxlen=self._feed_length, approximate=True)  # type: ignore[arg-type]
        except RedisError as error:
            raise BusUnavailable(f"Redis: {error}") from error

    async def read_feed(self, after: str, count: int, block: float) -> list[FeedEntry]:
        found = await self._read(FEED_KEY, after, count, block)
        return [_feed_entry(entry_id, fields) for entry_id, fields in found]

    async def feed_bounds(self) -> tuple[str, str]:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.xrange(FEED_KEY, count=1)
                pipe.xrevrange(FEED_KEY, count=1)
                first, last = await pipe.execute()
        except RedisError as error:
            raise BusUnavailable(f"Redis: {error}") from error
        if not first:
            return "0-0", "0-0"
        return first[0][0].decode(), last[0][0].decode()

    async def read_run(
        self, thread_id: str, run_id: str, after_seq: int, block: float
    ) -> list[RunEvents] | None:
        found = await self._read(run_stream_key(thread_id, run_id), f"0-{after_seq}", 1000, block)
        return [RunEvents(int(fields[b"s"]), fields[b"e"].split(b"\n")) for _, fields in found]

    async def _read(
        self, key: str, after: str, count: int, block: float
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        try:
            answer = await self._blocking.xread(
                {key: after}, count=count, block=int(block * 1000) if block > 0 else None
            )
        except RedisError as error:
            raise BusUnavailable(f"Redis: {error}") from error
        return answer[0][1] if answer else []


def _feed_entry(entry_id: bytes, fields: dict[bytes, bytes]) -> FeedEntry:
    kind = fields[b"k"].decode()
    worker = fields[b"w"].decode()
    if kind != FEED_RUN:
        owner = fields.get(b"u", b"").decode()
        return FeedEntry(entry_id.decode(), kind, worker, owner=owner, note=fields[b"n"])
    events = fields[b"e"].split(b"\n")
    batches, start = [], 0
    for about in fields[b"m"].decode().split("\n"):
        thread_id, run_id, seq_from, size, owner = about.split(" ", 4)
        end = start + int(size)
        batches.append(EventBatch(thread_id, run_id, int(seq_from), events[start:end], owner))
        start = end
    return FeedEntry(entry_id.decode(), kind, worker, batches)
