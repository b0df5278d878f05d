-- bench.lua — the wrk script used for every target of tests/bench/run.sh.
--
-- Every target gets the same client work: init() reads a list of requests (one per
-- line: "<path> <bearer>"), pre-formats them once, and request() returns a random one,
-- so the client costs the same whether it talks to the broker, h2o or webdis (the
-- bearer header is sent to all of them; h2o and webdis ignore it).
--
--   wrk -t2 -c64 -d10s -s bench.lua http://127.0.0.1:PORT -- REQUESTS_FILE [PATH_OVERRIDE]
--
-- PATH_OVERRIDE, when given, replaces every path (h2o, webdis, /healthz) but keeps the
-- headers of the list. done() prints one line "BENCH {json}" with requests/s, latency
-- percentiles (µs), socket errors, the exact count of non-2xx responses (by status) and the
-- latency histogram. wrk corrects its latency figures for coordinated omission before done()
-- (src/stats.c, stats_correct); bench.py also reports them with the correction undone.

-- BENCH_PACE_MS (environment), when set, makes each connection wait that long between an
-- answer and its next request (wrk's delay()): a paced load below the machine's limit.
local pace = tonumber(os.getenv("BENCH_PACE_MS") or "")
if pace then
   function delay()
      return pace
   end
end

local threads = {}
local reqs = {}
local n = 0
non2xx = 0
statuses = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   local file, override = args[1], args[2]
   math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
   for line in io.lines(file) do
      local path, bearer = line:match("^(%S+)%s+(%S+)$")
      if path then
         n = n + 1
         reqs[n] = wrk.format("GET", override or path, {["Authorization"] = "Bearer " .. bearer})
      end
   end
   if n == 0 then
      error("no requests in " .. tostring(file))
   end
end

function request()
   return reqs[math.random(n)]
end

function response(status, headers, body)
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
      statuses[status] = (statuses[status] or 0) + 1
   end
end

function done(summary, latency, requests)
   local bad, by = 0, {}
   for _, t in ipairs(threads) do
      bad = bad + (t:get("non2xx") or 0)
      for s, c in pairs(t:get("statuses") or {}) do
         by[s] = (by[s] or 0) + c
      end
   end
   local parts = {}
   for s, c in pairs(by) do
      table.insert(parts, string.format('"%d":%d', s, c))
   end
   -- the histogram itself (value µs, count), corrected like the percentiles: bench.py undoes
   -- the correction. latency(i) walks the histogram from its start on every call, so a very
   -- wide one is left out.
   local hist = {}
   if #latency * (latency.max - latency.min + 1) <= 2e9 then
      for i = 1, #latency do
         local v, c = latency(i)
         hist[i] = string.format("[%d,%d]", v, c)
      end
   end
   local e = summary.errors
   local secs = summary.duration / 1e6
   io.write(string.format(
      'BENCH {"requests":%d,"duration_s":%.3f,"rps":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
      '"p999_us":%d,"max_us":%d,"mean_us":%.1f,"non2xx":%d,"err_connect":%d,"err_read":%d,' ..
      '"err_write":%d,"err_timeout":%d,"bytes":%d,"by_status":{%s},"duration_us":%d,"hist":[%s]}\n',
      summary.requests, secs, summary.requests / secs,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max, latency.mean, bad,
      e.connect, e.read, e.write, e.timeout, summary.bytes, table.concat(parts, ","),
      summary.duration, table.concat(hist, ",")))
end
