#!/usr/bin/env node
// One run of the real @ag-ui/client HttpAgent (1.0.0 or 0.0.59) whose connection may be cut
// mid-stream, resumed with Last-Event-ID, steered step by step from the test.
//   node resume_run.mjs plan.json      (stdin is the test's: command lines)
// The plan is run_agent.mjs's (one run) plus:
//   "connectUrl": the resume endpoint (POST, {threadId, protocolVersion?}, Last-Event-ID header)
//   "readyWhenText": announce "ready" once the answer streamed so far starts with this text
//
// Neither client resumes by itself: both SSE parsers skip `id:` lines and HttpAgent has no
// Last-Event-ID; their connectAgent() starts a fresh verifier, which refuses a stream that
// begins mid-run. So the resume lives under the client, in the fetch HttpAgent is given (an
// option of both versions): it forwards the server's bytes frame by frame (complete frames
// only, as the clients' parsers split them), notes each frame's `id:`, and when the
// connection fails it drops the partial frame, waits for the test's "resume" line on stdin,
// and POSTs connectUrl with `Last-Event-ID: <id of the last frame forwarded>` and the
// protocolVersion the client itself declared, splicing that response into the same body.
// The client's own parser, enforcement, verifier and message assembly run over the whole
// spliced stream, as one run.
//
// stdout: JSON lines, each with a "step":
//   {"step": "ready", "lastEventId", "text"}       the answer so far starts with readyWhenText
//   {"step": "cut", "lastEventId", "error"}        the connection failed; waiting for "resume"
//   {"step": "resumed", "status", "contentType"}   the resume request was answered
//   {"step": "report", "report": {...}}            run_agent.mjs's report, plus "wire":
//     [{"request": {url, headers, body}, "response": {status, contentType},
//       "frames": [{"id", "data"}], "end": "cut" | "complete", "error"}]  one per connection
// Exit 0 = the plan was executed (check runs[0].ok), 2 = harness failure.
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { runPlan, emitAndExit, failAndExit, HarnessError } from "./harness.mjs";

const step = (doc) => process.stdout.write(JSON.stringify(doc) + "\n");

/** Lines the test writes to our stdin, one at a time. */
function commands() {
  const queued = [];
  const waiting = [];
  createInterface({ input: process.stdin }).on("line", (line) => {
    const next = waiting.shift();
    if (next) next(line.trim());
    else queued.push(line.trim());
  });
  return (signal) =>
    new Promise((resolve, reject) => {
      if (queued.length) return resolve(queued.shift());
      const abort = () => reject(signal.reason ?? new Error("aborted"));
      if (signal?.aborted) return abort();
      signal?.addEventListener("abort", abort, { once: true });
      waiting.push((line) => {
        signal?.removeEventListener("abort", abort);
        resolve(line);
      });
    });
}

/** `id` and `data` of one SSE frame (without its blank line); null fields if it has none. */
function parseFrame(frame) {
  let id = null;
  const data = [];
  for (const line of frame.split("\n")) {
    if (line.startsWith("id:")) id = line.slice(3).replace(/^ /, "");
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  return { id, data: data.length ? data.join("\n") : null };
}

function resumingFetch(plan, nextCommand, wire) {
  return async (url, init) => {
    const declared = JSON.parse(init.body).protocolVersion; // what this client speaks
    const signal = init.signal;
    const record = (request, response) => {
      const segment = {
        request,
        response: { status: response.status, contentType: response.headers.get("content-type") },
        frames: [],
        end: null,
        error: null,
      };
      wire.push(segment);
      return segment;
    };
    const first = await fetch(url, init);
    let segment = record({ url, headers: init.headers, body: JSON.parse(init.body) }, first);
    if (!first.ok || !first.body) return first;

    const encoder = new TextEncoder();
    let streamed = "";
    let ready = false;
    let lastEventId = null;

    async function pump(controller) {
      let response = first;
      for (;;) {
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        try {
          for (;;) {
            const { done, value } = await reader.read();
            if (done) {
              if (buffer) controller.enqueue(encoder.encode(buffer)); // the clients flush it too
              segment.end = "complete";
              controller.close();
              return;
            }
            buffer += decoder.decode(value, { stream: true });
            const frames = buffer.split("\n\n");
            buffer = frames.pop();
            for (const frame of frames) {
              const { id, data } = parseFrame(frame);
              if (data !== null) {
                segment.frames.push({ id, data });
                const event = JSON.parse(data);
                if (event.type === "TEXT_MESSAGE_CONTENT") streamed += event.delta;
              }
              if (id !== null) lastEventId = id;
              controller.enqueue(encoder.encode(frame + "\n\n"));
            }
            if (!ready && plan.readyWhenText !== undefined && streamed.startsWith(plan.readyWhenText)) {
              ready = true;
              step({ step: "ready", lastEventId, text: streamed });
            }
          }
        } catch (error) {
          if (signal?.aborted) throw error; // the client gave up (its own abort): not a cut
          segment.end = "cut";
          segment.error = `${error.name}: ${error.message}${error.cause ? ` (${error.cause.message})` : ""}`;
          step({ step: "cut", lastEventId, error: segment.error });
        }
        // The partial frame in `buffer` is dropped: the resumed stream sends it again.
        const command = await nextCommand(signal);
        if (command !== "resume") throw new HarnessError(`expected "resume" on stdin, got ${JSON.stringify(command)}`);
        if (lastEventId === null) throw new Error("the connection failed before any event id: nothing to resume after");
        const headers = { ...init.headers, "Last-Event-ID": lastEventId };
        const body = { threadId: plan.threadId, ...(declared !== undefined && { protocolVersion: declared }) };
        response = await fetch(plan.connectUrl, { method: "POST", headers, body: JSON.stringify(body), signal });
        segment = record({ url: plan.connectUrl, headers, body }, response);
        step({ step: "resumed", status: response.status, contentType: segment.response.contentType });
        if (!response.ok || !response.body)
          throw new Error(`resume: HTTP ${response.status}: ${await response.text()}`);
      }
    }

    const body = new ReadableStream({
      start(controller) {
        pump(controller).catch((error) => controller.error(error));
      },
    });
    return new Response(body, { status: first.status, headers: first.headers });
  };
}

try {
  const arg = process.argv[2];
  if (!arg || arg === "-") throw new HarnessError("usage: node resume_run.mjs <plan.json>");
  let plan;
  try {
    plan = JSON.parse(readFileSync(arg, "utf8"));
  } catch (e) {
    throw new HarnessError(`cannot read plan ${arg}: ${e.message}`);
  }
  if (typeof plan.connectUrl !== "string") throw new HarnessError("plan.connectUrl must be a string");
  if (typeof plan.threadId !== "string") throw new HarnessError("plan.threadId must be a string");
  if (plan.runs?.length !== 1) throw new HarnessError("plan.runs must hold exactly one run");
  const wire = [];
  const report = await runPlan(plan, { transport: resumingFetch(plan, commands(), wire) });
  report.wire = wire;
  emitAndExit({ step: "report", report });
} catch (e) {
  failAndExit(e);
}
