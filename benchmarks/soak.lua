-- wrk script for the soak run: rotates valid and invalid request bodies; each request carries its expected
-- status in X-Request-ID, which the service echoes, so every response is checked against its own request.
-- Usage: wrk -s soak.lua URL -- FILE:CONTENT_TYPE:PATH:STATUS [...]
local cases = {}
local counter = 0
local unexpected = 0

function init(args)
  for i = 1, #args do
    local file, content_type, path, status = args[i]:match("^(.-):(.-):(.-):(%d+)$")
    local handle = assert(io.open(file, "rb"))
    cases[#cases + 1] = { body = handle:read("*a"), type = content_type, path = path, status = status }
    handle:close()
  end
end

function request()
  counter = counter + 1
  local case = cases[(counter % #cases) + 1]
  local headers = { ["Content-Type"] = case.type, ["X-Request-ID"] = "expect-" .. case.status .. "-" .. counter }
  return wrk.format("POST", case.path, headers, case.body)
end

function response(status, headers, body)
  local id = headers["x-request-id"] or headers["X-Request-ID"] or ""
  local expected = tonumber(id:match("^expect%-(%d+)%-"))
  local key = "status_" .. status  -- one global per status: wrk copies numbers, not tables, out of threads
  _G[key] = (_G[key] or 0) + 1
  if expected ~= status then
    unexpected = unexpected + 1
  end
end

local threads = {}
function setup(thread)
  threads[#threads + 1] = thread
end

function done(summary, latency, requests)
  local total_unexpected = 0
  local parts = {}
  for _, thread in ipairs(threads) do
    total_unexpected = total_unexpected + (thread:get("unexpected") or 0)
  end
  for status = 100, 599 do
    local n = 0
    for _, thread in ipairs(threads) do n = n + (thread:get("status_" .. status) or 0) end
    if n > 0 then parts[#parts + 1] = string.format("\"%d\": %d", status, n) end
  end
  io.write(string.format("JSON {\"requests\": %d, \"seconds\": %.3f, \"unexpected\": %d, \"errors_connect\": %d, " ..
    "\"errors_timeout\": %d, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"statuses\": {%s}}\n", summary.requests,
    summary.duration / 1e6, total_unexpected, summary.errors.connect, summary.errors.timeout,
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3, table.concat(parts, ", ")))
end
