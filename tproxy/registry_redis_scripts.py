# -*- test-case-name: tests.test_registry_redis -*-
"""
The Lua scripts of the Redis registry (:mod:`tproxy.registry_redis`): each
write of a registration or a route, the expiry sweep, the snapshot and the
restore after Redis lost its data run as one script, atomically.  Every
script that changes something bumps the version counter, stamps what it
wrote with it and publishes the change (see the registry's module
docstring for the keys).
"""

import hashlib

__all__ = ["SCRIPTS"]

_PRELUDE = """
local PEERS, EXPIRY, GROUPS, ROUTES = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local VERSION, ROUTESEQ, EPOCH = KEYS[5], KEYS[6], KEYS[7]
local CHANNEL, WRITER = string.match(ARGV[1], '^([^ ]*) (.*)$')
local changes = {}
local v = nil
local function bump()
  if not v then v = redis.call('INCR', VERSION) end
  return v
end
local function group_rec(g)
  local raw = redis.call('HGET', GROUPS, g)
  if raw then return cjson.decode(raw) end
  return {n = 0}
end
local written = {}
local function put_peer(member, rec)
  rec.v = bump()
  redis.call('HSET', PEERS, member, cjson.encode(rec))
  redis.call('ZADD', EXPIRY, rec.x, member)
  -- one change per member and message (they share the version): the last
  local at = written[member] or #changes + 1
  written[member] = at
  changes[at] = {'p', member, rec, v}
end
local function count_peer(g, delta)
  local grec = group_rec(g)
  grec.n = grec.n + delta
  if grec.n <= 0 then
    redis.call('HDEL', GROUPS, g)
    if grec.r ~= nil then changes[#changes + 1] = {'g', g, false, bump()} end
  else
    grec.v = bump()
    redis.call('HSET', GROUPS, g, cjson.encode(grec))
  end
end
local function del_peer(member, rec)
  bump()
  redis.call('HDEL', PEERS, member)
  redis.call('ZREM', EXPIRY, member)
  changes[#changes + 1] = {'p', member, false, v}
  count_peer(rec.g, -1)
end
local function publish()
  if #changes == 0 then return '' end
  local msg = cjson.encode({v = v, c = changes})
  -- the writer applies its reply: it skips its own message unparsed
  redis.call('PUBLISH', CHANNEL, WRITER .. ' ' .. msg)
  return msg
end
"""

#: ARGV[1] of every script: "<channel> <writer>".
#: ARGV: channel, now, ttl, then for each registration (the heartbeats of one
#: reactor turn, in order): group, host, port, weight|'', max_conns|'',
#: routable|''.  Returns {message, {created 0|1 of each}}: one version, one
#: published message for them all.
_REGISTER = _PRELUDE + """
local now, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
local created = {}
for i = 4, #ARGV, 6 do
  local g = ARGV[i]
  local member = g .. ' ' .. ARGV[i + 1] .. ' ' .. ARGV[i + 2]
  local raw = redis.call('HGET', PEERS, member)
  local rec = nil
  local new = 0
  if raw then
    rec = cjson.decode(raw)
    if rec.x <= now then rec = nil end
  end
  if rec == nil then
    rec = {g = g, h = ARGV[i + 1], p = tonumber(ARGV[i + 2]), w = 1, m = 0, c = now}
    new = 1
  end
  if ARGV[i + 3] ~= '' then rec.w = tonumber(ARGV[i + 3]) end
  if ARGV[i + 4] ~= '' then rec.m = tonumber(ARGV[i + 4]) end
  rec.hb = now
  rec.x = now + ttl
  put_peer(member, rec)
  if not raw then count_peer(g, 1) end
  if ARGV[i + 5] ~= '' then
    local r = ARGV[i + 5] == '1'
    local grec = group_rec(g)
    if grec.r ~= r then
      grec.r = r
      grec.v = bump()
      redis.call('HSET', GROUPS, g, cjson.encode(grec))
      changes[#changes + 1] = {'g', g, {r = r}, v}
    end
  end
  created[#created + 1] = new
end
return {publish(), created}
"""

#: ARGV[1] of every script: "<channel> <writer>".
#: ARGV: channel, group, host, port, now.  Returns {message, 0 absent | 1
#: expired | 2 removed}.
_DEREGISTER = _PRELUDE + """
local member = ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4]
local raw = redis.call('HGET', PEERS, member)
if not raw then return {'', 0} end
local rec = cjson.decode(raw)
del_peer(member, rec)
if rec.x <= tonumber(ARGV[5]) then return {publish(), 1} end
return {publish(), 2}
"""

