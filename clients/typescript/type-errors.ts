// Calls that must NOT compile: `tsc --strict` fails when any line below stops being an error (its
// expect-error directive is then unused). This keeps the generated types exact, not merely permissive.
import { apiClient } from "./client.js";

const api = apiClient("http://127.0.0.1:8000", () => "token");
const user = { path: { user_id: "alice" } };
const task = { path: { user_id: "alice", task_id: 1 } };

export async function wrongCalls(): Promise<void> {
  // @ts-expect-error a body that is not an object
  await api.PUT("/api/{user_id}/tasks/{task_id}", { params: task, body: 42 });
  // @ts-expect-error a misspelt field
  await api.PATCH("/api/{user_id}/tasks/{task_id}", { params: task, body: { titel: "x" } });
  // @ts-expect-error a priority that is not one of low, medium, high
  await api.POST("/api/{user_id}/tasks", { params: user, body: { title: "x", priority: "urgent" } });
  // @ts-expect-error a number for a date
  await api.POST("/api/{user_id}/tasks", { params: user, body: { title: "x", due_date: 20261224 } });
  // @ts-expect-error a string for a boolean
  await api.PATCH("/api/{user_id}/tasks/{task_id}/complete", { params: task, body: { completed: "yes" } });
  // @ts-expect-error a string for a boolean (PUT)
  await api.PUT("/api/{user_id}/tasks/{task_id}", { params: task, body: { completed: "true" } });
  // @ts-expect-error an update must name at least one field
  await api.PATCH("/api/{user_id}/tasks/{task_id}", { params: task, body: {} });
  // @ts-expect-error a create without its title
  await api.POST("/api/{user_id}/tasks", { params: user, body: { description: "no title" } });
  // @ts-expect-error tags are a list of strings
  await api.POST("/api/{user_id}/tasks", { params: user, body: { title: "x", tags: "home" } });
  // @ts-expect-error a bad enum in the query
  await api.GET("/api/{user_id}/tasks", { params: { ...user, query: { status: "done" } } });
  // @ts-expect-error a number for a date in the query
  await api.GET("/api/{user_id}/tasks", { params: { ...user, query: { due_before: 2026 } } });
  // @ts-expect-error an optional query value is left out, never null
  await api.GET("/api/{user_id}/tasks", { params: { ...user, query: { cursor: null } } });
  // @ts-expect-error a string for the task id
  await api.GET("/api/{user_id}/tasks/{task_id}", { params: { path: { user_id: "alice", task_id: "1" } } });
  // @ts-expect-error a route that does not exist
  await api.GET("/api/{user_id}/todos", { params: user });

  const { data } = await api.GET("/api/{user_id}/tasks/{task_id}", { params: task });
  if (data) {
    // @ts-expect-error responses are typed too: completed is a boolean
    const completed: string = data.completed;
    // @ts-expect-error and due_date a string or null
    const due: number = data.due_date;
    void completed;
    void due;
  }
}
