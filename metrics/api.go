package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// unmatchedRoute labels requests no route matched.
const unmatchedRoute = "unmatched"

type apiMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newAPIMetrics(reg prometheus.Registerer) apiMetrics {
	am := apiMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace,
			Subsystem: "api",
			Name:      "requests_total",
			Help: "Admin API requests by method, route template (never the raw path: no client id becomes a label) " +
				"and status code. Requests no route matched have route=\"" + unmatchedRoute + "\".",
		}, []string{"method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace,
			Subsystem: "api",
			Name:      "request_duration_seconds",
			Help:      "Admin API request duration by method and route template.",
			Buckets:   APIBuckets,
		}, []string{"method", "route"}),
	}
	reg.MustRegister(am.requests, am.duration)
	return am
}

// APIMiddleware counts admin API requests. Install it outermost (before
// the API's own logging and recovery) so it sees the final status; when an
// inner handler returns an error it answers it through the echo error
// handler itself and returns nil.
func (m *Metrics) APIMiddleware() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			if err := next(c); err != nil {
				c.Error(err)
			}
			// c.Path is the route template echo matched ("" when none):
			// a client id in the URL never becomes a label value.
			route := c.Path()
			if route == "" {
				route = unmatchedRoute
			}
			method := methodLabel(c.Request().Method)
			status := c.Response().Status
			m.api.requests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
			m.api.duration.WithLabelValues(method, route).Observe(time.Since(start).Seconds())
			return nil
		}
	}
}

// methodLabel keeps the label set bounded whatever method a client sends.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "OTHER"
}
