package api

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/stickyd/stickyd/agent"
	"github.com/stickyd/stickyd/store"
)

const (
	// bulkTimeout bounds one export or import: they walk a whole backend.
	bulkTimeout = 5 * time.Minute
	// maxImportErrors bounds the errors an import answer lists.
	maxImportErrors = 100
	// maxImportLine fits a 65535-byte id twice (client_id and its base64).
	maxImportLine = 512 << 10
)

// maxImportBytes bounds an import body (a million ordinary bindings); a
// variable so tests can lower it.
var maxImportBytes int64 = 256 << 20

// bulkRoutes registers export and import, with a longer timeout than the
// other /v1 routes.
func (s *Server) bulkRoutes(e *echo.Echo, auth []echo.MiddlewareFunc) {
	mw := append(append([]echo.MiddlewareFunc{}, auth...), withTimeout(bulkTimeout))
	e.Add(http.MethodGet, "/v1/backends/:backend/export", s.exportBindings, mw...)
	e.Add(http.MethodPost, "/v1/backends/:backend/import", s.importBindings, mw...)
}

// exportBindings streams every binding as NDJSON, one bindingJSON a line.
// It pages through List itself, so the caller needs no cursor; an id seen
// twice (Redis SCAN may return a key twice) is written once.
func (s *Server) exportBindings(c echo.Context) error {
	b, err := s.backend(c)
	if err != nil {
		return err
	}
	if _, err := query(c); err != nil {
		return err
	}
	ctx := c.Request().Context()
	extendDeadlines(c)
	// First page before the header, so a store failure is still an error.
	page, err := s.store.List(ctx, b.Name, store.ListOptions{Limit: store.MaxListLimit})
	if err != nil {
		return fmt.Errorf("export %s: %w", b.Name, err)
	}
	res := c.Response()
	res.Header().Set(echo.HeaderContentType, "application/x-ndjson")
	res.WriteHeader(http.StatusOK)
	w := bufio.NewWriterSize(res, 64<<10)
	enc := json.NewEncoder(w)
	seen := map[[32]byte]struct{}{}
	for {
		for _, it := range page.Items {
			h := sha256.Sum256([]byte(it.ClientID))
			if _, dup := seen[h]; dup {
				continue
			}
			seen[h] = struct{}{}
			if err := enc.Encode(toExportJSON(it)); err != nil {
				return nil // the client went away
			}
		}
		if page.NextCursor == "" {
			break
		}
		if page, err = s.store.List(ctx, b.Name, store.ListOptions{Limit: store.MaxListLimit, Cursor: page.NextCursor}); err != nil {
			// Headers are sent: cut the stream short so the client sees a
			// truncated body (no final newline-terminated success marker).
			s.log.Error("api: export cut short", "backend", b.Name, "err", err)
			_ = w.Flush()
			panic(http.ErrAbortHandler)
		}
	}
	return w.Flush()
}

// extendDeadlines lifts the server's 30 s read and write timeouts to
// bulkTimeout for this one connection: a whole backend takes longer.
func extendDeadlines(c echo.Context) {
	rc := http.NewResponseController(c.Response())
	dl := time.Now().Add(bulkTimeout)
	_ = rc.SetReadDeadline(dl)
	_ = rc.SetWriteDeadline(dl)
}

// importLine is one NDJSON line of an import: the export's fields.
// client_id_b64 wins over client_id when both are set.
type importLine struct {
	ClientID    *string `json:"client_id"`
	ClientIDB64 *string `json:"client_id_b64"`
	Server      string  `json:"server"`
	TTLSeconds  *int64  `json:"ttl_seconds"`
	Pinned      bool    `json:"pinned"`
}

type importJSON struct {
	Imported int      `json:"imported"`
	Skipped  int      `json:"skipped"`
	Errors   []string `json:"errors"`
}

