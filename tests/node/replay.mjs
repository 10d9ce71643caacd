#!/usr/bin/env node
// Feed recorded SSE stream file(s) through the real client pipeline.
//   node replay.mjs --client 0.0.59 --file stream.sse [--file next.sse ...] [--input input.json]
// A throwaway server on 127.0.0.1:<random> answers the i-th POST with the bytes
// of the i-th --file (the last file repeats), verbatim, as text/event-stream.
// --input is a plan without url/client (threadId, messages, state, headers,
// runs, timeoutMs). Without runs, one run per file is made. threadId and each
// run's runId default to the ids in the file's first RUN_STARTED, so the
// request matches the recording. Output/exit codes: as run_agent.mjs.
import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { runPlan, emitAndExit, failAndExit, HarnessError } from "./harness.mjs";

/** threadId/runId of the first RUN_STARTED frame in a recording, if any. */
function firstRunStarted(bytes) {
  for (const line of bytes.toString("utf8").split(/\r?\n/)) {
    if (!line.startsWith("data:")) continue;
    try {
      const ev = JSON.parse(line.slice(5));
      if (ev?.type === "RUN_STARTED") return ev;
    } catch {
      /* multi-line data or garbage: ignore, ids are only defaults */
    }
  }
  return {};
}

try {
  let args;
  try {
    args = parseArgs({
      options: {
        client: { type: "string" },
        file: { type: "string", multiple: true },
        input: { type: "string" },
      },
    }).values;
  } catch (e) {
    throw new HarnessError(e.message);
  }
  if (!args.client || !args.file?.length)
    throw new HarnessError("usage: node replay.mjs --client 1.0.0|0.0.59 --file stream.sse [--file ...] [--input input.json]");

  const read = (p) => {
    try {
      return readFileSync(p);
    } catch (e) {
      throw new HarnessError(`cannot read ${p}: ${e.message}`);
    }
  };
  const bodies = args.file.map(read);
  let input = {};
  if (args.input) {
    try {
      input = JSON.parse(read(args.input).toString("utf8"));
    } catch (e) {
      throw e instanceof HarnessError ? e : new HarnessError(`bad --input: ${e.message}`);
    }
  }

  let served = 0;
  const server = createServer((req, res) => {
    req.resume(); // drain the RunAgentInput body; the client records it itself
    req.on("end", () => {
      const body = bodies[Math.min(served++, bodies.length - 1)];
      res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
      res.end(body);
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));

  const starts = bodies.map(firstRunStarted);
  const runs = (input.runs ?? bodies.map(() => ({}))).map((run, i) => ({
    runId: starts[Math.min(i, starts.length - 1)].runId,
    ...run,
  }));
  const plan = {
    threadId: starts[0].threadId,
    ...input,
    runs,
    client: args.client,
    url: `http://127.0.0.1:${server.address().port}/agui`,
  };
  const report = await runPlan(plan);
  server.close();
  emitAndExit(report);
} catch (e) {
  failAndExit(e);
}
