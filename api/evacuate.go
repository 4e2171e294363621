package api

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/stickyd/stickyd/agent"
)

// defaultEvacuationRate (bindings per second) matches EMQX's default
// connection eviction rate: a pace brokers absorb without a takeover storm.
const defaultEvacuationRate = 500

type evacuationJSON struct {
	Backend  string     `json:"backend"`
	Server   string     `json:"server"`
	Rate     int        `json:"rate"`
	State    string     `json:"state"`
	Moved    int        `json:"moved"`
	Skipped  int        `json:"skipped"`
	Failed   int        `json:"failed"`
	Error    string     `json:"error,omitempty"`
	Started  time.Time  `json:"started"`
	Finished *time.Time `json:"finished,omitempty"`
}

func toEvacuationJSON(st agent.EvacuationStatus) evacuationJSON {
	out := evacuationJSON{Backend: st.Backend, Server: st.Server, Rate: st.Rate, State: st.State,
		Moved: st.Moved, Skipped: st.Skipped, Failed: st.Failed, Error: st.Error, Started: st.Started}
	if !st.Finished.IsZero() {
		f := st.Finished
		out.Finished = &f
	}
	return out
}

// startEvacuation drains the server and moves its bindings elsewhere at
// ?rate= per second; progress is read with GET on the same path.
func (s *Server) startEvacuation(c echo.Context) error {
	b, i, err := s.server(c)
	if err != nil {
		return err
	}
	q, err := query(c, "rate")
	if err != nil {
		return err
	}
	rate := defaultEvacuationRate
	if v, ok := q["rate"]; ok {
		if rate, err = strconv.Atoi(v); err != nil {
			return badRequest("rate %q is not an integer", truncate(v, 32))
		}
	}
	st, err := s.agent.Evacuate(c.Request().Context(), b.Name, b.Servers[i].Name, rate)
	switch {
	case errors.Is(err, agent.ErrBadRate):
		return badRequest("%v", err)
	case errors.Is(err, agent.ErrEvacuationRunning):
		return echo.NewHTTPError(http.StatusConflict, err.Error())
	case err != nil:
		return err
	}
	s.counts.invalidate(b.Name)
	s.record(c, actEvacuate, b.Name, b.Servers[i].Name, nil, map[string]int{"rate": rate})
	return c.JSON(http.StatusAccepted, toEvacuationJSON(st))
}

func (s *Server) getEvacuation(c echo.Context) error {
	b, i, err := s.server(c)
	if err != nil {
		return err
	}
	st, ok := s.agent.EvacuationStatus(b.Name, b.Servers[i].Name)
	if !ok {
		return echo.NewHTTPError(http.StatusNotFound, "no evacuation of "+b.Servers[i].Name+" was started by this agent")
	}
	return c.JSON(http.StatusOK, toEvacuationJSON(st))
}

// cancelEvacuation stops a running evacuation; the server stays draining.
func (s *Server) cancelEvacuation(c echo.Context) error {
	b, i, err := s.server(c)
	if err != nil {
		return err
	}
	st, ok := s.agent.CancelEvacuation(b.Name, b.Servers[i].Name)
	if !ok {
		return echo.NewHTTPError(http.StatusNotFound, "no evacuation of "+b.Servers[i].Name+" was started by this agent")
	}
	s.record(c, actEvacStop, b.Name, b.Servers[i].Name, nil, toEvacuationJSON(st))
	return c.JSON(http.StatusOK, toEvacuationJSON(st))
}
