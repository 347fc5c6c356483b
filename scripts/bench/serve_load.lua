-- wrk script for scripts/bench/serve_load.sh: POSTs JSON to the URL's path, cycling through
-- questions; FIELD (env) names the body's field ("query" for /v1/retrieve, "question" for
-- /v1/answer); UNIQUE=1 (env) appends the request's number so no two questions are the same
-- (what a soak wants: nothing can be served from a cache). Prints one RESULT line:
-- requests/s, p50 ms, p99 ms, non-2xx, socket errors.
local questions = {
  "How do I duplicate a file descriptor?",
  "send a signal to a process",
  "change the owner of a file",
  "list the contents of a directory",
  "create a new user account",
  "print the lines of a file that match a pattern",
  "mount a file system",
  "set the system time",
}
local field = os.getenv("FIELD") or "query"
local unique = os.getenv("UNIQUE") == "1"
local n = 0
request = function()
  n = n + 1
  local q = questions[(n % #questions) + 1]
  if unique then
    q = q .. " " .. n
  end
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" },
    '{"' .. field .. '": "' .. q .. '"}')
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %.1f %.2f %.2f %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.status, e.connect + e.read + e.write + e.timeout))
end
