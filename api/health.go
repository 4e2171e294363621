package api

import (
	"context"
	"net/http"

	"github.com/labstack/echo/v4"
)

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, statusJSON{Status: "ok"})
}

// readyz is open, so it says only whether the store answers: the error
// can name the Redis address. GET /v1/readyz (readyDetail) adds it.
func (s *Server) readyz(c echo.Context) error {
	st := s.ready(c)
	st.Error = ""
	return c.JSON(st.code, st.statusJSON)
}

func (s *Server) readyDetail(c echo.Context) error {
	st := s.ready(c)
	return c.JSON(st.code, st.statusJSON)
}

type readiness struct {
	statusJSON
	code int
}

func (s *Server) ready(c echo.Context) readiness {
	ctx, cancel := context.WithTimeout(c.Request().Context(), readyTimeout)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		return readiness{statusJSON{Status: "unavailable", Error: "store: " + err.Error()}, http.StatusServiceUnavailable}
	}
	if s.store.Stats().ReadOnly {
		// Still ready: connects are answered from the bindings in force.
		return readiness{statusJSON{Status: "read_only", Error: readOnlyMessage}, http.StatusOK}
	}
	return readiness{statusJSON{Status: "ok"}, http.StatusOK}
}
