// Shared core of run_agent.mjs and replay.mjs: executes a "plan" with the REAL
// @ag-ui/client HttpAgent of the chosen version and returns a JSON-able report.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

/** Plan "client" value -> npm package name (0.0.59 is installed under an npm alias). */
export const CLIENTS = {
  "1.0.0": "@ag-ui/client",
  "0.0.59": "agui-client-0059",
};

/** A problem with the plan or the environment (exit code 2), not with the server. */
export class HarnessError extends Error {
  name = "HarnessError";
}

// ---------------------------------------------------------------------------
// Console capture. The clients report stripped fields, dropped events, failed
// patches etc. through console.warn/console.error only, so we record them.
// console.log/info/debug are captured too so that stdout carries nothing but
// our single JSON document.
// ---------------------------------------------------------------------------
let sink = null; // array receiving captured lines (the current run's warnings)
const topLevelWarnings = [];

const formatArg = (a) => {
  if (typeof a === "string") return a;
  if (a instanceof Error) return `${a.name}: ${a.message}`;
  try {
    return JSON.stringify(a);
  } catch {
    return String(a);
  }
};

for (const level of ["warn", "error", "log", "info", "debug"]) {
  console[level] = (...args) => {
    (sink ?? topLevelWarnings).push({ level, message: args.map(formatArg).join(" ") });
  };
}
// 1.0.0 silences its enforcement/compat warnings when this is set; we always want them.
delete process.env.SUPPRESS_TRANSFORMATION_WARNINGS;

/** Deep copy into plain JSON (drops undefined, turns Errors into {name,message}). */
const snap = (value) =>
  value === undefined
    ? undefined
    : JSON.parse(
        JSON.stringify(value, (_k, v) =>
          v instanceof Error ? { name: v.name, message: v.message } : typeof v === "bigint" ? String(v) : v,
        ),
      );

const describeError = (e) => ({
  name: e?.name ?? "Error",
  class: e?.constructor?.name ?? null, // e.g. "AGUIError", "ZodError" (their .name is often just "Error")
  message: e?.message ?? String(e),
});

function validatePlan(plan) {
  if (!plan || typeof plan !== "object" || Array.isArray(plan)) throw new HarnessError("plan must be a JSON object");
  if (typeof plan.url !== "string") throw new HarnessError("plan.url must be a string");
  if (!(plan.client in CLIENTS))
    throw new HarnessError(`plan.client must be one of ${Object.keys(CLIENTS).join(", ")}, got ${JSON.stringify(plan.client)}`);
  if (!Array.isArray(plan.runs)) throw new HarnessError("plan.runs must be an array");
  for (const [i, run] of plan.runs.entries()) {
    if (!run || typeof run !== "object" || Array.isArray(run)) throw new HarnessError(`plan.runs[${i}] must be an object`);
    if (run.appendMessages !== undefined && !Array.isArray(run.appendMessages))
      throw new HarnessError(`plan.runs[${i}].appendMessages must be an array`);
  }
}

async function loadClient(client) {
  const pkg = CLIENTS[client];
  try {
    const mod = await import(pkg);
    const { version } = require(`${pkg}/package.json`);
    if (version !== client) throw new Error(`${pkg} resolved to version ${version}, expected ${client}`);
    return mod;
  } catch (e) {
    throw new HarnessError(`cannot import ${pkg} (${client}): ${e.message}. Run 'npm ci' in tests/node.`);
  }
}

/**
 * Execute a plan (see README.md). Never throws for server/stream problems —
 * those end up in the per-run report; throws HarnessError for bad plans.
 * `transport` is the fetch under the client's (default: the global fetch), e.g.
 * resume_run.mjs's, which resumes a cut stream with Last-Event-ID.
 */
