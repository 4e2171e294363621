// Package metrics exposes stickyd's Prometheus metrics: decisions, store
// operations, the store circuit breaker, bindings per server, the SPOE
// listener and the admin API, plus the Go runtime and process collectors.
//
// Everything is registered on a dedicated registry (never the global one)
// and served by Handler. The decision and store hot paths use observers
// resolved once at construction: counting a decision or a store call costs
// a few atomic adds and no allocation. No metric carries a client id.
//
// See README.md in this directory for the metric list, example queries and
// alerts.
package metrics

import (
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/stickyd/stickyd/agent"
	"github.com/stickyd/stickyd/spoe"
	"github.com/stickyd/stickyd/store"
)

// Namespace prefixes every stickyd metric.
const Namespace = "stickyd"

// Buckets.
var (
	// DecisionBuckets: 50µs doubling to ~0.8s. A decision on the memory
	// store takes microseconds, on Redis about one round trip; the store
	// budget (store_timeout, 50ms by default) sits between 25.6 and 51.2ms.
	DecisionBuckets = prometheus.ExponentialBuckets(50e-6, 2, 15)
	// StoreBuckets: 50µs doubling to ~3.3s; scans (count and delete by
	// server) take far longer than the connect path.
	StoreBuckets = prometheus.ExponentialBuckets(50e-6, 2, 17)
	// APIBuckets: 0.5ms quadrupling to ~8s (the API's request timeout is
	// 10s).
	APIBuckets = prometheus.ExponentialBuckets(0.5e-3, 4, 8)
)

// Options configure Metrics.
type Options struct {
	// Version is reported by stickyd_build_info.
	Version string
	// Logger receives the bindings refresher's failures; nil means
	// slog.Default().
	Logger *slog.Logger
	// NoRuntimeCollectors leaves out the Go and process collectors (tests).
	NoRuntimeCollectors bool
}

// Metrics holds stickyd's collectors. Its methods are safe for concurrent
// use.
type Metrics struct {
	reg *prometheus.Registry
	log *slog.Logger

	// Decisions, indexed by agent.Outcome.
	decisions   []prometheus.Counter
	decisionDur []prometheus.Observer

	store storeMetrics
	api   apiMetrics

	bindings *bindingsCollector
}

// New builds the metrics on a fresh registry.
func New(opts Options) *Metrics {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	reg := prometheus.NewRegistry()
	m := &Metrics{reg: reg, log: log}

	if !opts.NoRuntimeCollectors {
		reg.MustRegister(
			collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		)
	}
	version := opts.Version
	if version == "" {
		version = "unknown"
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace:   Namespace,
		Name:        "build_info",
		Help:        "Always 1; the labels say which stickyd build runs.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	reg.MustRegister(buildInfo)

	decisions := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace,
		Name:      "decisions_total",
		Help: "Routing decisions by outcome: existing (bound to a live server), placed (new client bound), " +
			"moved (binding moved off a down server), pinned_down (pinned to a down server, routed elsewhere), " +
			"fallback (store failed or circuit breaker open: answered by rendezvous hash without the store), " +
			"not_stored (new client while the backend holds max_bindings: answered by rendezvous hash, not stored), " +
			"no_key (empty client id: no answer), no_server (every server down: no answer), " +
			"unknown_backend (backend not configured: no answer).",
	}, []string{"outcome"})
	decisionDur := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace,
		Name:      "decision_duration_seconds",
		Help:      "Time to decide one connection, store calls included, by outcome.",
		Buckets:   DecisionBuckets,
	}, []string{"outcome"})
	reg.MustRegister(decisions, decisionDur)
	for _, o := range agent.Outcomes() {
		m.decisions = append(m.decisions, decisions.WithLabelValues(o.String()))
		m.decisionDur = append(m.decisionDur, decisionDur.WithLabelValues(o.String()))
	}

	m.store = newStoreMetrics(reg)
	m.api = newAPIMetrics(reg)
	m.bindings = newBindingsCollector(reg)
	return m
}

