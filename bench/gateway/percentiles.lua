-- wrk script: prints one line of latency percentiles (ms) and requests/s,
-- finer than --latency in the tail (p99.5, p99.9, p99.99).
done = function(summary, latency, requests)
  local out = {}
  for _, p in ipairs({50, 75, 90, 95, 99, 99.5, 99.9, 99.99}) do
    out[#out + 1] = string.format("p%s=%.2f", p, latency:percentile(p) / 1000)
  end
  out[#out + 1] = string.format("max=%.2f rps=%.0f", latency.max / 1000,
    summary.requests / (summary.duration / 1e6))
  io.write(table.concat(out, " ") .. "\n")
end
