-- wrk workload from BENCHMARKS.md: POST ~4 KB OpenAI chat bodies, 8 system prompts, 1000
-- sessions (an x-session-id header for the hash-based peers), non-streaming, one output token.
local systems = {}
for s = 1, 8 do
  local words = {}
  for w = 1, 420 do words[w] = string.format("policy%d-rule%d", s, w % 97) end
  systems[s] = table.concat(words, " ")
end
local bodies = {}
local sessions = {}
for i = 1, 1000 do
  local s = (i % 8) + 1
  local user = string.format("Session %d asks about order %d and the delivery window for item %d.", i, i * 7, i * 13)
  bodies[i] = string.format(
    '{"model":"cacheroute-demo","max_tokens":1,"messages":[{"role":"system","content":"%s"},{"role":"user","content":"%s"}]}',
    systems[s], user)
  sessions[i] = string.format("session-%d", i)
end
local n = 0
request = function()
  n = n + 1
  local i = (n % 1000) + 1
  return wrk.format("POST", "/v1/chat/completions",
    {["Content-Type"] = "application/json", ["X-Session-ID"] = sessions[i]}, bodies[i])
end

-- Paced mode (added latency at a moderate rate): each connection waits WRK_DELAY_MS between
-- requests, so c connections send about c * 1000 / WRK_DELAY_MS requests per second.
local pace = tonumber(os.getenv("WRK_DELAY_MS") or "")
if pace then
  delay = function() return pace end
end
