-- wrk script for the task API: every request is made for a random user, with that user's own token.
--
--   wrk -t1 -c64 -d15s --latency -s bench/wrk/tasks.lua http://127.0.0.1:8000 -- DATA WORKLOAD SEED
--
-- DATA is a Lua file (written by bench/run.py) returning
--   { users = {"id", ...}, tokens = {"jwt", ...}, tasks = {{id, id, ...}, ...} }
-- WORKLOAD is list | get | create | update | mix | feed.
--   list    GET    /api/{u}/tasks?limit=20
--   feed    GET    /api/{u}/changes?limit=20       (the first page of an initial sync; ours only)
--   get     GET    /api/{u}/tasks/{id}
--   create  POST   /api/{u}/tasks
--   update  PATCH  /api/{u}/tasks/{id}            {"title": ...}
--   mix     70 % list, 10 % get, 10 % create, 5 % update, 5 % complete-or-delete:
--           PATCH .../{id}/complete (toggle) on a seeded task, or DELETE of a task this thread created
--           (seen in a 201's Location), so no request ever names a task that is gone.
-- done() prints one line, "BENCH_RESULT {json}", with the counts, errors, latency percentiles and statuses.

local threads = {}
local thread_count = 0

function setup(thread)
   thread_count = thread_count + 1
   thread:set("thread_id", thread_count)
   table.insert(threads, thread)
end

local users, tokens, tasks, nusers, workload
local index_of = {}
local auth = {}
local json_auth = {}
local created = {}
local track_created = false
statuses = {}

local titles = {
   "Buy milk", "Call the dentist", "Email the landlord", "Review PR #%d", "Pay invoice #%d",
   "Book flights to Lisbon", "Water the plants", "Prepare slides for Monday", "Renew passport",
   "Fix the bike tire", "Draft the release notes", "Order printer ink", "Read chapter %d",
}
local priorities = { "low", "medium", "medium", "high" }
local tag_choices = { "work", "home", "errands", "Urgent", "finance", "health", "family", "travel" }

function init(args)
   local data = dofile(args[1])
   workload = args[2] or "list"
   math.randomseed((tonumber(args[3]) or 1) * 7919 + (thread_id or 1))
   users, tokens, tasks = data.users, data.tokens, data.tasks
   nusers = #users
   for i = 1, nusers do
      index_of[users[i]] = i
      auth[i] = { ["Authorization"] = "Bearer " .. tokens[i] }
      json_auth[i] = { ["Authorization"] = "Bearer " .. tokens[i], ["Content-Type"] = "application/json" }
   end
   track_created = workload == "mix"
end

local function title()
   return string.format(titles[math.random(#titles)], math.random(10, 9999))
end

local function base(i)
   return "/api/" .. users[i] .. "/tasks"
end

local function seeded_task(i)
   local ids = tasks[i]
   return ids[math.random(#ids)]
end

local function list(i)
   return wrk.format("GET", base(i) .. "?limit=20", auth[i])
end

local function feed(i)
   return wrk.format("GET", "/api/" .. users[i] .. "/changes?limit=20", auth[i])
end

local function get(i)
   return wrk.format("GET", base(i) .. "/" .. seeded_task(i), auth[i])
end

local function create(i)
   local body = string.format(
      '{"title":"%s","priority":"%s","tags":["%s"],"due_date":"2026-12-24"}',
      title(), priorities[math.random(#priorities)], tag_choices[math.random(#tag_choices)]
   )
   return wrk.format("POST", base(i), json_auth[i], body)
end

local function update(i)
   local body = string.format('{"title":"%s"}', title())
   return wrk.format("PATCH", base(i) .. "/" .. seeded_task(i), json_auth[i], body)
end

local function complete_or_delete(i)
   if #created > 0 and math.random() < 0.5 then
      local task = table.remove(created)
      return wrk.format("DELETE", base(task[1]) .. "/" .. task[2], auth[task[1]])
   end
   return wrk.format("PATCH", base(i) .. "/" .. seeded_task(i) .. "/complete", auth[i])
end

local function mix(i)
   local r = math.random()
   if r < 0.70 then return list(i) end
   if r < 0.80 then return get(i) end
   if r < 0.90 then return create(i) end
   if r < 0.95 then return update(i) end
   return complete_or_delete(i)
end

local workloads = { list = list, get = get, create = create, update = update, mix = mix, feed = feed }

function request()
   return workloads[workload](math.random(nusers))
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   if track_created and status == 201 then
      local location = headers["location"] or headers["Location"]
      if location then
         local user, id = string.match(location, "^/api/([^/]+)/tasks/(%d+)$")
         local i = user and index_of[user]
         if i then table.insert(created, { i, id }) end
      end
   end
end

function done(summary, latency, requests)
   local totals = {}
   for _, thread in ipairs(threads) do
      for code, count in pairs(thread:get("statuses") or {}) do
         totals[code] = (totals[code] or 0) + count
      end
   end
   local codes = {}
   for code, count in pairs(totals) do
      table.insert(codes, string.format('"%s":%d', tostring(code), count))
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,'
         .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
         .. '"latency_us":{"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p95":%d,"p99":%d,"p999":%d},'
         .. '"statuses":{%s}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(95),
      latency:percentile(99), latency:percentile(99.9),
      table.concat(codes, ",")
   ))
end
