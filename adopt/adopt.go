package adopt

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/stickyd/stickyd/store"
)

// Options say how table entries map onto a stickyd backend.
type Options struct {
	Backend string   // the stickyd backend the bindings go to
	Servers []string // its server names
	// KeyLen is the table's `len`: HAProxy cuts longer keys to it, so a
	// key of exactly KeyLen bytes may be a truncated id and is skipped.
	// 0 means unknown (nothing is skipped for length).
	KeyLen int
	// ServerIDs maps server_id to a server name, for entries without
	// server_key (from `show servers state`); may be nil.
	ServerIDs map[int]string
	// DefaultTTL is given to entries without exp (a table without expire).
	DefaultTTL time.Duration
}

// Item is one binding to claim.
type Item struct {
	ClientID string
	Server   string
	TTL      time.Duration
}

// Skip is an entry not imported, and why.
type Skip struct {
	ClientID string
	Reason   string
}

// Plan maps table entries to bindings, and says which it cannot import.
func Plan(t Table, o Options) (items []Item, skips []Skip) {
	known := map[string]bool{}
	for _, s := range o.Servers {
		known[s] = true
	}
	for _, e := range t.Entries {
		server := e.ServerKey
		if server == "" && e.ServerID != 0 {
			server = o.ServerIDs[e.ServerID]
		}
		switch {
		case e.Key == "":
			skips = append(skips, Skip{e.Key, "empty key"})
		case o.KeyLen > 0 && len(e.Key) >= o.KeyLen:
			skips = append(skips, Skip{e.Key, fmt.Sprintf("key is %d bytes, the table's len: HAProxy may have truncated it", len(e.Key))})
		case server == "" && e.ServerID != 0:
			skips = append(skips, Skip{e.Key, fmt.Sprintf("server_id %d is not in the HAProxy backend's server list", e.ServerID)})
		case server == "":
			skips = append(skips, Skip{e.Key, "entry has no server"})
		case !known[server]:
			skips = append(skips, Skip{e.Key, fmt.Sprintf("server %q is not a server of stickyd backend %q", server, o.Backend)})
		case e.HasExp && e.Exp <= 0:
			skips = append(skips, Skip{e.Key, "expired"})
		default:
			ttl := o.DefaultTTL
			if e.HasExp {
				ttl = e.Exp
			}
			items = append(items, Item{ClientID: e.Key, Server: server, TTL: ttl})
		}
	}
	return items, skips
}

// Result is what a Sink did.
type Result struct {
	Imported int
	// Skipped counts bindings left alone because stickyd already had one.
	Skipped int
	// Details name skipped ids when the sink knows them (the store does,
	// the API only counts).
	Details []Skip
}

// Sink claims bindings without overwriting any.
type Sink interface {
	Claim(ctx context.Context, backend string, items []Item) (Result, error)
}

// StoreSink claims directly in a store (the Redis store every agent
// shares).
type StoreSink struct{ Store store.Store }

// Claim uses GetOrClaim, so an existing binding wins (its TTL is renewed
// as on any connect).
func (s StoreSink) Claim(ctx context.Context, backend string, items []Item) (Result, error) {
	var r Result
	for _, it := range items {
		c, err := s.Store.GetOrClaim(ctx, backend, it.ClientID, it.Server, it.TTL)
		if err != nil {
			return r, fmt.Errorf("claim %q: %w", truncate(it.ClientID, 64), err)
		}
		if c.Claimed {
			r.Imported++
			continue
		}
		r.Skipped++
		r.Details = append(r.Details, Skip{it.ClientID, fmt.Sprintf("stickyd already binds it to %s", c.Server)})
	}
	return r, nil
}

// APISink claims through a running agent's admin API
// (POST /v1/backends/{backend}/import?mode=claim): the only way into a
// memory store, which lives inside that agent.
type APISink struct {
	Base   string // http://host:port
	Token  string
	Client *http.Client
}

// ImportAnswer is the API's answer to an import.
type ImportAnswer struct {
	Imported int      `json:"imported"`
	Skipped  int      `json:"skipped"`
	Errors   []string `json:"errors"`
}

