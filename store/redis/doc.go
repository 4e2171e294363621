// Package redis is a store.Store on Redis, shared by every agent replica.
//
// # Key layout
//
// With the default Prefix "stickyd:":
//
//	binding   <Prefix>b:<backend>:<clientID>   STRING  server, or "!"+server when pinned
//	                                           native TTL (PX); no TTL = never expires
//	draining  <Prefix>drain:<backend>          SET     names of draining servers
//
// Backend names never contain ':' (the config forbids it and this package
// rejects it), so the first ':' after "b:" ends the backend and everything
// after it is the client id, byte for byte: Redis keys are binary-safe, so
// ids with '/', '%', spaces, NUL, invalid UTF-8 or glob metacharacters are
// stored as is. A '{' in a client id only changes the
// Redis Cluster hash slot of its key. Server names never start with '!'
// (rejected here), which keeps the pinned marker unambiguous. The empty
// client id is a valid key ("<Prefix>b:<backend>:") and is supported.
//
// # Atomicity and round trips
//
// Every script touches exactly one key, so all of them stay valid on Redis
// Cluster. GetOrClaim and Move are one script each (EVALSHA, with EVAL on
// NOSCRIPT after a restart): one round trip. GetOrClaim refreshes the TTL of
// an unpinned binding that has one; pinned and never-expiring bindings keep
// theirs. Move is a compare-and-swap on the unpinned value. DeleteByServer
// deletes with a compare-and-delete script, so a binding that moved to
// another server meanwhile survives.
//
// # Timeouts and failure
//
// OpTimeout (default 50ms) bounds each GetOrClaim and Move call as a whole
// and every single socket read or write. Admin calls (List, CountByServer,
// DeleteByServer, Get, Put, Delete, draining) are bounded as a whole only by
// the caller's context; each command they send is small. New does not wait
// for Redis, so the agent starts (and fails open) while Redis is down;
// Ping reports health, and the client reconnects by itself: no new Store is
// needed once Redis is back (after a burst of failed dials, go-redis probes
// once a second, so recovery can take about that long).
//
// The client retries a failed command once (MaxRetries 1). That is safe
// because every write is idempotent in effect: a replayed claim returns the
// binding it made (with Claimed false), a replayed Move finds its own result,
// a replayed Delete may report ErrNotFound for the binding it removed.
//
// # Paging
//
// List walks the keyspace with SCAN MATCH (glob metacharacters in the key
// prefix, backend and client-id prefix escaped), at most 8 SCAN calls per
// page, each followed by one pipeline of GET+PTTL; a key that vanished in
// between is skipped. The SCAN COUNT adapts to how many keys matched so far, up to 4*Limit.
// Items are not ordered, and a page never holds more than Limit items: when
// a SCAN step brings more than the page has room for, the page takes the
// step's first ids in client-id order and the cursor records the step, so
// the next page replays it and skips what was returned.
//
// The cursor is opaque base64url: a version byte, a flags byte, a node index
// (always 0 until Redis Cluster support, where it will name the master being
// scanned), the SCAN cursor and, inside a step, its COUNT, end and the last
// id returned (so it can be as long as a client id). SCAN returns a binding
// present for the whole walk at least once, but may return one twice: when
// Redis shrinks its hash table between pages, or when a replayed step spans
// more keys than the original. Callers must tolerate duplicates across
// pages; a page itself holds none. CountByServer counts what SCAN returns,
// so it can over-count while the keyspace shrinks under it.
package redis
