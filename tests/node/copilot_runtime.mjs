// The official path, exactly as the README shows it: CopilotKit's own Node runtime
// (@copilotkit/runtime 1.75, CopilotRuntime) with an HttpAgent pointed at Citadel's /agui.
// Serves the runtime's fetch handler in-process, asks its /info, drives one run through
// POST /agent/default/run, and prints a JSON report: the agents listed, the HTTP status and
// the AG-UI events the runtime streamed back to its (browser) client.
//
//   node copilot_runtime.mjs <citadel base URL> <threadId> <user text>
import { createRequire } from "node:module";

// No telemetry (no network here); stdout carries the report alone.
process.env.COPILOTKIT_TELEMETRY_DISABLED = "true";
console.log = console.info = (...args) => console.error(...args);
const { CopilotRuntime, createCopilotRuntimeHandler } = await import("@copilotkit/runtime/v2");

// The @ag-ui/client the runtime itself depends on (0.0.59), as an app's install dedupes it.
const runtimeRequire = createRequire(createRequire(import.meta.url).resolve("@copilotkit/runtime"));
const { HttpAgent } = runtimeRequire("@ag-ui/client");

const [base, threadId, text] = process.argv.slice(2);
if (!base || !threadId || !text) {
  console.error("usage: node copilot_runtime.mjs <citadel base URL> <threadId> <user text>");
  process.exit(2);
}

const runtime = new CopilotRuntime({
  agents: { default: new HttpAgent({ url: `${base}/agui` }) },
});
const handler = createCopilotRuntimeHandler({ runtime, basePath: "/api/copilotkit" });
const origin = "http://runtime.local/api/copilotkit";

const info = await (await handler(new Request(`${origin}/info`))).json();
const input = {
  threadId,
  runId: `run_${threadId}`,
  state: {},
  messages: [{ id: `msg_${threadId}`, role: "user", content: text }],
  tools: [],
  context: [],
  forwardedProps: {},
};
const response = await handler(
  new Request(`${origin}/agent/default/run`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify(input),
  }),
);
const body = await response.text();
const events = body
  .split("\n\n")
  .flatMap((frame) => frame.split("\n").filter((line) => line.startsWith("data:")))
  .map((line) => JSON.parse(line.slice(5)));
process.stdout.write(
  JSON.stringify({ agents: Object.keys(info.agents ?? {}), status: response.status, events }) + "\n",
);
