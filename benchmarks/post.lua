-- wrk script: POST the JSON file named by the first script argument to the URL, then print one
-- machine-readable summary line (the same fields as loadgen.py) for bench.py to parse.
--   wrk -t1 -c16 -d10s -s post.lua http://127.0.0.1:8000/predict -- body.json

function init(args)
  local file = assert(io.open(args[1], "rb"), "cannot open the request body file")
  wrk.body = file:read("*a")
  file:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_s": %.6f, "http_errors": %d, "socket_errors": %d, '
      .. '"p50_ms": %.4f, "p99_ms": %.4f, "mean_ms": %.4f, "max_ms": %.4f}\n',
    summary.requests,
    summary.duration / 1e6,
    e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1e3,
    latency:percentile(99) / 1e3,
    latency.mean / 1e3,
    latency.max / 1e3
  ))
end
