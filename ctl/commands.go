package ctl

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// API shapes (see api/openapi.yaml).

type bindingJSON struct {
	ClientID    string `json:"client_id"`
	ClientIDB64 string `json:"client_id_b64"`
	Server      string `json:"server"`
	TTLSeconds  int64  `json:"ttl_seconds"`
	Pinned      bool   `json:"pinned"`
	Connected   bool   `json:"connected"`
}

type pageJSON struct {
	Items      []json.RawMessage `json:"items"`
	NextCursor string            `json:"next_cursor"`
}

type serverJSON struct {
	Name         string `json:"name"`
	Address      string `json:"address"`
	Weight       int    `json:"weight"`
	Up           bool   `json:"up"`
	Reported     bool   `json:"reported"`
	Draining     bool   `json:"draining"`
	HAProxyDrain bool   `json:"haproxy_drain"`
	Bindings     *int   `json:"bindings"`
	Connected    *int   `json:"connected"`
}

type backendJSON struct {
	Name    string       `json:"name"`
	Key     string       `json:"key"`
	Servers []serverJSON `json:"servers"`
}

// maxListLimit is the API's largest page.
const maxListLimit = 1000

// backendFlag adds --backend to fs.
func backendFlag(fs *flag.FlagSet) *string {
	return fs.String("backend", "", "backend (default: the only one)")
}

// backend returns the backend to act on: the flag, else the only backend
// the API has.
func (c *cli) backend(name string) (string, error) {
	if name != "" {
		return name, nil
	}
	var out struct {
		Backends []backendJSON `json:"backends"`
	}
	if _, err := c.getJSON("/v1/backends", nil, &out); err != nil {
		return "", err
	}
	switch len(out.Backends) {
	case 0:
		return "", errors.New("the API has no backends")
	case 1:
		return out.Backends[0].Name, nil
	}
	names := make([]string, len(out.Backends))
	for i, b := range out.Backends {
		names[i] = printable(b.Name)
	}
	return "", usagef("--backend is required: the API has %d backends (%s)", len(names), strings.Join(names, ", "))
}

// oneArg checks a command got exactly one positional argument, named what.
func oneArg(cmd string, pos []string, what string) (string, error) {
	switch {
	case len(pos) == 0:
		return "", usagef("%s: missing %s", cmd, what)
	case len(pos) > 1:
		return "", usagef("%s: want one %s, got %d arguments (an id with spaces needs quotes)", cmd, what, len(pos))
	case pos[0] == "":
		return "", usagef("%s: the %s is empty", cmd, what)
	}
	return pos[0], nil
}

// parseCommand parses a command's flags (defined on fs, --backend
// included), checks its positional arguments (one, named what, or none
// when what is "") and resolves the backend.
func (c *cli) parseCommand(cmd string, fs *flag.FlagSet, backend *string, args []string, what string) (b, arg string, err error) {
	pos, err := parseFlags(fs, args, true)
	if err != nil {
		return "", "", err
	}
	if what == "" {
		err = noArgs(cmd, pos)
	} else {
		arg, err = oneArg(cmd, pos, what)
	}
	if err != nil {
		return "", "", err
	}
	if b, err = c.backend(*backend); err != nil {
		return "", "", err
	}
	return b, arg, nil
}

func noArgs(cmd string, pos []string) error {
	if len(pos) > 0 {
		return usagef("%s: unexpected argument %s", cmd, printable(pos[0]))
	}
	return nil
}

func (c *cli) bindingsList(args []string) error {
	path, q, all, err := c.listRequest(args)
	if err != nil {
		return err
	}
	if c.json && !all {
		data, err := c.call(http.MethodGet, path, q, nil)
		if err != nil {
			return err
		}
		return c.writeJSON(data)
	}
	out := c.newListOutput()
	more, err := c.walkPages(path, q, all, out.item)
	if err != nil {
		out.abort()
		return err
	}
	if more != "" {
		if err := out.tbl.flush(); err != nil {
			return err
		}
		fmt.Fprintf(c.stderr, "More bindings: use --all, or run again with the same flags and --cursor %s\n", shellQuote(more))
		return nil
	}
	return out.finish()
}

// listRequest parses the flags of bindings list into the API request.
func (c *cli) listRequest(args []string) (path string, q url.Values, all bool, err error) {
	const cmd = "bindings list"
	fs := c.flagSet(cmd)
	backend := backendFlag(fs)
	server := fs.String("server", "", "only bindings to this server")
	prefix := fs.String("prefix", "", "only client ids starting with these bytes")
	limit := fs.Int("limit", 0, "page size (1-1000; default the API's, 100)")
	cursor := fs.String("cursor", "", "next_cursor of the previous page")
	allFlag := fs.Bool("all", false, "follow next_cursor to the end")
	pos, err := parseFlags(fs, args, true)
	if err != nil {
		return "", nil, false, err
	}
	if err := noArgs(cmd, pos); err != nil {
		return "", nil, false, err
	}
	if *limit < 0 || *limit > maxListLimit {
		return "", nil, false, usagef("%s: --limit must be from 1 to %d", cmd, maxListLimit)
	}
	b, err := c.backend(*backend)
	if err != nil {
		return "", nil, false, err
	}
	q = url.Values{}
	for k, v := range map[string]string{"server": *server, "prefix": *prefix, "cursor": *cursor} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if *limit > 0 {
		q.Set("limit", strconv.Itoa(*limit))
	}
	return backendPath(b) + "/bindings", q, *allFlag, nil
}

