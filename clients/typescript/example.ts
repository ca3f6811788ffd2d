// Every route of todo-backend through the typed client, errors included: run against a live server with
//   API_URL=http://127.0.0.1:8000 USER_ID=alice TOKEN=$(uv run manage.py createtoken alice) node dist/example.js
// (after `npx tsc -p tsconfig.json`). Each step checks what it got and prints one line; any surprise exits non-zero.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";

import createClient from "openapi-fetch";

import { apiClient, nextCursor, type Problem, type Task } from "./client.js";
import type { paths } from "./schema.js";

const baseUrl = process.env.API_URL ?? "http://127.0.0.1:8000";
const userId = process.env.USER_ID ?? "alice";
const token = process.env.TOKEN ?? "";
const api = apiClient(baseUrl, () => token);
const user = { path: { user_id: userId } };
let steps = 0;

function ok(step: string): void {
  steps += 1;
  console.log(`ok ${steps} ${step}`);
}

function problem(error: Problem | undefined, status: number): Problem {
  assert.ok(error, `expected a ${status} problem`);
  assert.equal(error.status, status);
  assert.ok(error.type.startsWith("urn:todo-backend:problem:"));
  return error;
}

async function main(): Promise<void> {
  // Health probes: no token needed.
  const anonymous = createClient<paths>({ baseUrl });
  const live = await anonymous.GET("/health");
  assert.equal(live.data?.status, "ok");
  const ready = await anonymous.GET("/health/ready");
  assert.equal(ready.data?.status, "ok");
  ok("GET /health and /health/ready");

  // Create: only the title is required; defaults fill the rest. Location and ETag come back.
  const created = await api.POST("/api/{user_id}/tasks", {
    params: user,
    body: { title: "Buy milk", description: "2 litres", due_date: "2026-12-24T18:00:00+01:00", tags: ["home"] },
  });
  assert.equal(created.response.status, 201);
  const task: Task = created.data!;
  assert.equal(task.title, "Buy milk");
  assert.equal(task.completed, false);
  assert.equal(task.priority, "medium");
  assert.equal(task.due_date, "2026-12-24T17:00:00Z");
  assert.equal(created.response.headers.get("Location"), `/api/${userId}/tasks/${task.id}`);
  const firstTag = created.response.headers.get("ETag");
  assert.match(firstTag ?? "", /^"\d+-1"$/);
  ok("POST /api/{user_id}/tasks");

  // Idempotency-Key: the retry replays the first response and creates nothing.
  const key = randomUUID();
  const once = await api.POST("/api/{user_id}/tasks", {
    params: { ...user, header: { "Idempotency-Key": key } },
    body: { title: "Pay rent", priority: "high" },
  });
  const again = await api.POST("/api/{user_id}/tasks", {
    params: { ...user, header: { "Idempotency-Key": key } },
    body: { title: "Pay rent", priority: "high" },
  });
  assert.equal(again.response.headers.get("Idempotent-Replayed"), "true");
  assert.equal(again.data?.id, once.data?.id);
  ok("POST with Idempotency-Key, replayed");

  // Read one task, with its ETag.
  const read = await api.GET("/api/{user_id}/tasks/{task_id}", { params: { path: { user_id: userId, task_id: task.id } } });
  assert.deepEqual(read.data, task);
  assert.equal(read.response.headers.get("ETag"), firstTag);
  ok("GET /api/{user_id}/tasks/{task_id}");

  // PUT and PATCH with If-Match: the current tag succeeds, a stale one is a 412 and changes nothing.
  const taskPath = { path: { user_id: userId, task_id: task.id } };
  const put = await api.PUT("/api/{user_id}/tasks/{task_id}", {
    params: { ...taskPath, header: { "If-Match": firstTag! } },
    body: { title: "Buy oat milk", priority: "low", due_date: null },
  });
  assert.equal(put.data?.title, "Buy oat milk");
  assert.equal(put.data?.due_date, null);
  const secondTag = put.response.headers.get("ETag")!;
  assert.notEqual(secondTag, firstTag);
  const stale = await api.PATCH("/api/{user_id}/tasks/{task_id}", {
    params: { ...taskPath, header: { "If-Match": firstTag! } },
    body: { completed: true },
  });
  assert.equal(stale.response.status, 412);
  assert.equal(problem(stale.error, 412).task?.title, "Buy oat milk"); // the current task, to merge with
  assert.equal(stale.response.headers.get("ETag"), secondTag);
  const patched = await api.PATCH("/api/{user_id}/tasks/{task_id}", {
    params: { ...taskPath, header: { "If-Match": secondTag } },
    body: { tags: ["shop", "home"] },
  });
  assert.deepEqual(patched.data?.tags, ["shop", "home"]);
  ok("PUT and PATCH with If-Match (current tag: 200, stale tag: 412)");

  // Complete: a body sets the state; no body toggles it.
  const done = await api.PATCH("/api/{user_id}/tasks/{task_id}/complete", { params: taskPath, body: { completed: true } });
  assert.equal(done.data?.completed, true);
  const toggled = await api.PATCH("/api/{user_id}/tasks/{task_id}/complete", { params: taskPath });
  assert.equal(toggled.data?.completed, false);
  ok("PATCH /complete with and without a body");

  // List, a page at a time, following Link until there is none; X-Total-Count counts every match.
  const run = randomUUID().slice(0, 8); // a tag of this run's own, so the example can run again on the same data
  for (const title of ["Walk", "Read", "Cook"]) {
    await api.POST("/api/{user_id}/tasks", { params: user, body: { title, tags: [run] } });
  }
  const seen: string[] = [];
  let cursor: string | undefined;
  let pages = 0;
  do {
    const page = await api.GET("/api/{user_id}/tasks", {
      params: { ...user, query: { tag: [run], sort: "title", limit: 2, cursor } },
    });
    assert.ok(page.data, "a page");
    assert.equal(page.response.headers.get("X-Total-Count"), "3");
    seen.push(...page.data.map((t) => t.title));
    cursor = nextCursor(page.response);
    pages += 1;
  } while (cursor !== undefined);
  assert.deepEqual(seen, ["Cook", "Read", "Walk"]);
  assert.equal(pages, 2);
  const filtered = await api.GET("/api/{user_id}/tasks", {
    params: { ...user, query: { priority: ["high"], status: "pending", due_before: "2030-01-01" } },
  });
  assert.ok(filtered.data);
  ok("GET /api/{user_id}/tasks, paging through Link");

  // Errors: every problem of a body at once, each with its field; enum errors list the allowed values.
  const bad = await api.POST("/api/{user_id}/tasks", {
    params: user,
    body: { title: "   ", due_date: "next tuesday", tags: ["a", "A"] },
  });
  const invalid = problem(bad.error, 400);
  assert.deepEqual(
    invalid.errors?.map((e) => e.field),
    ["title", "due_date", "tags"],
  );
  const badQuery = await api.GET("/api/{user_id}/tasks", {
    params: { ...user, query: { limit: 0 } },
  });
  assert.equal(problem(badQuery.error, 400).errors?.[0]?.field, "limit");
  const tooMany = await api.PATCH("/api/{user_id}/tasks/{task_id}", {
    params: taskPath,
    body: { tags: Array.from({ length: 21 }, (_, i) => `tag${i}`) },
  });
  assert.equal(problem(tooMany.error, 400).errors?.[0]?.field, "tags");
  ok("400s name every bad field");

  const noToken = await anonymous.GET("/api/{user_id}/tasks", { params: user });
  problem(noToken.error, 401);
  assert.match(noToken.response.headers.get("WWW-Authenticate") ?? "", /^Bearer/);
  const someoneElse = await api.GET("/api/{user_id}/tasks", { params: { path: { user_id: `${userId}-other` } } });
  problem(someoneElse.error, 403);
  ok("401 without a token, 403 on another user's tasks");

  // Delete with If-Match; then the task is gone (404).
  const current = await api.GET("/api/{user_id}/tasks/{task_id}", { params: taskPath });
  const deleted = await api.DELETE("/api/{user_id}/tasks/{task_id}", {
    params: { ...taskPath, header: { "If-Match": current.response.headers.get("ETag")! } },
  });
  assert.equal(deleted.response.status, 204);
  const gone = await api.GET("/api/{user_id}/tasks/{task_id}", { params: taskPath });
  problem(gone.error, 404);
  ok("DELETE with If-Match, then 404");

  // The trash: the deleted task is there, newest deletion first; restore brings it back with its id.
  const trash = await api.GET("/api/{user_id}/trash", { params: { ...user, query: { limit: 200 } } });
  assert.ok(trash.data?.some((t) => t.id === task.id && typeof t.deleted_at === "string"));
  const restored = await api.POST("/api/{user_id}/trash/{task_id}/restore", { params: taskPath });
  assert.equal(restored.data?.id, task.id);
  assert.match(restored.response.headers.get("ETag") ?? "", /^"\d+-\d+"$/);
  ok("GET /trash, POST /trash/{task_id}/restore");

  // The change feed: an initial sync to has_more: false, then what changed after the kept cursor.
  const local = new Map<number, Task>();
  let feedCursor: string | undefined;
  for (;;) {
    const page = await api.GET("/api/{user_id}/changes", { params: { ...user, query: { limit: 50, cursor: feedCursor } } });
    assert.ok(page.data, "a feed page");
    for (const t of page.data.tasks) local.set(t.id, t);
    for (const d of page.data.deleted) local.delete(d.id);
    feedCursor = page.data.cursor;
    if (!page.data.has_more) break;
  }
  assert.ok(local.has(task.id));

  // A batch, all or nothing: a create named by ref, then an update of it, then a delete.
  const batch = await api.POST("/api/{user_id}/batch", {
    params: user,
    body: {
      atomic: true,
      operations: [
        { op: "create", ref: "n", data: { title: "From a batch" } },
        { op: "update", ref: "n", data: { priority: "high" } },
        { op: "delete", id: task.id },
      ],
    },
  });
  assert.deepEqual(batch.data?.results.map((r) => r.status), [201, 200, 204]);
  const fromBatch = batch.data!.results[0]!.task!;
  const failed = await api.POST("/api/{user_id}/batch", {
    params: user,
    body: { atomic: true, operations: [{ op: "update", id: task.id, data: { title: "in the trash" } }] },
  });
  assert.equal(problem(failed.error, 409).errors?.[0]?.field, "operations[0]");
  ok("POST /batch (atomic: 200 with every result, then 409 naming the failed operation)");

  const changed = await api.GET("/api/{user_id}/changes", { params: { ...user, query: { cursor: feedCursor } } });
  assert.ok(changed.data);
  assert.ok(changed.data.tasks.some((t) => t.id === fromBatch.id && t.priority === "high"));
  assert.ok(changed.data.deleted.some((d) => d.id === task.id));
  const forged = await api.GET("/api/{user_id}/changes", { params: { ...user, query: { cursor: "not-a-cursor" } } });
  problem(forged.error, 400);
  ok("GET /changes: initial sync, then the batch's changes after the cursor; a bad cursor is a 400");

  const purged = await api.DELETE("/api/{user_id}/trash/{task_id}", { params: taskPath });
  assert.equal(purged.response.status, 204);
  const notInTrash = await api.POST("/api/{user_id}/trash/{task_id}/restore", { params: taskPath });
  problem(notInTrash.error, 404);
  ok("DELETE /trash/{task_id} purges for good");

  console.log(`example: ${steps} steps passed`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