export async function runPlan(plan, { transport = fetch } = {}) {
  validatePlan(plan);
  const { HttpAgent } = await loadClient(plan.client);
  const timeoutMs = plan.timeoutMs ?? 60000;

  // What the client actually put on the wire for the current run (recorded by
  // wrapping the agent's fetch — both versions accept a `fetch` config option).
  let current = null;
  const recordingFetch = async (url, init) => {
    current.request = {
      url,
      method: init.method,
      headers: snap(init.headers),
      body: typeof init.body === "string" ? JSON.parse(init.body) : null,
    };
    const response = await transport(url, init);
    current.response = { status: response.status, contentType: response.headers.get("content-type") };
    return response;
  };

  const agent = new HttpAgent({
    url: plan.url,
    headers: plan.headers ?? {},
    threadId: plan.threadId,
    initialMessages: plan.messages ?? [],
    initialState: plan.state ?? {},
    fetch: recordingFetch,
  });

  const report = { client: plan.client, runs: [], warnings: topLevelWarnings };
  let stop = false;

  for (const run of plan.runs) {
    const rec = {
      runId: run.runId ?? null,
      skipped: stop,
      ok: false,
      error: null,
      events: [],
      runErrors: [],
      result: null,
      messages: null,
      state: null,
      pendingInterrupts: null,
      request: null,
      response: null,
      warnings: [],
    };
    report.runs.push(rec);
    if (stop) continue; // an earlier run threw: do not continue the thread

    current = rec;
    sink = rec.warnings;
    if (run.appendMessages?.length) agent.addMessages(snap(run.appendMessages));
    if ("setState" in run) agent.setState(snap(run.setState));

    // What an app does between runs, for ids only the server knows: answer every
    // unanswered tool call (a frontend tool handler), or answer every pending interrupt.
    if (run.answerToolCalls !== undefined) agent.addMessages(unansweredToolCalls(agent, run.answerToolCalls));
    const params = {};
    for (const key of ["runId", "tools", "context", "forwardedProps", "resume"]) {
      if (run[key] !== undefined) params[key] = snap(run[key]);
    }
    if (run.resumeAll !== undefined) {
      params.resume = (agent.pendingInterrupts ?? []).map((i) => ({ interruptId: i.id, ...snap(run.resumeAll) }));
    }
    // CopilotKit resumes an interrupted run under the interrupted run's id.
    if (run.reuseRunId) params.runId = report.runs.at(-2)?.runId ?? undefined;
    // NB: `resume` is passed to BOTH versions: 0.0.59's RunAgentParameters has it
    // too (src/agent/types.ts:53) and it enforces pending interrupts the same way.

    const subscriber = {
      onEvent: ({ event }) => void rec.events.push(snap(event)),
      onRunErrorEvent: ({ event }) => void rec.runErrors.push(snap(event)),
    };

    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => {
        agent.abortRun();
        const e = new Error(`run did not settle within ${timeoutMs} ms`);
        e.name = "HarnessTimeout";
        reject(e);
      }, timeoutMs);
    });
    try {
      const running = agent.runAgent(params, subscriber);
      running.catch(() => {}); // if the timeout wins, a late rejection must not crash us
      const res = await Promise.race([running, timeout]);
      rec.ok = true;
      rec.result = snap(res); // { result?, newMessages }
    } catch (e) {
      rec.error = describeError(e);
      stop = true;
    } finally {
      clearTimeout(timer);
    }
    // Let the clients' fire-and-forget callbacks (onFinalize, addMessages
    // notifications) run so their warnings land in this run's record.
    await new Promise((r) => setTimeout(r, 0));
    rec.runId ??= rec.request?.body?.runId ?? null; // client-generated when the plan gave none
    rec.messages = snap(agent.messages);
    rec.state = snap(agent.state) ?? null;
    rec.pendingInterrupts = snap(agent.pendingInterrupts ?? []);
    sink = null;
  }
  return report;
}

/** Tool messages answering every assistant tool call that has no result yet. */
function unansweredToolCalls(agent, content) {
  const answered = new Set(agent.messages.filter((m) => m.role === "tool").map((m) => m.toolCallId));
  return agent.messages
    .flatMap((m) => m.toolCalls ?? [])
    .filter((call) => !answered.has(call.id))
    .map((call) => ({ id: `answer-${call.id}`, role: "tool", toolCallId: call.id, content }));
}

/** Write one JSON document to stdout and exit once it is flushed. */
export function emitAndExit(doc, code = 0) {
  process.stdout.write(JSON.stringify(doc) + "\n", () => process.exit(code));
}

/** Report a harness failure on stderr and exit 2. */
export function failAndExit(e) {
  process.stderr.write(`harness error: ${e instanceof HarnessError ? e.message : e?.stack ?? e}\n`);
  process.exit(2);
}
