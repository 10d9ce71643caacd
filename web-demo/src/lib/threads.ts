/** Threads of the signed-in user (GET/PATCH/DELETE /threads). */
import { api } from "./api";

export interface ThreadSummary {
  threadId: string;
  title: string | null;
  createdAt: string;
  updatedAt: string;
}

export function newThreadId(): string {
  return `thread_${crypto.randomUUID().replaceAll("-", "")}`;
}
