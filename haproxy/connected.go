package haproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/stickyd/stickyd/internal/tablekey"
)

// ConnectedSuffix names the table of connected clients of a backend,
// "<backend>_connected": the frontend tracks each client's table key there
// with conn_cur, so an entry holds while the client is connected through
// this HAProxy (HAProxy does not expire a tracked entry).
const ConnectedSuffix = "_connected"

// connectedExpire is how long an entry outlives its last connection; only
// entries with conn_cur > 0 are read, so it just needs to be short.
const connectedExpire = "10s"

// Connected reports whether the table of connected clients is generated:
// only with a stats socket, since the agent reads it there.
func (d *genData) Connected() bool { return d.Cfg.HAProxy.StatsSocket != "" }

// ConnectedSuffix is the table's name suffix.
func (*genData) ConnectedSuffix() string { return ConnectedSuffix }

// ConnectedExpire is the table's expire.
func (*genData) ConnectedExpire() string { return connectedExpire }

// ConnectedKeys streams the table keys of a backend's clients connected
// through this HAProxy (`show table <backend>_connected data.conn_cur gt 0`)
// to fn, at most batch keys per call, while HAProxy writes the dump: the
// answer is never held whole. The keys slice is reused between calls.
// ctx bounds the whole dump (the RuntimeAPI timeout bounds the dial).
func (r *RuntimeAPI) ConnectedKeys(ctx context.Context, backend string, batch int, fn func(keys []tablekey.Key) error) error {
	d := net.Dialer{Timeout: r.timeout}
	c, err := d.DialContext(ctx, r.network, r.addr)
	if err != nil {
		return fmt.Errorf("runtime API: %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	cmd := "show table " + backend + ConnectedSuffix + " data.conn_cur gt 0\n"
	if _, err := c.Write([]byte(cmd)); err != nil {
		return fmt.Errorf("runtime API: %w", err)
	}
	return scanConnected(bufio.NewReaderSize(c, 64<<10), max(batch, 1), fn)
}

// scanConnected parses a `show table` dump of string keys of 32 hex digits.
func scanConnected(rd *bufio.Reader, batch int, fn func([]tablekey.Key) error) error {
	keys := make([]tablekey.Key, 0, batch)
	header := false
	for {
		line, err := rd.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			return fmt.Errorf("runtime API: show table: line longer than %d bytes", rd.Size())
		}
		if len(line) > 0 {
			s := strings.TrimSpace(string(line))
			switch {
			case strings.HasPrefix(s, "# table:"):
				header = true
			case s == "":
			case !header:
				// "Unknown table", "No such table": an error message.
				return fmt.Errorf("runtime API: show table: %s", s)
			default:
				if k, ok := parseKeyLine(s); ok {
					keys = append(keys, k)
					if len(keys) == batch {
						if err := fn(keys); err != nil {
							return err
						}
						keys = keys[:0]
					}
				}
			}
		}
		if err != nil {
			if len(keys) > 0 {
				if ferr := fn(keys); ferr != nil {
					return ferr
				}
			}
			if errors.Is(err, io.EOF) {
				if !header {
					return fmt.Errorf("runtime API: show table: empty answer")
				}
				return nil
			}
			return fmt.Errorf("runtime API: show table: %w", err)
		}
	}
}

// parseKeyLine reads "0x...: key=<32 hex> use=1 exp=... conn_cur=1".
func parseKeyLine(s string) (tablekey.Key, bool) {
	i := strings.Index(s, " key=")
	if i < 0 {
		return tablekey.Key{}, false
	}
	v := s[i+5:]
	if j := strings.IndexByte(v, ' '); j >= 0 {
		v = v[:j]
	}
	return tablekey.Parse(v)
}
