package redis

import (
	"strconv"
	"strings"

	goredis "github.com/redis/go-redis/v9"
)

// Bindings live in hash buckets (see the package doc): KEYS[1] is always
// the bucket and ARGV[1] the client id (a field of it) where there is one.
// A field's value is "<expiry>|<server>": the expiry in Redis-clock unix
// milliseconds (0: never), the server prefixed with '!' when pinned.
//
// Every script touches KEYS[1] only, so it runs on Redis Cluster whatever
// slot the bucket hashes to (TestScriptsTouchOneKey checks this). Every
// script that changes or removes a binding publishes "<backend>:<id>" on the
// invalidation channel in the same atomic step, for the agents' caches.
//
// Claim and move reply "1"+server when they wrote the binding, "0"+server
// when they returned the one in force (a pinned server keeps its '!'): a
// single bulk string is the cheapest reply to parse. Claim adds "2" (the
// binding in force, its TTL not reset: Redis refused the write) and "3"
// (no binding, none stored: the backend or bucket is full).
//
// No script walks more than a bounded part of a bucket: sweep and retime
// take one HSCAN step, and a claim does not add a field to a bucket of
// maxBucketFields (so deleteIf's HGETALL is bounded too).

// luaLib is prepended to every script.
const luaLib = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- parse splits a value into its expiry and server; a value not written by
-- stickyd reads as a server that never expires.
-- The expiry may carry ".<unix s>": when the client stops counting as
-- connected (touchSrc), the third value (0: not reported connected).
local function parse(v)
  local i = string.find(v, '|', 1, true)
  if not i then return 0, v, 0 end
  local head = string.sub(v, 1, i - 1)
  local conn = 0
  local j = string.find(head, '.', 1, true)
  if j then
    conn = tonumber(string.sub(head, j + 1)) or 0
    head = string.sub(head, 1, j - 1)
  end
  return tonumber(head) or 0, string.sub(v, i + 1), conn
end
local function live(exp, now) return exp == 0 or exp > now end
local function value(exp, server, conn)
  if conn then return string.format('%.0f.%.0f', exp, conn) .. '|' .. server end
  return string.format('%.0f', exp) .. '|' .. server
end
-- The bucket's own TTL covers its longest-lived field; a bucket holding a
-- field that never expires has none. retime recomputes it from every field
-- (after a never-expiring field goes); a bucket of dead fields is removed.
-- Its work is bounded: a bucket too large for one HSCAN step (a listpack
-- is always walked whole, and is small) is left without a TTL, and its
-- fields go one by one as sweeps find them dead.
local function retime(now)
  local r = redis.call('HSCAN', KEYS[1], '0', 'COUNT', 128)
  if r[1] ~= '0' then
    redis.call('PERSIST', KEYS[1])
    return
  end
  local all = r[2]
  local max = 0
  for i = 2, #all, 2 do
    local exp = parse(all[i])
    if exp == 0 then
      redis.call('PERSIST', KEYS[1])
      return
    end
    if exp > max then max = exp end
  end
  if max > now then
    redis.call('PEXPIRE', KEYS[1], max - now)
  elseif #all > 0 then
    redis.call('DEL', KEYS[1])
  end
end
-- sweep drops expired fields; writes call it now and then (one in
-- sixteen), so a live bucket does not keep dead bindings for long. One
-- bounded HSCAN step from a position that moves with the clock: the whole
-- of a listpack, some 64 fields of a larger hash.
local function sweep(now)
  if now % 16 ~= 0 then return end
  local r = redis.call('HSCAN', KEYS[1], string.format('%.0f', math.floor(now / 16) % 1048576), 'COUNT', 64)
  local all = r[2]
  for i = 1, #all, 2 do
    if not live(parse(all[i + 1]), now) then redis.call('HDEL', KEYS[1], all[i]) end
  end
end
-- write sets a field and keeps the bucket's TTL covering it. old is the
-- expiry of the value it replaces (nil for none). A soft write reports a
-- refused HSET (Redis at maxmemory: OOM) by returning false instead of
-- failing the script, so that a read that only meant to reset a TTL still
-- answers.
local function write(id, exp, server, now, old, soft, conn)
  -- -2: a new bucket; -1: another field never expires.
  local pttl = redis.call('PTTL', KEYS[1])
  if soft then
    local r = redis.pcall('HSET', KEYS[1], id, value(exp, server, conn))
    if type(r) == 'table' and r.err then return false end
  else
    redis.call('HSET', KEYS[1], id, value(exp, server, conn))
  end
  if exp == 0 then
    if pttl >= 0 then redis.call('PERSIST', KEYS[1]) end
  elseif old == 0 then
    retime(now)
  elseif pttl == -2 or (pttl >= 0 and pttl < exp - now) then
    redis.call('PEXPIRE', KEYS[1], exp - now)
  end
  sweep(now)
  return true
end
local function expiry(ttl, now)
  if ttl > 0 then return now + ttl end
  return 0
end
`

const (
	// ARGV: id, proposed server, ttl ms (0: none), the most fields the
	// bucket may hold for a new binding to be stored (0: none may be). An
	// existing unpinned binding that expires gets its TTL reset; when Redis
	// refuses that write the binding is still returned, as "2"+server. A
	// new binding that may not be stored replies "3"+proposed.
	claimSrc = luaLib + `
