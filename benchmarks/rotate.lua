-- wrk script: POST a rotating set of request bodies (one file per body), all with the same Content-Type.
-- Usage: wrk -s rotate.lua URL -- CONTENT_TYPE FILE [FILE ...]
local bodies = {}
local content_type
local counter = 0

function init(args)
  content_type = args[1]
  for i = 2, #args do
    local file = assert(io.open(args[i], "rb"))
    bodies[#bodies + 1] = file:read("*a")
    file:close()
  end
end

function request()
  counter = counter + 1
  local body = bodies[(counter % #bodies) + 1]
  return wrk.format("POST", nil, { ["Content-Type"] = content_type }, body)
end

function done(summary, latency, requests)
  io.write(string.format("JSON {\"requests\": %d, \"seconds\": %.3f, \"errors_status\": %d, \"errors_connect\": %d, " ..
    "\"errors_read\": %d, \"errors_write\": %d, \"errors_timeout\": %d, \"p50_ms\": %.3f, \"p90_ms\": %.3f, \"p99_ms\": %.3f}\n",
    summary.requests, summary.duration / 1e6, summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
    latency:percentile(99) / 1e3))
end
