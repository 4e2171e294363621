package api

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/stickyd/stickyd/store"
)

// Audited actions.
const (
	actPin         = "pin"
	actEvict       = "evict"
	actEvictServer = "evict_server"
	actDrain       = "drain"
	actUndrain     = "undrain"
	actEvacuate    = "evacuate"
	actEvacStop    = "evacuate_cancel"
	actImport      = "import"
	actRebalance   = "rebalance"
	actRebalStop   = "rebalance_cancel"
)

// defaultAuditLimit and maxAuditLimit bound GET /v1/audit.
const (
	defaultAuditLimit = 100
	maxAuditLimit     = 1000
)

// record writes one audit entry to the store (so every agent sharing it
// shows the same trail) and one structured log line. A store failure is
// logged, not returned: the change itself is done.
func (s *Server) record(c echo.Context, action, backend, target string, before, after any) {
	e := store.AuditEntry{
		Time: time.Now().UTC(), Actor: role(c), Remote: c.RealIP(),
		Action: action, Backend: backend, Target: target,
		Before: auditJSON(before), After: auditJSON(after),
	}
	s.log.LogAttrs(c.Request().Context(), slog.LevelInfo, "audit",
		slog.String("actor", e.Actor), slog.String("remote", e.Remote), slog.String("action", action),
		slog.String("backend", backend), slog.String("target", strconv.Quote(truncate(target, 128))),
		slog.String("before", truncate(e.Before, 256)), slog.String("after", truncate(e.After, 256)))
	if err := s.store.AppendAudit(c.Request().Context(), e); err != nil {
		s.log.Warn("api: audit entry not stored", "action", action, "backend", backend, "err", err)
	}
}

func auditJSON(v any) string {
	if v == nil {
		return ""
	}
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%q", fmt.Sprint(v))
	}
	return string(data)
}

type auditEntryJSON struct {
	Time      time.Time       `json:"time"`
	Actor     string          `json:"actor"`
	Remote    string          `json:"remote"`
	Action    string          `json:"action"`
	Backend   string          `json:"backend"`
	Target    string          `json:"target"`
	TargetB64 string          `json:"target_b64"`
	Before    json.RawMessage `json:"before"`
	After     json.RawMessage `json:"after"`
}

func rawOrNull(s string) json.RawMessage {
	if s == "" || !json.Valid([]byte(s)) {
		return json.RawMessage("null")
	}
	return json.RawMessage(s)
}

// getAudit returns the latest entries, newest first.
func (s *Server) getAudit(c echo.Context) error {
	q, err := query(c, "limit")
	if err != nil {
		return err
	}
	limit := defaultAuditLimit
	if v, ok := q["limit"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxAuditLimit {
			return badRequest("limit must be an integer from 1 to %d, got %q", maxAuditLimit, truncate(v, 32))
		}
		limit = n
	}
	entries, err := s.store.Audit(c.Request().Context(), limit)
	if err != nil {
		return fmt.Errorf("read audit trail: %w", err)
	}
	out := struct {
		Items []auditEntryJSON `json:"items"`
	}{Items: make([]auditEntryJSON, 0, len(entries))}
	for _, e := range entries {
		out.Items = append(out.Items, auditEntryJSON{
			Time: e.Time, Actor: e.Actor, Remote: e.Remote, Action: e.Action, Backend: e.Backend,
			Target: e.Target, TargetB64: base64.StdEncoding.EncodeToString([]byte(e.Target)),
			Before: rawOrNull(e.Before), After: rawOrNull(e.After),
		})
	}
	return c.JSON(http.StatusOK, out)
}

// auditBefore reads the binding a change is about to replace (nil when
// there is none or the read fails: the change goes ahead either way).
func (s *Server) auditBefore(c echo.Context, backend, id string) any {
	b, err := s.store.Get(c.Request().Context(), backend, id)
	if err != nil {
		return nil
	}
	return toBindingJSON(b)
}