// Claim sends the items as one NDJSON body.
func (a APISink) Claim(ctx context.Context, backend string, items []Item) (Result, error) {
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	for _, it := range items {
		line := struct {
			ClientIDB64 string `json:"client_id_b64"`
			Server      string `json:"server"`
			TTLSeconds  int64  `json:"ttl_seconds"`
		}{base64.StdEncoding.EncodeToString([]byte(it.ClientID)), it.Server, ceilSeconds(it.TTL)}
		if err := enc.Encode(line); err != nil {
			return Result{}, err
		}
	}
	target := strings.TrimRight(a.Base, "/") + "/v1/backends/" + url.PathEscape(backend) + "/import?mode=claim"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, &body)
	if err != nil {
		return Result{}, err
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	if a.Token != "" {
		req.Header.Set("Authorization", "Bearer "+a.Token)
	}
	client := a.Client
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Minute}
	}
	res, err := client.Do(req)
	if err != nil {
		return Result{}, fmt.Errorf("stickyd API: %w", err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if res.StatusCode != http.StatusOK {
		return Result{}, fmt.Errorf("stickyd API: POST %s: %s: %s", target, res.Status, strings.TrimSpace(string(data)))
	}
	var ans ImportAnswer
	if err := json.Unmarshal(data, &ans); err != nil {
		return Result{}, fmt.Errorf("stickyd API: unexpected answer: %w", err)
	}
	if len(ans.Errors) > 0 {
		return Result{Imported: ans.Imported, Skipped: ans.Skipped}, fmt.Errorf("stickyd API: import errors: %s", strings.Join(ans.Errors, "; "))
	}
	return Result{Imported: ans.Imported, Skipped: ans.Skipped}, nil
}

// ceilSeconds rounds up so a live binding never becomes 0 (no expiry).
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// Commander sends one Runtime API command (haproxy.RuntimeAPI).
type Commander interface {
	Command(ctx context.Context, cmd string) (string, error)
}

// Read fetches and parses `show table TABLE`, and, when haproxyBackend is
// set, the server ids of that HAProxy backend.
func Read(ctx context.Context, rt Commander, table, haproxyBackend string) (Table, map[int]string, error) {
	out, err := rt.Command(ctx, "show table "+table)
	if err != nil {
		return Table{}, nil, err
	}
	t, err := ParseShowTable(out)
	if err != nil {
		return t, nil, fmt.Errorf("table %q: %w", table, err)
	}
	if haproxyBackend == "" {
		return t, nil, nil
	}
	out, err = rt.Command(ctx, "show servers state "+haproxyBackend)
	if err != nil {
		return t, nil, err
	}
	ids, err := ServerIDs(out, haproxyBackend)
	if err != nil {
		return t, nil, err
	}
	return t, ids, nil
}

// Report writes what was imported and skipped, one line per skipped id
// (quoted, so odd bytes stay readable).
func Report(w io.Writer, planned []Item, planSkips []Skip, r Result, dryRun bool) error {
	bw := bufio.NewWriter(w)
	for _, s := range planSkips {
		fmt.Fprintf(bw, "skipped %q: %s\n", truncate(s.ClientID, 80), s.Reason)
	}
	for _, s := range r.Details {
		fmt.Fprintf(bw, "skipped %q: %s\n", truncate(s.ClientID, 80), s.Reason)
	}
	if dryRun {
		for _, it := range planned {
			fmt.Fprintf(bw, "would import %q -> %s (ttl %s)\n", truncate(it.ClientID, 80), it.Server, it.TTL.Round(time.Second))
		}
		fmt.Fprintf(bw, "dry run: %d would be imported, %d skipped (table)\n", len(planned), len(planSkips))
	} else {
		fmt.Fprintf(bw, "imported %d, skipped %d (already bound in stickyd: %d, not importable: %d)\n",
			r.Imported, r.Skipped+len(planSkips), r.Skipped, len(planSkips))
	}
	return bw.Flush()
}

// ErrNoBackend is returned when the backend to import into is ambiguous.
var ErrNoBackend = errors.New("no backend")