// walkPages calls item for every binding of the pages from q's cursor on:
// all of them with all, else one page, returning the next cursor ("" at
// the end).
func (c *cli) walkPages(path string, q url.Values, all bool, item func(json.RawMessage) error) (more string, err error) {
	for seen := map[string]bool{}; ; {
		var p pageJSON
		if _, err := c.getJSON(path, q, &p); err != nil {
			return "", err
		}
		for _, raw := range p.Items {
			if err := item(raw); err != nil {
				return "", err
			}
		}
		if p.NextCursor == "" || !all {
			return p.NextCursor, nil
		}
		if seen[p.NextCursor] {
			return "", fmt.Errorf("the API returned cursor %q twice; stopping", shorten(p.NextCursor))
		}
		seen[p.NextCursor] = true
		q.Set("cursor", p.NextCursor)
	}
}

// listOutput prints bindings as a table, or with --json --all streams the
// pages' items into one page object whose next_cursor is "", as if the
// API had answered at once.
type listOutput struct {
	c    *cli
	tbl  *table
	rows int
}

func (c *cli) newListOutput() *listOutput {
	o := &listOutput{c: c, tbl: newTable(c.stdout, "CLIENT ID", "SERVER", "TTL", "PINNED", "CONNECTED")}
	if c.json {
		fmt.Fprint(c.stdout, `{"items":[`)
	}
	return o
}

func (o *listOutput) item(raw json.RawMessage) error {
	defer func() { o.rows++ }()
	if !o.c.json {
		var bj bindingJSON
		if err := decode(raw, &bj); err != nil {
			return err
		}
		o.tbl.row(bindingRow(bj)...)
		return nil
	}
	if o.rows > 0 {
		fmt.Fprint(o.c.stdout, ",")
	}
	_, err := o.c.stdout.Write(raw)
	return err
}

// abort ends a JSON stream cut by an error: no half line is left.
func (o *listOutput) abort() {
	if o.c.json && o.rows > 0 {
		fmt.Fprintln(o.c.stdout)
	}
}

func (o *listOutput) finish() error {
	if o.c.json {
		_, err := fmt.Fprintln(o.c.stdout, `],"next_cursor":""}`)
		return err
	}
	if o.rows == 0 {
		fmt.Fprintln(o.c.stderr, "No bindings.")
		return nil
	}
	return o.tbl.flush()
}

func (c *cli) bindingsGet(args []string) error {
	const cmd = "bindings get"
	fs := c.flagSet(cmd)
	backend := backendFlag(fs)
	b, id, err := c.parseCommand(cmd, fs, backend, args, "client id")
	if err != nil {
		return err
	}
	var bj bindingJSON
	data, err := c.getJSON(backendPath(b)+"/bindings/"+url.PathEscape(id), nil, &bj)
	if err != nil {
		return err
	}
	return c.printBinding(data, bj)
}

func (c *cli) bindingsPin(args []string) error {
	const cmd = "bindings pin"
	fs := c.flagSet(cmd)
	backend := backendFlag(fs)
	server := fs.String("server", "", "the server to send the client to (required)")
	ttl := fs.String("ttl", "", "lifetime such as 10m, 24h or 3600 (seconds); 0 means no expiry (default: the configured ttl)")
	unpinned := fs.Bool("unpinned", false, "set the binding without pinning it")
	pos, err := parseFlags(fs, args, true)
	if err != nil {
		return err
	}
	id, err := oneArg(cmd, pos, "client id")
	if err != nil {
		return err
	}
	if *server == "" {
		return usagef("%s: --server is required", cmd)
	}
	body := struct {
		Server     string `json:"server"`
		TTLSeconds *int64 `json:"ttl_seconds,omitempty"`
		Pinned     bool   `json:"pinned"`
	}{Server: *server, Pinned: !*unpinned}
	if *ttl != "" {
		n, err := parseTTL(*ttl)
		if err != nil {
			return usagef("%s: --ttl %q: %v", cmd, *ttl, err)
		}
		body.TTLSeconds = &n
	}
	b, err := c.backend(*backend)
	if err != nil {
		return err
	}
	data, err := c.call(http.MethodPut, backendPath(b)+"/bindings/"+url.PathEscape(id), nil, body)
	if err != nil {
		return err
	}
	var bj bindingJSON
	if err := decode(data, &bj); err != nil {
		return err
	}
	return c.printBinding(data, bj)
}

