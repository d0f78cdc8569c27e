-- wrk script for priming (run.sh, before each run of a tproxy variant with many peers):
-- exit as soon as PRIME_REQUESTS responses have arrived (run wrk with -t1). wrk itself would
-- wait for its whole -d duration, so this ends the process; run.sh times it.
local limit = tonumber(os.getenv("PRIME_REQUESTS") or "0")
local seen = 0
local bad = 0
response = function(status, headers, body)
  seen = seen + 1
  if status ~= 200 then bad = bad + 1 end
  if seen >= limit then
    io.write(string.format("PRIMED %d %d\n", seen, bad))
    io.flush()
    os.exit(bad == 0 and 0 or 1)
  end
end