// Registry returns the registry every stickyd metric is on, to add more.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus text format (or
// OpenMetrics when the scraper asks for it).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:            slogPromLogger{m.log},
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            m.reg, // promhttp_metric_handler_errors_total
		MaxRequestsInFlight: 4,
		EnableOpenMetrics:   true,
	})
}

// ObserveDecision counts one decision; it is meant for
// agent.Options.ObserveDecision and does not allocate.
func (m *Metrics) ObserveDecision(o agent.Outcome, d time.Duration) {
	if o < 0 || int(o) >= len(m.decisions) {
		return // an outcome this build does not know: cannot happen
	}
	m.decisions[o].Inc()
	m.decisionDur[o].Observe(d.Seconds())
}

// RegisterAgent exports the agent's circuit-breaker state, read at scrape
// time. Call it once per agent.
func (m *Metrics) RegisterAgent(a *agent.Agent) {
	for _, state := range []string{"closed", "open", "half_open"} {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: Namespace,
			Name:      "store_breaker_state",
			Help: "Store circuit breaker: 1 for the current state, 0 for the others. " +
				"open: the store failed repeatedly and decisions skip it (fallback) until a probe succeeds; " +
				"half_open: the cooldown is over and one decision probes the store.",
			ConstLabels: prometheus.Labels{"state": state},
		}, func() float64 {
			if a.BreakerState() == state {
				return 1
			}
			return 0
		}))
	}
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: Namespace,
		Name:      "store_breaker_skips_total",
		Help:      "Decisions answered without calling the store because the circuit breaker was open (a subset of outcome=\"fallback\").",
	}, func() float64 { return float64(a.Stats().BreakerSkips) }))
}

// RegisterSPOE exports an SPOE server's counters (its Stats method), read
// once per scrape. Call it once per server, after creating it.
func (m *Metrics) RegisterSPOE(stats func() spoe.Stats) {
	get := perScrape(stats)
	counter := func(name, help string, v func(spoe.Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Subsystem: "spoe", Name: name, Help: help},
			func() float64 { return float64(v(get())) })
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Subsystem: "spoe", Name: "connections",
			Help: "SPOE connections from HAProxy open now."},
			func() float64 { return float64(get().Connections) }),
		counter("connections_accepted_total", "SPOE connections accepted.", func(s spoe.Stats) uint64 { return s.Accepted }),
		counter("frames_total", "Valid SPOE frames received.", func(s spoe.Stats) uint64 { return s.Frames }),
		counter("bad_frames_total", "SPOE connections closed because of an invalid frame (something that is not HAProxy talks to the SPOE port, or a protocol mismatch).", func(s spoe.Stats) uint64 { return s.BadFrames }),
		counter("panics_total", "Panics recovered while handling SPOE connections or messages (a bug: each one cost a connection or an answer).", func(s spoe.Stats) uint64 { return s.Panics }),
		counter("messages_total", "stickyd-connect SPOE messages handled (one per MQTT CONNECT).", func(s spoe.Stats) uint64 { return s.Messages }),
		counter("bad_messages_total", "stickyd-connect messages ignored for missing or mistyped arguments (HAProxy configuration out of step with stickyd).", func(s spoe.Stats) uint64 { return s.BadMessages }),
		counter("health_checks_total", "SPOE health-check HELLOs from HAProxy.", func(s spoe.Stats) uint64 { return s.HealthChecks }),
		counter("connections_refused_total", "SPOE connections closed as soon as accepted: spoe_max_connections were open.", func(s spoe.Stats) uint64 { return s.Refused }),
	)
	for _, t := range []struct {
		phase string
		v     func(spoe.Stats) uint64
	}{
		{"hello", func(s spoe.Stats) uint64 { return s.HelloTimeouts }},
		{"frame", func(s spoe.Stats) uint64 { return s.FrameTimeouts }},
		{"idle", func(s spoe.Stats) uint64 { return s.IdleTimeouts }},
		{"write", func(s spoe.Stats) uint64 { return s.WriteTimeouts }},
	} {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Subsystem: "spoe", Name: "timeouts_total",
			Help:        "SPOE connections closed by a deadline, by phase: no whole HELLO within spoe_frame_timeout of the accept, a frame not whole within it of its first byte, no frame for spoe_idle_timeout, a write not taken within spoe_frame_timeout.",
			ConstLabels: prometheus.Labels{"phase": t.phase}},
			func() float64 { return float64(t.v(get())) }))
	}
}

