package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/stickyd/stickyd/agent"
	"github.com/stickyd/stickyd/store"
)

// Response bodies. Field names are the API contract (see openapi.yaml).

type statusJSON struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

type backendJSON struct {
	Name    string       `json:"name"`
	Key     string       `json:"key"`
	Servers []serverJSON `json:"servers"`
}

type serverJSON struct {
	Name     string `json:"name"`
	Address  string `json:"address"`
	Weight   int    `json:"weight"`
	Up       bool   `json:"up"`
	Reported bool   `json:"reported"`
	Draining bool   `json:"draining"`
	// HAProxyDrain: this agent's HAProxy holds the server in drain or
	// maintenance (Runtime API, with haproxy.stats_socket).
	HAProxyDrain bool `json:"haproxy_drain"`
	// Bindings is nil when the store could not count them.
	Bindings *int `json:"bindings"`
	// Connected counts those bindings whose client an agent reports
	// connected; nil when unknown (no count, or a store that cannot tell).
	Connected *int `json:"connected"`
}

type bindingJSON struct {
	ClientID    string `json:"client_id"`
	ClientIDB64 string `json:"client_id_b64"`
	Server      string `json:"server"`
	TTLSeconds  int64  `json:"ttl_seconds"`
	Pinned      bool   `json:"pinned"`
	// Connected: an agent reports the client connected (its binding does
	// not expire meanwhile).
	Connected bool `json:"connected"`
}

type pageJSON struct {
	Items      []bindingJSON `json:"items"`
	NextCursor string        `json:"next_cursor"`
}

type placementJSON struct {
	ClientID    string `json:"client_id"`
	ClientIDB64 string `json:"client_id_b64"`
	Server      string `json:"server"`
}

// putBindingJSON is the PUT body; pointers tell "absent" from zero.
type putBindingJSON struct {
	Server     *string `json:"server"`
	TTLSeconds *int64  `json:"ttl_seconds"`
	Pinned     *bool   `json:"pinned"`
}

func (s *Server) listBackends(c echo.Context) error {
	out := make([]backendJSON, 0, len(s.agent.Backends()))
	for _, b := range s.agent.Backends() {
		out = append(out, s.backendJSON(c.Request().Context(), b))
	}
	return c.JSON(http.StatusOK, struct {
		Backends []backendJSON `json:"backends"`
	}{out})
}

func (s *Server) getBackend(c echo.Context) error {
	b, err := s.backend(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.backendJSON(c.Request().Context(), b))
}

func (s *Server) listServers(c echo.Context) error {
	b, err := s.backend(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, struct {
		Servers []serverJSON `json:"servers"`
	}{s.servers(c.Request().Context(), b)})
}

func (s *Server) getServer(c echo.Context) error {
	b, i, err := s.server(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.servers(c.Request().Context(), b)[i])
}

// drain starts (on) or stops draining a server. The state lives in the
// store, so every agent sharing it obeys; this agent re-reads it at once,
// the others within their poll interval.
func (s *Server) drain(on bool) echo.HandlerFunc {
	return func(c echo.Context) error {
		b, i, err := s.server(c)
		if err != nil {
			return err
		}
		ctx := c.Request().Context()
		name := b.Servers[i].Name
		if err := s.store.SetDraining(ctx, b.Name, name, on); err != nil {
			return fmt.Errorf("set draining of %s/%s: %w", b.Name, name, err)
		}
		act := actUndrain
		if on {
			act = actDrain
		}
		s.record(c, act, b.Name, name, nil, map[string]bool{"draining": on})
		if err := s.agent.RefreshDraining(ctx); err != nil {
			// The store holds the new state; Agent.Run catches up.
			s.log.Warn("api: drain saved but not yet seen by this agent", "backend", b.Name, "server", name, "err", err)
		}
		srv := s.servers(ctx, b)[i]
		srv.Draining = on // what the store, which every agent follows, now says
		return c.JSON(http.StatusOK, srv)
	}
}

