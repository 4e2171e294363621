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
//	bindings  <Prefix>b:<backend>:<bucket>     HASH    field: client id; value: "<expiry>|<server>"
//	hash key  <Prefix>hashkey                  STRING  32 hex digits: the bucket hash's key
//	draining  <Prefix>drain:<backend>          SET     names of draining servers
//	(channel) <Prefix>inv                      pub/sub "<backend>:<client id>" of every changed binding
//
// A backend's bindings are spread over 65536 hash buckets: <bucket> is the
// low 16 bits of SipHash-2-4 of the client id under the hash key, as four
// lowercase hex digits (under key 000102...0f, client id "c/1 x" of backend
// "be" lives in "stickyd:b:be:7e62"). The key is random, made by the first
// Store to find none (SET NX) and read by every other on first use, so
// clients cannot choose ids that share a bucket (hashkey.go); Ping puts it
// back if it went. The first layout ("h:" buckets, unkeyed FNV-1a) is not
// read. Small
// hashes are stored by Redis as listpacks, about 58 bytes per binding with
// 24-byte ids against about 160 for a string key with its own TTL (with
// few bindings, a bucket's own key costs about as much again). A bucket
// past hash-max-listpack-entries fields (512 in Redis 7's default
// configuration: some 30 million bindings in one backend) or holding an id
// or value past hash-max-listpack-value bytes (64) becomes a regular hash
// table: still correct, about 100 bytes per binding. A claim adds no field
// to a bucket of maxBucketFields (1024), and sweeps and retimes take one
// HSCAN step, so no script's work grows with what clients send.
//
// # Bounds and read-only
//
// Options.MaxBindings caps each backend (limits.go): a claim past it
// stores nothing and replies Claim.NotStored. When Redis refuses writes
// (OOM at maxmemory with noeviction, READONLY on a replica), writes fail
// with an error wrapping store.ErrReadOnly, while a claim of an existing
// binding still returns it (its TTL reset is a soft write inside the
// script); Stats().ReadOnly reports the state until a write succeeds (Ping
// probes for it).
//
// The value is the expiry in Redis-clock unix milliseconds (0: never),
// '|', and the server, prefixed with '!' when pinned. Expiry is per binding,
// so it lives in the value: an expired field is not a binding (every read
// skips it, a claim replaces it), writes sweep a bucket's expired fields
// now and then (one write in sixteen), and the bucket key itself carries a
// TTL that covers its longest-lived field (none while a field never
// expires), so a bucket of dead bindings goes by itself. Time is Redis's
// own (TIME, inside the scripts), never an agent's clock.
//
// Backend names never contain ':' (the config forbids it and this package
// rejects it). Client ids are hash fields, byte for byte: ids with '/', '%',
// spaces, NUL, invalid UTF-8 or glob metacharacters are stored as is, and
// the empty id is a valid field. Server names never start with '!'
// (rejected here), which keeps the pinned marker unambiguous.
//
// Each bucket lives in the hash slot of its own name, so a cluster spreads
// a backend's buckets over all its masters. A Prefix holding "{...}" would
// put every key in one slot, on one master.
//
// # Atomicity and round trips
//
// Every script touches exactly one key (KEYS[1], the bucket), so all of
// them stay valid on Redis Cluster. GetOrClaim and Move are one script each
// (EVALSHA, with EVAL on NOSCRIPT after a restart): one round trip.
// GetOrClaim refreshes the TTL of an unpinned binding that has one; pinned
// and never-expiring bindings keep theirs. Move is a compare-and-swap on the
// unpinned value. DeleteByServer runs one compare-and-delete script per
// bucket, so a binding that moved to another server meanwhile survives.
// Every script that changes or removes a binding publishes it on the
// invalidation channel in the same atomic step.
//
// # Local cache
//
// With Options.CacheSize (redis_cache_size, 100000 by default in stickyd
// serve), each Store keeps recent unpinned bindings in process and answers
// a reconnect from them (TryGetOrClaim) without a round trip; cache.go
// describes how it stays coherent with every other agent: invalidations
// over pub/sub, no answer while the subscription is down, refreshes that
// reset the TTL in pipelined batches at most every ttl/16 (100ms to 30s)
// and never create a binding, and entries unconfirmed for twice that
// dropped. A binding's TTL is therefore reset at most that often per agent,
// not at every connect.
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
// List walks the backend's buckets with SCAN MATCH (glob metacharacters in
// the key prefix and backend escaped), at most 8 SCAN calls per page, each
// followed by one pipeline of HGETALL; a bucket that vanished in between is
// skipped, and the client-id prefix and server filters apply to the fields.
// The SCAN COUNT adapts to how many bindings the buckets yielded so far, up
// to 4*Limit.
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
// afresh (CLUSTER SLOTS and CLUSTER MYID on each master); the HGETALL
// pipelines go through the cluster client, which splits them by node and
// follows MOVED and ASK redirects.
//
// The cursor is opaque base64url: a version byte, a flags byte, on a
// cluster a 4-byte tag naming the master (FNV-1a of its node ID), the node
// index, the SCAN cursor and, inside a step, its COUNT, end and the last id
// returned (so it can be as long as a client id). SCAN returns a bucket
// present for the whole walk, and so each binding in it, at least once,
// but may return one twice: when
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
