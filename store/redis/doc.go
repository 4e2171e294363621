// Package redis is a store.Store on Redis, shared by every agent replica:
// a standalone server, a master watched by Redis Sentinel, or a Redis
// Cluster.
//
// # URLs
//
// Options.URL (the redis_url setting) takes one of these forms:
//
//	redis://[user:pass@]host:port[/db][?opts]     standalone
//	rediss://[user:pass@]host:port[/db][?opts]    standalone over TLS
//	unix:///path/to.sock[?db=N&opts]              standalone on a unix socket
//	redis-sentinel://[user:pass@]host1:port1,host2:port2[/db]?master_name=NAME[&sentinel_username=U][&sentinel_password=P][&opts]
//	rediss-sentinel://...                         the same over TLS (sentinels and data nodes)
//	redis-cluster://[user:pass@]host1:port1,host2:port2[?opts]
//	rediss-cluster://...                          the same over TLS
//
// For example:
//
//	redis://:s3cret@10.0.0.5:6379/0?dial_timeout=1s
//	redis-sentinel://:s3cret@10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379/0?master_name=stickyd&sentinel_password=other
//	redis-cluster://:s3cret@10.0.1.1:6379,10.0.1.2:6379,[fd00::3]:6379?pool_size=16
//
// A sentinel URL lists sentinels (default port 26379) and names the master
// they monitor; user:pass authenticate to the master and replicas, and
// sentinel_username and sentinel_password to the sentinels (when they
// require it). The client asks the sentinels
// for the master and follows failovers by itself. A cluster URL lists seed
// nodes (default port 6379; one is enough, more survive one being down);
// the client discovers the rest, and has only database 0. Percent-encode
// reserved characters (':', '@', '/', '?', '#', '%', '&') in user
// names, passwords and query values. Query options are those of go-redis
// ParseURL (dial_timeout, read_timeout, write_timeout, pool_size,
// max_retries, skip_verify, ...); they override this package's hot-path
// defaults, which apply the same to all three deployments (on a cluster,
// pool settings are per node). Errors say what is wrong without quoting
// a password; Redact makes a URL fit for logs.
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
// Each key lives in the hash slot of its own name, so a cluster spreads the
// bindings of a backend over all its masters. A Prefix holding "{...}"
// would put every key in one slot, on one master.
//
// # Atomicity and round trips
//
// Every script touches exactly one key (KEYS[1]), so all of them stay valid
// on Redis Cluster. GetOrClaim and Move are one script each (EVALSHA, with EVAL on
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
// On Redis Cluster, Ping pings every master: one that does not answer makes
// the store unhealthy.
// Behind Sentinel, calls fail while a failover runs (the agent fails open)
// and succeed again once the sentinels name the new master; writes the old
// master had not replicated are lost, as Redis replication is asynchronous.
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
// SCAN sees one server's keys. A standalone or sentinel store walks its
// master; a cluster store walks every master serving slots, one after the
// other, in the order of the lowest slot each serves (so a replica promoted
// by a failover takes its master's place). CountByServer and
// DeleteByServer walk them the same way. Each admin call lists the masters
// afresh (CLUSTER SLOTS and CLUSTER MYID on each master); the GET+PTTL
// pipelines go through the cluster client, which splits them by node and
// follows MOVED and ASK redirects.
//
// The cursor is opaque base64url: a version byte, a flags byte, on a
// cluster a 4-byte tag naming the master (FNV-1a of its node ID), the node
// index, the SCAN cursor and, inside a step, its COUNT, end and the last id
// returned (so it can be as long as a client id). SCAN returns a binding
// present for the whole walk at least once, but may return one twice: when
// Redis shrinks its hash table between pages, or when a replayed step spans
// more keys than the original. Callers must tolerate duplicates across
// pages; a page itself holds none. CountByServer counts what SCAN returns,
// so it can over-count while the keyspace shrinks under it.
//
// When the cluster topology changes between pages, a cursor follows its
// master by tag to wherever it now is in the order. If that master is gone
// (failed over, removed), the master now at the cursor's index is walked
// from its start, which returns duplicates; only an index past the masters
// is store.ErrBadCursor. A resharding during a walk may also return
// duplicates, and can miss the keys that migrate to a master the walk has
// already passed.
package redis