local now = now_ms()
local ttl = tonumber(ARGV[3])
local v = redis.call('HGET', KEYS[1], ARGV[1])
local old
if v then
  local exp, cur = parse(v)
  if live(exp, now) then
    if ttl > 0 and exp ~= 0 and string.sub(cur, 1, 1) ~= '!' then
      if not write(ARGV[1], now + ttl, cur, now, exp, true) then
        return '2' .. cur
      end
    end
    return '0' .. cur
  end
  old = exp
end
if not v and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then
  return '3' .. ARGV[2]
end
write(ARGV[1], expiry(ttl, now), ARGV[2], now, old)
return '1' .. ARGV[2]
`

	// ARGV: id, from, to, ttl ms, channel, message. A pinned value starts
	// with '!' and a server name never does, so cur == from also means
	// "unpinned".
	moveSrc = luaLib + `
local now = now_ms()
local v = redis.call('HGET', KEYS[1], ARGV[1])
local old
if v then
  local exp, cur = parse(v)
  if live(exp, now) and cur ~= ARGV[2] then
    return '0' .. cur
  end
  old = exp
end
write(ARGV[1], expiry(tonumber(ARGV[4]), now), ARGV[3], now, old)
redis.call('PUBLISH', ARGV[5], ARGV[6])
return '1' .. ARGV[3]
`

	// ARGV: id. Reply: {server, remaining ms or -1 (never)}, or nil.
	getSrc = luaLib + `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then
  return false
end
local now = now_ms()
local exp, cur, conn = parse(v)
if not live(exp, now) then
  return false
end
local c = 0
if conn * 1000 > now then c = 1 end
if exp == 0 then
  return {cur, -1, c}
end
return {cur, exp - now, c}
`

	// ARGV: id, server ('!'-prefixed when pinned), ttl ms (0: none),
	// channel, message.
	putSrc = luaLib + `
local now = now_ms()
local v = redis.call('HGET', KEYS[1], ARGV[1])
local old
if v then old = parse(v) end
write(ARGV[1], expiry(tonumber(ARGV[3]), now), ARGV[2], now, old)
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
`

	// ARGV: id, channel, message. Reply: 1 if a live binding was removed.
	delSrc = luaLib + `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
local now = now_ms()
local exp = parse(v)
if exp == 0 then
  retime(now)
end
if not live(exp, now) then
  return 0
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
`

	// ARGV: server, the same pinned, channel, "<backend>:". Removes every
	// live binding of the bucket to that server (compare-and-delete in one
	// step, so one that moved meanwhile survives) and replies how many.
	deleteIfSrc = luaLib + `
local now = now_ms()
local all = redis.call('HGETALL', KEYS[1])
local n, forever = 0, false
for i = 1, #all, 2 do
  local exp, cur = parse(all[i + 1])
  if live(exp, now) and (cur == ARGV[1] or cur == ARGV[2]) then
    redis.call('HDEL', KEYS[1], all[i])
    redis.call('PUBLISH', ARGV[3], ARGV[4] .. all[i])
    n = n + 1
    forever = forever or exp == 0
  end
end
if forever then
  retime(now)
end
return n
`

	// The cache's refresh. ARGV: id, cached server, ttl ms. The TTL is reset
	// if the binding is still the cached (unpinned) server; a binding is
	// never created, so a refresh racing an eviction cannot undo it. Reply:
	// the server in force ('!'-prefixed when pinned), "" when none.
	refreshSrc = luaLib + `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then
  return ''
end
local now = now_ms()
local exp, cur = parse(v)
if not live(exp, now) then
  return ''
end
local ttl = tonumber(ARGV[3])
if cur == ARGV[2] and ttl > 0 and exp ~= 0 then
  write(ARGV[1], now + ttl, cur, now, exp, true) -- refused at maxmemory: still confirmed
end
return cur
`
)

var (
	claimScript    = goredis.NewScript(claimSrc)
	moveScript     = goredis.NewScript(moveSrc)
	getScript      = goredis.NewScript(getSrc)
	putScript      = goredis.NewScript(putSrc)
	delScript      = goredis.NewScript(delSrc)
	deleteIfScript = goredis.NewScript(deleteIfSrc)
	refreshScript  = goredis.NewScript(refreshSrc)
)

// decodeValue splits a stored value into expiry (unix ms, 0 = never),
// server and pinned flag, as the scripts' parse does.
func decodeValue(v string) (exp int64, server string, pinned bool) {
	exp, server, pinned, _ = decodeConn(v)
	return exp, server, pinned
}

// decodeConn is decodeValue with the connected mark: when the client
// stops counting as connected (unix s, 0: not reported connected).
func decodeConn(v string) (exp int64, server string, pinned bool, conn int64) {
	rest := v
	if i := strings.IndexByte(v, '|'); i >= 0 {
		head := v[:i]
		if j := strings.IndexByte(head, '.'); j >= 0 {
			conn, _ = strconv.ParseInt(head[j+1:], 10, 64)
			head = head[:j]
		}
		exp, _ = strconv.ParseInt(head, 10, 64)
		rest = v[i+1:]
	}
	server, pinned = decodeServer(rest)
	return exp, server, pinned, conn
}

// decodeServer strips the pinned marker.
func decodeServer(v string) (server string, pinned bool) {
	if strings.HasPrefix(v, "!") {
		return v[1:], true
	}
	return v, false
}

func encodeServer(server string, pinned bool) string {
	if pinned {
		return "!" + server
	}
	return server
}