func (s *Server) listBindings(c echo.Context) error {
	b, err := s.backend(c)
	if err != nil {
		return err
	}
	q, err := query(c, "server", "prefix", "cursor", "limit")
	if err != nil {
		return err
	}
	opts := store.ListOptions{Server: q["server"], Prefix: q["prefix"], Cursor: q["cursor"], Limit: store.DefaultListLimit}
	if opts.Server != "" {
		if err := knownServer(b, opts.Server, http.StatusBadRequest); err != nil {
			return err
		}
	}
	if v, ok := q["limit"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > store.MaxListLimit {
			return badRequest("limit must be an integer from 1 to %d, got %q", store.MaxListLimit, truncate(v, 32))
		}
		opts.Limit = n
	}
	page, err := s.store.List(c.Request().Context(), b.Name, opts)
	if errors.Is(err, store.ErrBadCursor) {
		return badRequest("invalid cursor %q: pass next_cursor from the previous page unchanged", truncate(opts.Cursor, 64))
	}
	if err != nil {
		return fmt.Errorf("list bindings of %s: %w", b.Name, err)
	}
	out := pageJSON{Items: make([]bindingJSON, 0, len(page.Items)), NextCursor: page.NextCursor}
	for _, it := range page.Items {
		out.Items = append(out.Items, toBindingJSON(it))
	}
	return c.JSON(http.StatusOK, out)
}

// deleteByServer evicts every binding of one server. The server parameter
// is required so that a bare DELETE cannot wipe a backend.
func (s *Server) deleteByServer(c echo.Context) error {
	b, err := s.backend(c)
	if err != nil {
		return err
	}
	q, err := query(c, "server")
	if err != nil {
		return err
	}
	server := q["server"]
	if server == "" {
		return badRequest("query parameter server is required: the server whose bindings to evict")
	}
	if err := knownServer(b, server, http.StatusBadRequest); err != nil {
		return err
	}
	n, err := s.store.DeleteByServer(c.Request().Context(), b.Name, server)
	s.counts.invalidate(b.Name) // even on error: some may be gone
	if err != nil {
		return fmt.Errorf("delete bindings of %s/%s: %w", b.Name, server, err)
	}
	s.record(c, actEvictServer, b.Name, server, nil, map[string]int{"deleted": n})
	return c.JSON(http.StatusOK, struct {
		Deleted int `json:"deleted"`
	}{n})
}

func (s *Server) getBinding(c echo.Context) error {
	b, id, err := s.binding(c)
	if err != nil {
		return err
	}
	got, err := s.store.Get(c.Request().Context(), b.Name, id)
	if errors.Is(err, store.ErrNotFound) {
		return noBinding(b, id)
	}
	if err != nil {
		return fmt.Errorf("get binding in %s: %w", b.Name, err)
	}
	return c.JSON(http.StatusOK, toBindingJSON(got))
}

// putBinding creates or replaces a binding. Everything is checked before
// the single store write, so a bad request changes nothing.
func (s *Server) putBinding(c echo.Context) error {
	b, id, err := s.binding(c)
	if err != nil {
		return err
	}
	var body putBindingJSON
	if err := decodeJSON(c, &body); err != nil {
		return err
	}
	if body.Server == nil || *body.Server == "" {
		return badRequest("server is required")
	}
	if err := knownServer(b, *body.Server, http.StatusBadRequest); err != nil {
		return err
	}
	bind := store.Binding{Backend: b.Name, ClientID: id, Server: *body.Server, TTL: s.cfg.TTL.D()}
	if t := body.TTLSeconds; t != nil {
		if *t < 0 || *t > maxTTLSeconds {
			return badRequest("ttl_seconds must be from 0 (no expiry) to %d, got %d", maxTTLSeconds, *t)
		}
		bind.TTL = time.Duration(*t) * time.Second
	}
	if body.Pinned != nil {
		bind.Pinned = *body.Pinned
	}
	before := s.auditBefore(c, b.Name, id)
	if err := s.store.Put(c.Request().Context(), bind); err != nil {
		return fmt.Errorf("put binding in %s: %w", b.Name, err)
	}
	s.counts.invalidate(b.Name)
	s.record(c, actPin, b.Name, id, before, toBindingJSON(bind))
	return c.JSON(http.StatusOK, toBindingJSON(bind))
}

