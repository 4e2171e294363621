package redis

import (
	"context"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/stickyd/stickyd/store"
)

var (
	_ store.Toucher          = (*Store)(nil)
	_ store.ConnectedCounter = (*Store)(nil)
)

// touchBatch bounds the scripts one pipeline of TouchConnected carries.
const touchBatch = 512

// touchSrc keeps a connected client's binding alive. ARGV: id, ttl ms,
// connected ms. An existing live binding gets its expiry raised to at
// least now+ttl (0 stays 0) and the connected mark ".<unix s>" until
// now+connected; none is created, so an eviction stays. Publishes
// nothing: the server does not change, and the caches hold no expiry.
// Reply: 1 when the binding exists.
const touchSrc = luaLib + `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then
  return 0
end
local now = now_ms()
local exp, cur = parse(v)
if not live(exp, now) then
  return 0
end
local nexp = exp
local ttl = tonumber(ARGV[2])
if exp ~= 0 and ttl > 0 and now + ttl > exp then nexp = now + ttl end
local conn = math.ceil((now + tonumber(ARGV[3])) / 1000)
write(ARGV[1], nexp, cur, now, exp, true, conn)
return 1
`

var touchScript = goredis.NewScript(touchSrc)

// TouchConnected implements store.Toucher: one script per binding, in
// pipelines of touchBatch.
func (s *Store) TouchConnected(ctx context.Context, backend string, touches []store.Touch, connected time.Duration) (int, error) {
	if err := checkBackend(backend); err != nil {
		return 0, fmt.Errorf("redis touch: %w", err)
	}
	k, err := s.hashKey(ctx)
	if err != nil {
		return 0, fmt.Errorf("redis touch: %w", err)
	}
	found := 0
	var errs []error
	for len(touches) > 0 {
		part := touches[:min(len(touches), touchBatch)]
		touches = touches[len(part):]
		cmds, err := s.runPipelined(ctx, touchScript, len(part), func(i int) ([]string, []any) {
			return []string{s.bucketKey(k, backend, part[i].ClientID)}, []any{part[i].ClientID, millis(part[i].TTL), connected.Milliseconds()}
		})
		if err != nil {
			return found, fmt.Errorf("redis touch: %w", err)
		}
		for _, c := range cmds {
			n, err := c.Int()
			if err != nil {
				errs = append(errs, err)
				continue
			}
			found += n
		}
		if len(errs) > 0 {
			break // Redis fails: do not send the rest into it
		}
	}
	if len(errs) > 0 {
		return found, fmt.Errorf("redis touch: %d failed: %w", len(errs), s.classify(errs[0]))
	}
	return found, nil
}

// CountConnected implements store.ConnectedCounter: CountByServer's walk,
// counting connected marks on the way.
func (s *Store) CountConnected(ctx context.Context, backend string) (bindings, connected map[string]int, err error) {
	if err := checkBackend(backend); err != nil {
		return nil, nil, fmt.Errorf("redis count: %w", err)
	}
	now, err := s.redisNow(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("redis count: %w", err)
	}
	bindings, connected = map[string]int{}, map[string]int{}
	err = s.scanAll(ctx, globEscape(s.bucketPrefix(backend))+"*", func(keys []string) error {
		return s.readBucketsConn(ctx, keys, now, func(_, server string, _ bool, _ int64, conn bool) {
			bindings[server]++
			if conn {
				connected[server]++
			}
		})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("redis count: %w", err)
	}
	return bindings, connected, nil
}
