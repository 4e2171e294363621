package metrics

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stickyd/stickyd/agent"
	"github.com/stickyd/stickyd/store"
)

// Defaults of the bindings refresher.
const (
	DefaultBindingsInterval = 30 * time.Second
	DefaultBindingsTimeout  = 10 * time.Second
)

// bindingsCollector serves the last counts a refresh read: a scrape never
// touches the store (counting is a full scan on Redis).
type bindingsCollector struct {
	bindings  *prometheus.Desc
	refreshed *prometheus.Desc
	errors    *prometheus.CounterVec

	mu       sync.Mutex
	backends map[string]*backendCounts
	failing  map[string]bool // backends whose last refresh failed (for logging transitions)
}

type backendCounts struct {
	counts map[string]int // server → bindings; configured servers always present
	at     time.Time
}

func newBindingsCollector(reg prometheus.Registerer) *bindingsCollector {
	c := &bindingsCollector{
		bindings: prometheus.NewDesc(Namespace+"_bindings",
			"Live bindings per server, as of the last refresh (stickyd_bindings_refresh_timestamp_seconds). "+
				"Servers no longer configured appear while bindings to them remain.",
			[]string{"backend", "server"}, nil),
		refreshed: prometheus.NewDesc(Namespace+"_bindings_refresh_timestamp_seconds",
			"Unix time of the last successful count of a backend's bindings.",
			[]string{"backend"}, nil),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace,
			Name:      "bindings_refresh_errors_total",
			Help:      "Failed counts of a backend's bindings; stickyd_bindings keeps the last known values meanwhile.",
		}, []string{"backend"}),
		backends: map[string]*backendCounts{},
		failing:  map[string]bool{},
	}
	reg.MustRegister(c, c.errors)
	return c
}

func (c *bindingsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.bindings
	ch <- c.refreshed
}

func (c *bindingsCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for backend, bc := range c.backends {
		for server, n := range bc.counts {
			ch <- prometheus.MustNewConstMetric(c.bindings, prometheus.GaugeValue, float64(n), backend, server)
		}
		ch <- prometheus.MustNewConstMetric(c.refreshed, prometheus.GaugeValue,
			float64(bc.at.UnixNano())/1e9, backend)
	}
}

// RefreshBindings counts the bindings of every backend now, each count
// bounded by timeout (<= 0: DefaultBindingsTimeout). A backend whose count
// fails keeps its last known values; the error names it.
func (m *Metrics) RefreshBindings(ctx context.Context, st store.Store, backends []*agent.Backend, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultBindingsTimeout
	}
	c := m.bindings
	var errs []error
	for _, b := range backends {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		counts, err := st.CountByServer(cctx, b.Name)
		cancel()
		c.mu.Lock()
		wasFailing := c.failing[b.Name]
		c.failing[b.Name] = err != nil
		if err == nil {
			all := make(map[string]int, len(b.Servers)+len(counts))
			for _, s := range b.Servers {
				all[s.Name] = 0
			}
			for s, n := range counts {
				all[s] = n
			}
			c.backends[b.Name] = &backendCounts{counts: all, at: time.Now()}
		}
		c.mu.Unlock()
		switch {
		case err != nil:
			c.errors.WithLabelValues(b.Name).Inc()
			if ctx.Err() != nil {
				return ctx.Err() // shutting down: not a failure worth a line
			}
			if !wasFailing {
				// One line when counting starts failing, one when it recovers.
				m.log.Warn("metrics: cannot count bindings; stickyd_bindings keeps the last known values",
					"backend", b.Name, "timeout", timeout, "err", err)
			}
			errs = append(errs, fmt.Errorf("backend %q: %w", b.Name, err))
		case wasFailing:
			m.log.Info("metrics: counting bindings works again", "backend", b.Name)
		}
	}
	return errors.Join(errs...)
}

// RunBindingsRefresher refreshes stickyd_bindings now and then every
// interval (<= 0: DefaultBindingsInterval) until ctx ends. On Redis each
// refresh scans the backend's keys: with many agents on one Redis, a
// longer interval keeps that cheap.
func (m *Metrics) RunBindingsRefresher(ctx context.Context, st store.Store, backends []*agent.Backend, interval, timeout time.Duration) {
	if interval <= 0 {
		interval = DefaultBindingsInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		_ = m.RefreshBindings(ctx, st, backends, timeout) // failures are logged and counted
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
