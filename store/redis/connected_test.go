package redis

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stickyd/stickyd/internal/testenv"
	"github.com/stickyd/stickyd/store"
)

// oldParse is the value parser of stickyd before the connected mark: an
// agent not yet upgraded must still read a marked value's expiry and
// server (a rolling upgrade), so the mark hides in the number's fraction.
const oldParse = `
local function parse(v)
  local i = string.find(v, '|', 1, true)
  if not i then return 0, v end
  return tonumber(string.sub(v, 1, i - 1)) or 0, string.sub(v, i + 1)
end
local exp, server = parse(ARGV[1])
return {string.format('%.0f', exp), server}
`

func TestConnectedMarkReadByOlderAgents(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	s := newTestStore(t, r)
	if err := s.Put(ctx, store.Binding{Backend: "be", ClientID: "c1", Server: "!n1", TTL: time.Hour}); err == nil {
		t.Fatal("server names starting with '!' must be refused")
	}
	if err := s.Put(ctx, store.Binding{Backend: "be", ClientID: "c1", Server: "node-with-a-long-name-1", TTL: time.Hour, Pinned: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TouchConnected(ctx, "be", []store.Touch{{ClientID: "c1", TTL: 2 * time.Hour}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	k, err := s.hashKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.rdb.HGet(ctx, s.bucketKey(k, "be", "c1"), "c1").Result()
	if err != nil {
		t.Fatal(err)
	}
	exp, server, pinned, conn := decodeConn(v)
	now := time.Now().UnixMilli()
	if server != "node-with-a-long-name-1" || !pinned || exp < now+time.Hour.Milliseconds()+59*60*1000 || conn*1000 < now+50*1000 {
		t.Fatalf("value %q: exp %d server %q pinned %v conn %d", v, exp, server, pinned, conn)
	}
	// A listpack holds values up to 64 bytes: the mark keeps a binding
	// with a 23-byte server name within it.
	if len(v) > 64 {
		t.Errorf("value %q is %d bytes, past hash-max-listpack-value", v, len(v))
	}
	got, err := s.rdb.Eval(ctx, oldParse, nil, v).StringSlice()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"", "!node-with-a-long-name-1"}; got[1] != want[1] || got[0] != strconv.FormatInt(exp, 10) {
		t.Errorf("an older agent reads %q as %v; want expiry %d, server %s", v, got, exp, want[1])
	}
}
