-- wrk workload from BENCHMARKS.md: POST ~4 KB OpenAI chat bodies, 8 system prompts, 1000
-- sessions (an x-session-id header for the hash-based peers), non-streaming, one output token.
-- WRK_TEXT=cjk-escaped: the system prompts in CJK characters, each sent as a \u escape (what
-- Python's json.dumps and requests send by default), about the same size.
local cjk_escaped = os.getenv("WRK_TEXT") == "cjk-escaped"
local systems = {}
for s = 1, 8 do
  local words = {}
  for w = 1, 420 do
    if cjk_escaped then
      words[w] = string.format("\\u%04x\\u%04x", 0x4e00 + (s * 97 + w) % 2000, 0x3041 + w % 80)
    else
      words[w] = string.format("policy%d-rule%d", s, w % 97)
    end
  end
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
-- requests, so c connections send about c * 1000 / WRK_DELAY_MS requests per second. The
-- connections start together and stay in step, so requests arrive in bursts of c.
local pace = tonumber(os.getenv("WRK_DELAY_MS") or "")
if pace then
  delay = function() return pace end
end

-- Spread mode (WRK_RATE=R WRK_CONNECTIONS=N, run with -tN -cN, one connection per thread): connection i
-- sends at fixed slots start + i * 1000 / R + k * N * 1000 / R ms, so requests arrive spread
-- out, about one at a time, as at a fixed rate. wrk's timers have millisecond resolution (a send
-- lands within about a millisecond of its slot: measured at 1000 req/s, 1 % of consecutive sends
-- came within 100 us of each other): use a rate whose spacing is whole milliseconds (1000 req/s
-- over 4 connections: one every ms).
local rate = tonumber(os.getenv("WRK_RATE") or "")
local connections = tonumber(os.getenv("WRK_CONNECTIONS") or "")
if rate and connections then
  local ffi = require("ffi")
  ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } cacheroute_timespec; int clock_gettime(int, cacheroute_timespec *); ]]
  local ts = ffi.new("cacheroute_timespec")
  local function now_ms()
    ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end
  local counter = 0
  setup = function(thread)
    thread:set("slot_index", counter)
    counter = counter + 1
  end
  local next_slot, period
  delay = function()
    local now = now_ms()
    if not next_slot then
      local spacing = 1000 / rate
      -- every thread aligns its slots to the same monotonic grid, shifted by its own index
      period = spacing * connections
      next_slot = (math.floor(now / period) + 1) * period + slot_index * spacing
    else
      next_slot = next_slot + period
      while next_slot < now do next_slot = next_slot + period end
    end
    return math.max(0, math.floor(next_slot - now + 0.5))
  end
end