func (s *Server) deleteBinding(c echo.Context) error {
	b, id, err := s.binding(c)
	if err != nil {
		return err
	}
	before := s.auditBefore(c, b.Name, id)
	err = s.store.Delete(c.Request().Context(), b.Name, id)
	if errors.Is(err, store.ErrNotFound) {
		return noBinding(b, id)
	}
	if err != nil {
		return fmt.Errorf("delete binding in %s: %w", b.Name, err)
	}
	s.counts.invalidate(b.Name)
	s.record(c, actEvict, b.Name, id, before, nil)
	return c.NoContent(http.StatusNoContent)
}

// placement says where rendezvous hashing puts a client that has no
// binding, by this agent's view of the servers ("" when every server is
// reported down). It ignores any existing binding.
func (s *Server) placement(c echo.Context) error {
	b, id, err := s.binding(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, placementJSON{
		ClientID: id, ClientIDB64: base64.StdEncoding.EncodeToString([]byte(id)), Server: b.Place([]byte(id)),
	})
}

func (s *Server) backendJSON(ctx context.Context, b *agent.Backend) backendJSON {
	out := backendJSON{Name: b.Name, Servers: s.servers(ctx, b)}
	if bc, ok := s.cfg.Backend(b.Name); ok {
		out.Key = bc.Key
	}
	return out
}

// servers describes a backend's servers in configuration order. A store
// failure leaves the binding counts null rather than hiding what the agent
// knows: this is where an operator looks during an outage.
func (s *Server) servers(ctx context.Context, b *agent.Backend) []serverJSON {
	counts, conn, err := s.counts.get(ctx, b.Name)
	if err != nil {
		// Debug: a dashboard polling during a store outage would repeat this
		// every few seconds; the agent already logs the outage, rate-limited.
		s.log.Debug("api: cannot count bindings", "backend", b.Name, "err", err)
	}
	states := b.States()
	out := make([]serverJSON, len(states))
	for i, st := range states {
		out[i] = serverJSON{
			Name: st.Name, Address: st.Address, Weight: st.Weight,
			Up: st.Up, Reported: st.Reported, Draining: st.Draining, HAProxyDrain: st.HAProxyDrain,
		}
		if err == nil {
			n := counts[st.Name]
			out[i].Bindings = &n
			if conn != nil {
				c := conn[st.Name]
				out[i].Connected = &c
			}
		}
	}
	return out
}

// backend resolves the :backend parameter, or answers 404.
func (s *Server) backend(c echo.Context) (*agent.Backend, error) {
	name, err := param(c, "backend")
	if err != nil {
		return nil, err
	}
	b := s.agent.Backend(name)
	if b == nil {
		return nil, echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("unknown backend %q", name))
	}
	return b, nil
}

// server resolves :backend and :server, or answers 404.
func (s *Server) server(c echo.Context) (*agent.Backend, int, error) {
	b, err := s.backend(c)
	if err != nil {
		return nil, 0, err
	}
	name, err := param(c, "server")
	if err != nil {
		return nil, 0, err
	}
	if err := knownServer(b, name, http.StatusNotFound); err != nil {
		return nil, 0, err
	}
	return b, b.ServerIndex(name), nil
}

// binding resolves :backend and :client_id.
func (s *Server) binding(c echo.Context) (*agent.Backend, string, error) {
	b, err := s.backend(c)
	if err != nil {
		return nil, "", err
	}
	id, err := param(c, "client_id")
	if err != nil {
		return nil, "", err
	}
	switch {
	case id == "":
		return nil, "", badRequest("client id is empty")
	case len(id) > store.MaxClientIDLen:
		return nil, "", badRequest("client id is %d bytes, at most %d", len(id), store.MaxClientIDLen)
	}
	return b, id, nil
}

