package metrics

import (
	"context"
	"errors"
	"net"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stickyd/stickyd/store"
)

// Store operations, the values of the op label.
const (
	opGetOrClaim = iota
	opMove
	opGet
	opPut
	opDelete
	opList
	opCountByServer
	opDeleteByServer
	opSetDraining
	opDraining
	opPing
	numOps
)

var opNames = [numOps]string{
	"get_or_claim", "move", "get", "put", "delete", "list",
	"count_by_server", "delete_by_server", "set_draining", "draining", "ping",
}

// Error kinds, the values of the kind label.
const (
	kindTimeout  = "timeout"  // deadline exceeded (store_timeout, or a network timeout)
	kindCanceled = "canceled" // the caller went away
	kindOther    = "other"    // anything else: connection refused, protocol error, ...
)

type storeMetrics struct {
	ops [numOps]opMetrics
}

// opMetrics holds one operation's observers, resolved once so a call
// costs no label lookup and no allocation.
type opMetrics struct {
	dur                      prometheus.Observer
	notFound                 prometheus.Counter
	timeout, canceled, other prometheus.Counter
}

func newStoreMetrics(reg prometheus.Registerer) storeMetrics {
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace,
		Subsystem: "store",
		Name:      "operation_duration_seconds",
		Help:      "Duration of store calls by operation, failed ones included. get_or_claim and move are the connect path.",
		Buckets:   StoreBuckets,
	}, []string{"op"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace,
		Subsystem: "store",
		Name:      "errors_total",
		Help: "Failed store calls by operation and kind: timeout (deadline exceeded: store_timeout on the connect path), " +
			"canceled (the caller went away), other (connection refused, protocol error...). " +
			"\"Not found\" answers are not errors: see stickyd_store_not_found_total.",
	}, []string{"op", "kind"})
	notFound := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace,
		Subsystem: "store",
		Name:      "not_found_total",
		Help:      "Store calls answered \"no such binding\" (store.ErrNotFound), by operation; an answer, not a failure.",
	}, []string{"op"})
	reg.MustRegister(dur, errs, notFound)
	var sm storeMetrics
	for i, name := range opNames {
		sm.ops[i] = opMetrics{
			dur:      dur.WithLabelValues(name),
			notFound: notFound.WithLabelValues(name),
			timeout:  errs.WithLabelValues(name, kindTimeout),
			canceled: errs.WithLabelValues(name, kindCanceled),
			other:    errs.WithLabelValues(name, kindOther),
		}
	}
	return sm
}

// done records one call that started at start.
func (o *opMetrics) done(start time.Time, err error) {
	o.dur.Observe(time.Since(start).Seconds())
	if err != nil {
		o.fail(err)
	}
}

func (o *opMetrics) fail(err error) {
	switch errorKind(err) {
	case "":
	case "not_found":
		o.notFound.Inc()
	case kindTimeout:
		o.timeout.Inc()
	case kindCanceled:
		o.canceled.Inc()
	default:
		o.other.Inc()
	}
}

// errorKind classifies a store error: "" for answers that are not
// failures (a bad List cursor is the caller's mistake, answered 400 by the
// API), "not_found", or a kind label.
func errorKind(err error) string {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return "not_found"
	case errors.Is(err, store.ErrBadCursor):
		return ""
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return kindTimeout
	case errors.Is(err, context.Canceled):
		return kindCanceled
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return kindTimeout
	}
	return kindOther
}

// InstrumentStore returns st with every call timed by
// stickyd_store_operation_duration_seconds{op} and every failure counted
// by stickyd_store_errors_total{op,kind}. Results and errors pass through
// unchanged (errors.Is(err, store.ErrNotFound) still holds). It adds no
// allocation to any call.
func InstrumentStore(st store.Store, m *Metrics) store.Store {
	return &instrumentedStore{st: st, m: &m.store}
}

type instrumentedStore struct {
	st store.Store
	m  *storeMetrics
}

func (s *instrumentedStore) GetOrClaim(ctx context.Context, backend, clientID, proposed string, ttl time.Duration) (store.Claim, error) {
	start := time.Now()
	c, err := s.st.GetOrClaim(ctx, backend, clientID, proposed, ttl)
	s.m.ops[opGetOrClaim].done(start, err)
	return c, err
}

