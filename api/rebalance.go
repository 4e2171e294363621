package api

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/stickyd/stickyd/agent"
)

// defaultTolerance: every server within ±5% of its weight share.
const defaultTolerance = 0.05

type rebalanceJSON struct {
	Backend   string             `json:"backend"`
	Rate      int                `json:"rate"`
	Tolerance float64            `json:"tolerance"`
	State     string             `json:"state"`
	Before    map[string]int     `json:"before"`
	Want      map[string]float64 `json:"want"`
	Planned   int                `json:"planned"`
	Moved     int                `json:"moved"`
	Skipped   int                `json:"skipped"`
	Failed    int                `json:"failed"`
	Error     string             `json:"error,omitempty"`
	Started   time.Time          `json:"started"`
	Finished  *time.Time         `json:"finished,omitempty"`
}

func toRebalanceJSON(st agent.RebalanceStatus) rebalanceJSON {
	out := rebalanceJSON{
		Backend: st.Backend, Rate: st.Rate, Tolerance: st.Tolerance, State: st.State,
		Before: st.Before, Want: st.Want, Planned: st.Planned, Moved: st.Moved,
		Skipped: st.Skipped, Failed: st.Failed, Error: st.Error, Started: st.Started,
	}
	if !st.Finished.IsZero() {
		f := st.Finished
		out.Finished = &f
	}
	return out
}

func (s *Server) rebalanceRoutes(v1 func(method, path string, h echo.HandlerFunc)) {
	v1(http.MethodPost, "/backends/:backend/rebalance", s.startRebalance)
	v1(http.MethodGet, "/backends/:backend/rebalance", s.getRebalance)
	v1(http.MethodDelete, "/backends/:backend/rebalance", s.cancelRebalance)
}

func (s *Server) startRebalance(c echo.Context) error {
	b, err := s.backend(c)
	if err != nil {
		return err
	}
	q, err := query(c, "rate", "tolerance")
	if err != nil {
		return err
	}
	rate, tol := defaultEvacuationRate, defaultTolerance
	if v, ok := q["rate"]; ok {
		if rate, err = strconv.Atoi(v); err != nil {
			return badRequest("rate %q is not an integer", truncate(v, 32))
		}
	}
	if v, ok := q["tolerance"]; ok {
		if tol, err = strconv.ParseFloat(v, 64); err != nil {
			return badRequest("tolerance %q is not a number", truncate(v, 32))
		}
	}
	st, err := s.agent.Rebalance(c.Request().Context(), b.Name, rate, tol)
	switch {
	case errors.Is(err, agent.ErrBadRate), errors.Is(err, agent.ErrBadTolerance):
		return badRequest("%v", err)
	case errors.Is(err, agent.ErrRebalanceRunning), errors.Is(err, agent.ErrNoTargets):
		return echo.NewHTTPError(http.StatusConflict, err.Error())
	case err != nil:
		return err
	}
	s.counts.invalidate(b.Name)
	s.record(c, actRebalance, b.Name, "", st.Before, map[string]any{"rate": rate, "tolerance": tol, "planned": st.Planned, "want": st.Want})
	return c.JSON(http.StatusAccepted, toRebalanceJSON(st))
}

func (s *Server) getRebalance(c echo.Context) error {
	b, err := s.backend(c)
	if err != nil {
		return err
	}
	st, ok := s.agent.RebalanceStatus(b.Name)
	if !ok {
		return echo.NewHTTPError(http.StatusNotFound, "no rebalance of "+b.Name+" was started by this agent")
	}
	return c.JSON(http.StatusOK, toRebalanceJSON(st))
}

func (s *Server) cancelRebalance(c echo.Context) error {
	b, err := s.backend(c)
	if err != nil {
		return err
	}
	st, ok := s.agent.CancelRebalance(b.Name)
	if !ok {
		return echo.NewHTTPError(http.StatusNotFound, "no rebalance of "+b.Name+" was started by this agent")
	}
	s.record(c, actRebalStop, b.Name, "", nil, toRebalanceJSON(st))
	return c.JSON(http.StatusOK, toRebalanceJSON(st))
}