// parseTTL reads a whole number of seconds, bare or as a Go duration.
func parseTTL(s string) (int64, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 {
			return 0, errors.New("must not be negative")
		}
		return n, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, errors.New("want a duration such as 90s, 10m or 24h, or 0 for no expiry")
	}
	if d < 0 {
		return 0, errors.New("must not be negative")
	}
	if d%time.Second != 0 {
		return 0, errors.New("must be a whole number of seconds")
	}
	return int64(d / time.Second), nil
}

func (c *cli) bindingsEvict(args []string) error {
	const cmd = "bindings evict"
	fs := c.flagSet(cmd)
	backend := backendFlag(fs)
	server := fs.String("server", "", "evict every binding of this server (needs --yes)")
	yes := fs.Bool("yes", false, "confirm evicting every binding of --server")
	pos, err := parseFlags(fs, args, true)
	if err != nil {
		return err
	}
	if *server != "" {
		if len(pos) > 0 {
			return usagef("%s: give either a client id or --server, not both", cmd)
		}
		if !*yes {
			return usagef("%s: evicting every binding of server %s needs --yes", cmd, printable(*server))
		}
		b, err := c.backend(*backend)
		if err != nil {
			return err
		}
		data, err := c.call(http.MethodDelete, backendPath(b)+"/bindings", url.Values{"server": {*server}}, nil)
		if err != nil {
			return err
		}
		if c.json {
			return c.writeJSON(data)
		}
		var out struct {
			Deleted int `json:"deleted"`
		}
		if err := decode(data, &out); err != nil {
			return err
		}
		_, err = fmt.Fprintf(c.stdout, "Evicted %d binding(s) of server %s in backend %s.\n", out.Deleted, printable(*server), printable(b))
		return err
	}
	if *yes {
		return usagef("%s: --yes only goes with --server", cmd)
	}
	id, err := oneArg(cmd, pos, "client id (or --server S --yes)")
	if err != nil {
		return err
	}
	b, err := c.backend(*backend)
	if err != nil {
		return err
	}
	if _, err := c.call(http.MethodDelete, backendPath(b)+"/bindings/"+url.PathEscape(id), nil, nil); err != nil {
		return err
	}
	if c.json {
		return nil // 204: the API says nothing
	}
	_, err = fmt.Fprintf(c.stdout, "Evicted the binding of %s in backend %s.\n", printable(id), printable(b))
	return err
}

func (c *cli) serversList(args []string) error {
	const cmd = "servers list"
	fs := c.flagSet(cmd)
	backend := backendFlag(fs)
	b, _, err := c.parseCommand(cmd, fs, backend, args, "")
	if err != nil {
		return err
	}
	var out struct {
		Servers []serverJSON `json:"servers"`
	}
	data, err := c.getJSON(backendPath(b)+"/servers", nil, &out)
	if err != nil {
		return err
	}
	if c.json {
		return c.writeJSON(data)
	}
	tbl := newTable(c.stdout, "SERVER", "ADDRESS", "WEIGHT", "STATE", "DRAIN", "BINDINGS", "CONNECTED")
	for _, s := range out.Servers {
		tbl.row(serverRow(s)...)
	}
	return tbl.flush()
}

func (c *cli) serversDrain(args []string, on bool) error {
	cmd := "servers undrain"
	if on {
		cmd = "servers drain"
	}
	fs := c.flagSet(cmd)
	backend := backendFlag(fs)
	b, name, err := c.parseCommand(cmd, fs, backend, args, "server name")
	if err != nil {
		return err
	}
	method := http.MethodDelete
	if on {
		method = http.MethodPut
	}
	data, err := c.call(method, backendPath(b)+"/servers/"+url.PathEscape(name)+"/drain", nil, nil)
	if err != nil {
		return err
	}
	if c.json {
		return c.writeJSON(data)
	}
	var s serverJSON
	if err := decode(data, &s); err != nil {
		return err
	}
	if !on {
		_, err = fmt.Fprintf(c.stdout, "Server %s of backend %s is no longer draining: it gets new clients again.\n", printable(s.Name), printable(b))
		return err
	}
	stay := "its bindings stay"
	if s.Bindings != nil {
		stay = fmt.Sprintf("its %d binding(s) stay", *s.Bindings)
	}
	_, err = fmt.Fprintf(c.stdout, "Server %s of backend %s is draining: it gets no new clients; %s until evicted\n(stickyd ctl bindings evict --backend %s --server %s --yes).\n",
		printable(s.Name), printable(b), stay, shellQuote(b), shellQuote(s.Name))
	return err
}

// printBinding prints one binding as a table, or the API's JSON.
func (c *cli) printBinding(data []byte, bj bindingJSON) error {
	if c.json {
		return c.writeJSON(data)
	}
	tbl := newTable(c.stdout, "CLIENT ID", "SERVER", "TTL", "PINNED", "CONNECTED")
	tbl.row(bindingRow(bj)...)
	return tbl.flush()
}

// writeJSON prints an API answer as it came, ending in a newline.
func (c *cli) writeJSON(data []byte) error {
	if _, err := c.stdout.Write(data); err != nil {
		return err
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		_, err := fmt.Fprintln(c.stdout)
		return err
	}
	return nil
}
