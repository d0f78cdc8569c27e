-- wrk script: heartbeats of 10,000 distinct backends (/upstream/add of
-- 127.0.0.1:1..10000 in turn) on keep-alive connections, against the admin
-- listener: wrk -t1 -c8 -d10s -s bench/tools/wrk_heartbeat.lua http://127.0.0.1:9180
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/upstream/add?host=127.0.0.1&port=" .. (n % 10000 + 1))
end