// importBindings reads NDJSON bindings. mode=claim (the default) leaves
// an existing binding alone; mode=replace overwrites it. A bad line is
// reported in errors and the others still go in.
func (s *Server) importBindings(c echo.Context) error {
	b, err := s.backend(c)
	if err != nil {
		return err
	}
	q, err := query(c, "mode")
	if err != nil {
		return err
	}
	mode := q["mode"]
	if mode == "" {
		mode = "claim"
	}
	if mode != "claim" && mode != "replace" {
		return badRequest("mode must be claim or replace, got %q", truncate(mode, 32))
	}
	ctx := c.Request().Context()
	extendDeadlines(c)
	body := http.MaxBytesReader(c.Response(), c.Request().Body, maxImportBytes)
	out := importJSON{Errors: []string{}}
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), maxImportLine)
	defer s.counts.invalidate(b.Name)
	for n := 1; sc.Scan(); n++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		bind, err := s.parseImportLine(b, sc.Bytes())
		if err == nil {
			var imported bool
			imported, err = s.importOne(ctx, bind, mode == "replace")
			if imported {
				out.Imported++
			} else if err == nil {
				out.Skipped++
			}
		}
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				return fmt.Errorf("import into %s: %w", b.Name, err)
			}
			if len(out.Errors) < maxImportErrors {
				out.Errors = append(out.Errors, fmt.Sprintf("line %d: %v", n, err))
			}
		}
	}
	if err := sc.Err(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return bodyError(err)
		}
		if errors.Is(err, bufio.ErrTooLong) {
			return badRequest("a line is longer than %d bytes (imported %d before it)", maxImportLine, out.Imported)
		}
		if !errors.Is(err, io.EOF) {
			return fmt.Errorf("import into %s: reading the body: %w", b.Name, err)
		}
	}
	s.record(c, actImport, b.Name, "", nil, map[string]any{"mode": mode, "imported": out.Imported, "skipped": out.Skipped, "errors": len(out.Errors)})
	return c.JSON(http.StatusOK, out)
}

func (s *Server) parseImportLine(b *agent.Backend, line []byte) (store.Binding, error) {
	var l importLine
	if err := json.Unmarshal(line, &l); err != nil {
		return store.Binding{}, fmt.Errorf("bad JSON: %v", err)
	}
	bind := store.Binding{Backend: b.Name, Server: l.Server, Pinned: l.Pinned, TTL: s.cfg.TTL.D()}
	switch {
	case l.ClientIDB64 != nil:
		id, err := base64.StdEncoding.DecodeString(*l.ClientIDB64)
		if err != nil {
			return bind, fmt.Errorf("client_id_b64: %v", err)
		}
		bind.ClientID = string(id)
	case l.ClientID != nil:
		bind.ClientID = *l.ClientID
	}
	switch {
	case bind.ClientID == "":
		return bind, errors.New("client id is empty (set client_id_b64 or client_id)")
	case len(bind.ClientID) > store.MaxClientIDLen:
		return bind, fmt.Errorf("client id is %d bytes, at most %d", len(bind.ClientID), store.MaxClientIDLen)
	case b.ServerIndex(bind.Server) < 0:
		return bind, fmt.Errorf("unknown server %q", truncate(bind.Server, 64))
	}
	if t := l.TTLSeconds; t != nil {
		if *t < 0 || *t > maxTTLSeconds {
			return bind, fmt.Errorf("ttl_seconds must be from 0 (no expiry) to %d, got %d", maxTTLSeconds, *t)
		}
		bind.TTL = time.Duration(*t) * time.Second
	}
	return bind, nil
}

// importOne writes one binding and says whether it did.
func (s *Server) importOne(ctx context.Context, b store.Binding, replace bool) (bool, error) {
	if replace {
		return true, s.store.Put(ctx, b)
	}
	cl, err := s.store.GetOrClaim(ctx, b.Backend, b.ClientID, b.Server, b.TTL)
	if err != nil || !cl.Claimed {
		return false, err
	}
	if b.Pinned {
		// GetOrClaim cannot pin; this call created the binding, so setting
		// the flag on it overwrites nobody's choice.
		return true, s.store.Put(ctx, b)
	}
	return true, nil
}
