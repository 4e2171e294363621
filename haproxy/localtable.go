package haproxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/stickyd/stickyd/internal/tablekey"
)

// HAProxy keeps a table of the agent's answers in each backend (the
// backend's own stick table), keyed by TableKey of the client key: a
// reconnect younger than the freshness window is routed by HAProxy alone,
// and while the agent is down the table answers for every client it has
// seen. See templates/frontend.cfg.tmpl.

// maxTableExpire is HAProxy's largest stick-table expire ("slightly above
// 24 days"), used when bindings never expire.
const maxTableExpire = 24 * 24 * time.Hour

// TableKey is the table key of a client key, as the generated configuration
// computes it (package tablekey).
func TableKey(clientKey []byte) string { return tablekey.Of(clientKey).String() }

// LocalTable reports whether the table is generated: always, since it is
// what keeps clients where they are while the agent is down.
func (*genData) LocalTable() bool { return true }

// FreshMS is the freshness window in milliseconds; 0 means no fast path,
// as on HAProxy before 2.6, which has no table_idle (version.go).
func (d *genData) FreshMS() int64 {
	if !d.Opts.Version.FastPath() {
		return 0
	}
	return d.Cfg.LocalFreshWindow().Milliseconds()
}

// TableExpire is the table's expire: the binding TTL, within HAProxy's
// bounds.
func (d *genData) TableExpire() string {
	ttl := d.Cfg.TTL.D()
	if ttl <= 0 || ttl > maxTableExpire {
		ttl = maxTableExpire
	}
	return strconv.FormatInt(ttl.Milliseconds(), 10) + "ms"
}

// PeersName names the peers section of haproxy.local_peer.
const PeersName = "stickyd_peers"

// LocalPeerName is the local peer's name: "stickyd_" and a fingerprint of
// what an entry means, the table key function and each backend's servers
// in order (an entry holds its server's position as server_id). A reload
// whose configuration changes them changes the name; HAProxy then refuses
// the old process's hand-over (the peer name in its hello no longer
// matches), so the new process starts with empty tables rather than
// entries that name the wrong servers.
func (d *genData) LocalPeerName() string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n", tablekey.Scheme)
	for _, b := range d.Backends {
		fmt.Fprintf(h, "backend %q\n", b.Name)
		for _, srv := range b.Servers {
			fmt.Fprintf(h, "server %q\n", srv.Name)
		}
	}
	return "stickyd_" + hex.EncodeToString(h.Sum(nil)[:6])
}

// PeersName names the peers section.
func (*genData) PeersName() string { return PeersName }

// TablePeers is what a table of answers (or of fallback choices) adds to
// its stick-table line: the peers section that hands it to the next
// process at a reload. The table of connected clients has none: conn_cur
// is never learned from peers.
func (d *genData) TablePeers() string {
	if d.Cfg.HAProxy.LocalPeer == "" {
		return ""
	}
	return " peers " + PeersName
}

// TableSize is the number of entries each backend's table holds.
func (d *genData) TableSize() int { return d.Cfg.HAProxy.LocalSize }

// ClearTableKey removes one client's entry from a backend's table, so the
// next connect asks the agent. An absent entry is not an error.
func (r *RuntimeAPI) ClearTableKey(ctx context.Context, backend string, clientKey []byte) error {
	return r.clearBoth(ctx, backend, "key "+TableKey(clientKey))
}

// clearBoth clears the agent's answers and the hash fallback's choices
// (which the agent would otherwise adopt for a client it has no binding
// for).
func (r *RuntimeAPI) clearBoth(ctx context.Context, backend, filter string) error {
	return errors.Join(r.clearTable(ctx, backend, filter), r.clearTable(ctx, backend+FallbackSuffix, filter))
}

// ClearTableServer removes every entry of a backend's table that names one
// server (by its id, its position in the backend from 1).
func (r *RuntimeAPI) ClearTableServer(ctx context.Context, backend string, serverID int) error {
	return r.clearBoth(ctx, backend, "data.server_id eq "+strconv.Itoa(serverID))
}

// ClearTable empties a backend's table.
func (r *RuntimeAPI) ClearTable(ctx context.Context, backend string) error {
	return r.clearBoth(ctx, backend, "")
}

func (r *RuntimeAPI) clearTable(ctx context.Context, backend, filter string) error {
	cmd := "clear table " + backend
	if filter != "" {
		cmd += " " + filter
	}
	out, err := r.Command(ctx, cmd)
	if err != nil {
		return err
	}
	// Success is an empty answer (an empty line); anything else is an error
	// message such as "Unknown table".
	if msg := strings.TrimSpace(out); msg != "" {
		return fmt.Errorf("runtime API: %s: %s", cmd, msg)
	}
	return nil
}