func (s *instrumentedStore) Move(ctx context.Context, backend, clientID, from, to string, ttl time.Duration) (store.Claim, error) {
	start := time.Now()
	c, err := s.st.Move(ctx, backend, clientID, from, to, ttl)
	s.m.ops[opMove].done(start, err)
	return c, err
}

func (s *instrumentedStore) Get(ctx context.Context, backend, clientID string) (store.Binding, error) {
	start := time.Now()
	b, err := s.st.Get(ctx, backend, clientID)
	s.m.ops[opGet].done(start, err)
	return b, err
}

func (s *instrumentedStore) Put(ctx context.Context, b store.Binding) error {
	start := time.Now()
	err := s.st.Put(ctx, b)
	s.m.ops[opPut].done(start, err)
	return err
}

func (s *instrumentedStore) Delete(ctx context.Context, backend, clientID string) error {
	start := time.Now()
	err := s.st.Delete(ctx, backend, clientID)
	s.m.ops[opDelete].done(start, err)
	return err
}

func (s *instrumentedStore) List(ctx context.Context, backend string, opts store.ListOptions) (store.Page, error) {
	start := time.Now()
	p, err := s.st.List(ctx, backend, opts)
	s.m.ops[opList].done(start, err)
	return p, err
}

func (s *instrumentedStore) CountByServer(ctx context.Context, backend string) (map[string]int, error) {
	start := time.Now()
	c, err := s.st.CountByServer(ctx, backend)
	s.m.ops[opCountByServer].done(start, err)
	return c, err
}

func (s *instrumentedStore) DeleteByServer(ctx context.Context, backend, server string) (int, error) {
	start := time.Now()
	n, err := s.st.DeleteByServer(ctx, backend, server)
	s.m.ops[opDeleteByServer].done(start, err)
	return n, err
}

func (s *instrumentedStore) SetDraining(ctx context.Context, backend, server string, draining bool) error {
	start := time.Now()
	err := s.st.SetDraining(ctx, backend, server, draining)
	s.m.ops[opSetDraining].done(start, err)
	return err
}

func (s *instrumentedStore) Draining(ctx context.Context, backend string) (map[string]bool, error) {
	start := time.Now()
	d, err := s.st.Draining(ctx, backend)
	s.m.ops[opDraining].done(start, err)
	return d, err
}

func (s *instrumentedStore) Ping(ctx context.Context) error {
	start := time.Now()
	err := s.st.Ping(ctx)
	s.m.ops[opPing].done(start, err)
	return err
}

// Close is not timed: it happens once.
func (s *instrumentedStore) Close() error { return s.st.Close() }

// Unwrap returns the store underneath.
func (s *instrumentedStore) Unwrap() store.Store { return s.st }

// Stats passes the store's own counters through.
func (s *instrumentedStore) Stats() store.Stats { return s.st.Stats() }

// Inline instruments the store's in-memory path, when it has one.
func (s *instrumentedStore) Inline() store.Inline {
	in := s.st.Inline()
	if in == nil {
		return nil
	}
	return &instrumentedInline{m: s.m, in: in}
}

// instrumentedInline times the calls the in-memory path answers (a call
// it passes on did nothing and costs little).
type instrumentedInline struct {
	m  *storeMetrics
	in store.Inline
}

func (s *instrumentedInline) TryGetOrClaim(backend string, clientID []byte, proposed string, ttl time.Duration) (store.Claim, bool) {
	start := time.Now()
	c, ok := s.in.TryGetOrClaim(backend, clientID, proposed, ttl)
	if ok {
		s.m.ops[opGetOrClaim].done(start, nil)
	}
	return c, ok
}

func (s *instrumentedInline) TryMove(backend string, clientID []byte, from, to string, ttl time.Duration) (store.Claim, bool) {
	start := time.Now()
	c, ok := s.in.TryMove(backend, clientID, from, to, ttl)
	if ok {
		s.m.ops[opMove].done(start, nil)
	}
	return c, ok
}