#: ARGV: channel, now, limit.  Returns the message of what it removed.
_SWEEP = _PRELUDE + """
local now = tonumber(ARGV[2])
local members = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(members) do
  local raw = redis.call('HGET', PEERS, member)
  if raw then
    local rec = cjson.decode(raw)
    if rec.x <= now then del_peer(member, rec) else redis.call('ZADD', EXPIRY, rec.x, member) end
  else
    redis.call('ZREM', EXPIRY, member)
  end
end
return publish()
"""

#: ARGV: channel, new epoch (used when there is none).  Returns {version,
#: epoch, peers, groups, routes} (the hashes flat).
_SNAPSHOT = _PRELUDE + """
local epoch = redis.call('GET', EPOCH)
if not epoch then
  epoch = ARGV[2]
  redis.call('SET', EPOCH, epoch)
end
return {redis.call('GET', VERSION) or '0', epoch, redis.call('HGETALL', PEERS),
        redis.call('HGETALL', GROUPS), redis.call('HGETALL', ROUTES)}
"""

#: ARGV: channel, the epoch this instance knew, a new epoch, now, ttl, then
#: the JSON records of the registrations it held while Redis was away (each
#: present one lives at least one more TTL; an absent one is put back only
#: if Redis lost its data: another epoch) and of its shared routes (put back
#: only if Redis lost its data).  Returns {message, epoch, lost}.
_RESTORE = _PRELUDE + """
local epoch = redis.call('GET', EPOCH)
local lost = 0
if not epoch then
  epoch = ARGV[3]
  redis.call('SET', EPOCH, epoch)
  lost = 1
elseif epoch ~= ARGV[2] then
  lost = 1
end
local now, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
for i = 6, #ARGV do
  local rec = cjson.decode(ARGV[i])
  local member = rec.g and (rec.g .. ' ' .. rec.h .. ' ' .. rec.p)
  local raw = member and redis.call('HGET', PEERS, member)
  if rec.route then
    if lost == 1 and redis.call('HEXISTS', ROUTES, rec.route) == 0 then
      local route = {s = rec.s, q = rec.q, v = bump()}
      redis.call('HSET', ROUTES, rec.route, cjson.encode(route))
      if tonumber(redis.call('GET', ROUTESEQ) or '0') < rec.q then
        redis.call('SET', ROUTESEQ, rec.q)
      end
      changes[#changes + 1] = {'r', rec.route, route, v}
    end
  elseif raw then
    local cur = cjson.decode(raw)
    if cur.x < now + ttl then
      cur.x = now + ttl
      put_peer(member, cur)
    end
  elseif lost == 1 then
    rec.x = now + ttl
    put_peer(member, rec)
    count_peer(rec.g, 1)
  end
end
return {publish(), epoch, lost}
"""

#: ARGV: channel, name, spec (JSON text), create_only ('1'/'0').  Returns
#: {message, 0 exists | 1 created | 2 replaced}.
_PUT_ROUTE = _PRELUDE + """
local raw = redis.call('HGET', ROUTES, ARGV[2])
if raw and ARGV[4] == '1' then return {'', 0} end
local seq
if raw then seq = cjson.decode(raw).q else seq = redis.call('INCR', ROUTESEQ) end
local rec = {s = ARGV[3], q = seq, v = bump()}
redis.call('HSET', ROUTES, ARGV[2], cjson.encode(rec))
changes[#changes + 1] = {'r', ARGV[2], rec, v}
if raw then return {publish(), 2} end
return {publish(), 1}
"""

#: ARGV: channel, name.  Returns {message, 0 absent | 1 deleted}.
_DELETE_ROUTE = _PRELUDE + """
if redis.call('HDEL', ROUTES, ARGV[2]) == 0 then return {'', 0} end
changes[#changes + 1] = {'r', ARGV[2], false, bump()}
return {publish(), 1}
"""


class _Script(object):
    """A Lua script, sent by ``EVALSHA`` (``EVAL`` when Redis does not know it)."""

    def __init__(self, text):
        self.text = text
        self.sha = hashlib.sha1(text.encode("utf-8")).hexdigest()


SCRIPTS = dict((name, _Script(text)) for name, text in [
    ("register", _REGISTER), ("deregister", _DEREGISTER), ("sweep", _SWEEP),
    ("snapshot", _SNAPSHOT), ("restore", _RESTORE), ("put_route", _PUT_ROUTE),
    ("delete_route", _DELETE_ROUTE)])
