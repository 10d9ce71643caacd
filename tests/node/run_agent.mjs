#!/usr/bin/env node
// Run the real @ag-ui/client HttpAgent (1.0.0 or 0.0.59) against a live AG-UI
// endpoint, following a JSON plan (see README.md).
//   node run_agent.mjs plan.json      |   node run_agent.mjs - < plan.json
// stdout: one JSON report. Exit 0 = plan executed (runs may still have failed),
// 2 = harness failure (bad plan, client not installed).
import { readFileSync } from "node:fs";
import { runPlan, emitAndExit, failAndExit, HarnessError } from "./harness.mjs";

try {
  const arg = process.argv[2];
  if (!arg) throw new HarnessError("usage: node run_agent.mjs <plan.json | ->");
  let plan;
  try {
    plan = JSON.parse(readFileSync(arg === "-" ? 0 : arg, "utf8"));
  } catch (e) {
    throw new HarnessError(`cannot read plan ${arg}: ${e.message}`);
  }
  emitAndExit(await runPlan(plan));
} catch (e) {
  failAndExit(e);
}