// perScrape wraps a Stats method so that one scrape, which reads every
// metric of a component, takes one snapshot rather than one per metric.
func perScrape[T any](stats func() T) func() T {
	var (
		mu   sync.Mutex
		last T
		at   time.Time
	)
	return func() T {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(at) > 100*time.Millisecond {
			last, at = stats(), time.Now()
		}
		return last
	}
}

// slogPromLogger routes promhttp's errors (a collector failing during a
// scrape) to slog.
type slogPromLogger struct{ log *slog.Logger }

func (l slogPromLogger) Println(v ...any) {
	l.log.Warn("metrics: scrape error", "err", fmt.Sprint(v...))
}

// RegisterStoreState exports whether the store refuses writes, read at
// scrape time. Call it once.
func (m *Metrics) RegisterStoreState(stats func() store.Stats) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: Namespace,
		Name:      "store_read_only",
		Help: "1 while the store refuses writes (Redis at maxmemory with noeviction, or a read-only replica): " +
			"bound clients keep their server, new clients are not stored, API writes fail with 507.",
	}, func() float64 {
		if stats().ReadOnly {
			return 1
		}
		return 0
	}))
}

// RegisterStoreCache exports the local cache counters of a shared store (Redis), read
// once per scrape. Call it once, when the store has a cache (Stats().Cache).
func (m *Metrics) RegisterStoreCache(stats func() store.CacheStats) {
	get := perScrape(stats)
	counter := func(name, help string, labels prometheus.Labels, v func(store.CacheStats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Subsystem: "redis_cache", Name: name, Help: help, ConstLabels: labels},
			func() float64 { return float64(v(get())) })
	}
	m.reg.MustRegister(
		counter("lookups_total", "Connect-path lookups in the local cache of Redis bindings: hit (answered without Redis) or miss.",
			prometheus.Labels{"result": "hit"}, func(s store.CacheStats) uint64 { return s.Hits }),
		counter("lookups_total", "Connect-path lookups in the local cache of Redis bindings: hit (answered without Redis) or miss.",
			prometheus.Labels{"result": "miss"}, func(s store.CacheStats) uint64 { return s.Misses }),
		counter("invalidations_total", "Invalidations received: a binding that a store (any agent's, this one's included) changed or removed, dropped from this cache if it held it.", nil,
			func(s store.CacheStats) uint64 { return s.Invalidations }),
		counter("refreshes_total", "Background refreshes of cached bindings (TTL reset in Redis, binding confirmed).", nil,
			func(s store.CacheStats) uint64 { return s.Refreshes }),
		counter("refresh_errors_total", "Background refreshes that failed (the entry ages out).", nil,
			func(s store.CacheStats) uint64 { return s.RefreshErrors }),
		counter("resets_total", "Times the cache was emptied: its invalidation subscription was made, lost or remade.", nil,
			func(s store.CacheStats) uint64 { return s.Resets }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Subsystem: "redis_cache", Name: "enabled",
			Help: "1 while the cache's invalidation subscription is up and the cache answers; 0 while it is down (every connect asks Redis)."},
			func() float64 {
				if get().Enabled {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Subsystem: "redis_cache", Name: "entries",
			Help: "Bindings held in the local cache (at most redis_cache_size)."},
			func() float64 { return float64(get().Entries) }),
	)
}