// param returns a path parameter percent-decoded; the router hands it
// over still escaped (see rawPath). The router lets a parameter that ends
// the route swallow the rest of the path; a raw "/" means the client did
// not escape one, so the path names no route.
func param(c echo.Context, name string) (string, error) {
	raw := c.Param(name)
	if strings.Contains(raw, "/") {
		return "", echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("no such route: a %s with \"/\" must be sent as %%2F", name))
	}
	v, err := url.PathUnescape(raw)
	if err != nil { // net/http only passes valid escapes; checked anyway
		return "", badRequest("%s: bad percent-encoding in the path", name)
	}
	return v, nil
}

// query parses the query string strictly: a bad escape, an unknown or a
// repeated parameter is an error, so a typo cannot widen what a request
// touches (DELETE ?servr=n1 must not be read as "no filter").
func query(c echo.Context, allowed ...string) (map[string]string, error) {
	vals, err := url.ParseQuery(c.Request().URL.RawQuery)
	if err != nil {
		return nil, badRequest("bad query string: %v", err)
	}
	out := make(map[string]string, len(vals))
	for k, v := range vals {
		if !slices.Contains(allowed, k) {
			return nil, badRequest("unsupported query parameter %q (supported: %s)", truncate(k, 64), strings.Join(allowed, ", "))
		}
		if len(v) > 1 {
			return nil, badRequest("query parameter %q is given %d times", k, len(v))
		}
		out[k] = v[0]
	}
	return out, nil
}

// knownServer answers code when the backend has no such server, naming
// the valid ones.
func knownServer(b *agent.Backend, name string, code int) error {
	if b.ServerIndex(name) >= 0 {
		return nil
	}
	names := make([]string, len(b.Servers))
	for i, srv := range b.Servers {
		names[i] = srv.Name
	}
	return echo.NewHTTPError(code, fmt.Sprintf("unknown server %q in backend %q (servers: %s)",
		truncate(name, 64), b.Name, strings.Join(names, ", ")))
}

func noBinding(b *agent.Backend, id string) error {
	return echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("no binding for client id %q in backend %q", truncate(id, 64), b.Name))
}

// decodeJSON reads one JSON object into v: at most maxBodyBytes, no
// unknown fields, nothing after it.
func decodeJSON(c echo.Context, v any) error {
	r := c.Request()
	dec := json.NewDecoder(http.MaxBytesReader(c.Response(), r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return bodyError(err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return bodyError(err)
		}
		return badRequest("request body must hold a single JSON object")
	}
	return nil
}

// bodyError turns a decoding error into a 400 (413 when too large) that
// names the problem and, when there is one, the field.
func bodyError(err error) error {
	var (
		mbe *http.MaxBytesError
		te  *json.UnmarshalTypeError
		se  *json.SyntaxError
	)
	switch {
	case errors.As(err, &mbe):
		return echo.NewHTTPError(http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", mbe.Limit))
	case errors.Is(err, io.EOF):
		return badRequest("request body is empty: want a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("bad JSON: unexpected end of the body")
	case errors.As(err, &te) && te.Field == "":
		return badRequest("request body must be a JSON object, not %s", te.Value)
	case errors.As(err, &te):
		return badRequest("%s: want %s, got %s", te.Field, kindName(te.Type), te.Value)
	case errors.As(err, &se):
		return badRequest("bad JSON at byte %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: "))
	default: // e.g. `json: unknown field "x"`
		return badRequest("bad JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	default:
		return t.String()
	}
}

func badRequest(format string, args ...any) error {
	return echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf(format, args...))
}

func toBindingJSON(b store.Binding) bindingJSON {
	return bindingJSON{
		ClientID:    b.ClientID, // encoding/json replaces invalid UTF-8
		ClientIDB64: base64.StdEncoding.EncodeToString([]byte(b.ClientID)),
		Server:      b.Server,
		TTLSeconds:  ttlSeconds(b.TTL),
		Connected:   b.Connected,
		Pinned:      b.Pinned,
	}
}

// ttlSeconds rounds a remaining TTL up, so a live binding never shows 0
// (which means "no expiry").
func ttlSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}
