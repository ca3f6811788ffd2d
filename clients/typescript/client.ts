// A typed client for todo-backend: openapi-fetch over the types that openapi-typescript generates from the
// server's own OpenAPI document (schema.d.ts; regenerate with `npm run generate`).
import createClient, { type Middleware } from "openapi-fetch";

import type { components, paths } from "./schema.js";

export type Task = components["schemas"]["TaskRead"];
export type NewTask = components["schemas"]["TaskCreate"];
export type TaskChanges = components["schemas"]["TaskUpdate"];
export type Problem = components["schemas"]["ProblemDetail"];

/** A client whose every request carries `Authorization: Bearer <token>` (from `getToken`, asked per request). */
export function apiClient(baseUrl: string, getToken: () => string | Promise<string>) {
  const client = createClient<paths>({ baseUrl });
  const bearer: Middleware = {
    async onRequest({ request }) {
      request.headers.set("Authorization", `Bearer ${await getToken()}`);
      return request;
    },
  };
  client.use(bearer);
  return client;
}

export type ApiClient = ReturnType<typeof apiClient>;

/** The `cursor` of a list response's `Link: <…>; rel="next"` header, or `undefined` on the last page. */
export function nextCursor(response: Response): string | undefined {
  const link = response.headers.get("Link");
  const target = link?.match(/^<([^>]+)>; rel="next"$/)?.[1];
  return target === undefined ? undefined : (new URL(target, "http://x").searchParams.get("cursor") ?? undefined);
}
