// Package api serves stickyd's REST admin API: operators list, set and evict
// bindings and drain servers without touching HAProxy.
//
// Client ids are arbitrary bytes. In paths they are percent-encoded and the
// router matches on the still-escaped path, so an id "a/b" (sent as a%2Fb)
// is one path segment and differs from an id "a%2Fb" (sent as a%252Fb).
// JSON responses carry the id twice: client_id (invalid UTF-8 replaced by
// U+FFFD) and client_id_b64 (the exact bytes). For a backend keyed by
// username, "client id" means the username throughout.
//
// The routes and shapes are documented in openapi.yaml, served at
// GET /openapi.yaml.
package api

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/stickyd/stickyd/agent"
	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/store"
)

//go:embed openapi.yaml
var openapiYAML []byte

const (
	// maxBodyBytes bounds a request body; a binding fits in far less.
	maxBodyBytes = 64 << 10
	// requestTimeout bounds the store work of one /v1 request, so a hung
	// store cannot pile up handlers.
	requestTimeout = 10 * time.Second
	// readyTimeout bounds the store ping of /readyz.
	readyTimeout = time.Second
	// countTTL is how long GET /v1/backends reuses binding counts.
	countTTL = time.Second
	// maxTTLSeconds (10 years) keeps ttl_seconds far from overflowing a
	// time.Duration while allowing any sensible lifetime.
	maxTTLSeconds = 10 * 365 * 24 * 3600
)

// Options configure a Server.
type Options struct {
	Config *config.Config
	Store  store.Store
	Agent  *agent.Agent
	// Logger receives request and error logs; nil means slog.Default().
	Logger *slog.Logger
	// Token, when set, is required as "Authorization: Bearer <token>" on
	// every /v1 route. When empty, Config.APIToken is used, so forgetting
	// to pass it cannot leave a configured API open.
	Token string
	// ReadToken grants GET on /v1 only; empty means Config.APIReadToken.
	ReadToken string
	// Middleware runs around every request, outermost (e.g. metrics).
	Middleware []echo.MiddlewareFunc
	// Metrics, when set, is served without auth at GET /metrics.
	Metrics http.Handler
	// Connected counts bindings and connected clients per server in one
	// walk; nil: Store, if it is a store.ConnectedCounter.
	Connected store.ConnectedCounter
}

// Server is the admin API.
type Server struct {
	cfg    *config.Config
	store  store.Store
	agent  *agent.Agent
	log    *slog.Logger
	authOn bool
	// readToken is the read-only role's token ("" when there is none).
	readToken string
	guard     *guard
	echo      *echo.Echo
	http      *http.Server
	counts    *countCache
}

// New builds the API over a store and the agent that shares it.
func New(opts Options) (*Server, error) {
	if opts.Config == nil || opts.Store == nil || opts.Agent == nil {
		return nil, errors.New("api: Config, Store and Agent are required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	token := opts.Token
	if token == "" {
		token = opts.Config.APIToken
	}
	s := &Server{
		cfg:       opts.Config,
		store:     opts.Store,
		agent:     opts.Agent,
		log:       log,
		authOn:    token != "",
		readToken: opts.ReadToken,
		counts:    newCountCache(opts.Agent, opts.Store, connectedCounter(opts), countTTL),
		guard:     &guard{sameOrigin: token == ""},
	}
	s.guard.hostCheck.Store(token == "" || config.IsLoopback(opts.Config.APIListen))

	if s.readToken == "" {
		s.readToken = opts.Config.APIReadToken
	}
	if s.readToken != "" && !s.authOn {
		return nil, errors.New("api: a read-only token needs the admin token (api_token) too")
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	// v4 trusts X-Forwarded-For by default; the API sits behind no proxy.
	e.IPExtractor = echo.ExtractIPDirect()
	e.HTTPErrorHandler = s.handleError
	e.Pre(rawPath)
	e.Use(opts.Middleware...)
	e.Use(s.logRequests, recoverPanics, s.guard.middleware) // guard.go
	s.routes(e, token)
	if opts.Metrics != nil {
		e.GET("/metrics", echo.WrapHandler(opts.Metrics))
	}
	s.echo = e

	s.http = &http.Server{
		Handler:           e,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// The default, stated because a 65535-byte client id makes a
		// ~200 KB request line that must fit.
		MaxHeaderBytes: 1 << 20,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

func (s *Server) routes(e *echo.Echo, token string) {
	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	e.GET("/openapi.yaml", func(c echo.Context) error {
		return c.Blob(http.StatusOK, "application/yaml", openapiYAML)
	})
	s.dashboardRoutes(e) // static page, open: GET /, /dashboard, /dashboard/... (dashboard.go)

	// Middleware goes on each /v1 route rather than on a Group: a Group
	// with middleware adds a catch-all that turns every 405 into a 404.
	var auth []echo.MiddlewareFunc
	if token != "" {
		auth = append(auth, authorize(token, s.readToken)) // roles.go
	}
	mw := append(append([]echo.MiddlewareFunc{}, auth...), withTimeout(requestTimeout))
	v1 := func(method, path string, h echo.HandlerFunc) { e.Add(method, "/v1"+path, h, mw...) }
	v1(http.MethodGet, "/readyz", s.readyDetail)
	v1(http.MethodGet, "/whoami", s.whoami)
	v1(http.MethodGet, "/audit", s.getAudit)
	v1(http.MethodGet, "/backends", s.listBackends)
	v1(http.MethodGet, "/backends/:backend", s.getBackend)
	v1(http.MethodGet, "/backends/:backend/servers", s.listServers)
	v1(http.MethodGet, "/backends/:backend/servers/:server", s.getServer)
	v1(http.MethodPut, "/backends/:backend/servers/:server/drain", s.drain(true))
	v1(http.MethodDelete, "/backends/:backend/servers/:server/drain", s.drain(false))
	v1(http.MethodPost, "/backends/:backend/servers/:server/evacuate", s.startEvacuation)
	v1(http.MethodGet, "/backends/:backend/servers/:server/evacuate", s.getEvacuation)
	v1(http.MethodDelete, "/backends/:backend/servers/:server/evacuate", s.cancelEvacuation)
	v1(http.MethodGet, "/backends/:backend/bindings", s.listBindings)
	v1(http.MethodDelete, "/backends/:backend/bindings", s.deleteByServer)
	v1(http.MethodGet, "/backends/:backend/bindings/:client_id", s.getBinding)
	v1(http.MethodPut, "/backends/:backend/bindings/:client_id", s.putBinding)
	v1(http.MethodDelete, "/backends/:backend/bindings/:client_id", s.deleteBinding)
	v1(http.MethodGet, "/backends/:backend/placement/:client_id", s.placement)
	s.bulkRoutes(e, auth) // export.go
	s.rebalanceRoutes(v1) // rebalance.go
}

// Handler returns the API as an http.Handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.echo }

// Serve answers on l until Shutdown; it returns nil after a graceful
// shutdown. It refuses a non-loopback listener when no token is set.
func (s *Server) Serve(l net.Listener) error {
	if !s.authOn {
		if err := CheckListen(l.Addr().String(), ""); err != nil {
			return err
		}
	}
	s.guard.hostCheck.Store(!s.authOn || config.IsLoopback(l.Addr().String()))
	if err := s.http.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("api: serve: %w", err)
	}
	return nil
}

// Shutdown stops accepting requests and waits for those in flight until
// ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	if err := s.http.Shutdown(ctx); err != nil {
		return fmt.Errorf("api: shutdown: %w", err)
	}
	return nil
}

// CheckListen refuses to expose the API beyond loopback without a token.
// An empty addr means the API is disabled.
func CheckListen(addr, token string) error {
	if addr == "" || token != "" || config.IsLoopback(addr) {
		return nil
	}
	return fmt.Errorf("api: api_listen %q is not a loopback address and no api_token is set; set api_token (or api_token_file) or listen on 127.0.0.1", addr)
}

// rawPath makes the router match on the escaped path. net/http leaves
// URL.RawPath empty when the default encoding reproduces it, and echo then
// routes on the decoded Path, where "a%2Fb" has become "a/b" and a decoded
// "%" breaks unescaping; so RawPath is always set and every handler
// unescapes its parameters itself (see param).
func rawPath(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		u := c.Request().URL
		u.RawPath = u.EscapedPath()
		return next(c)
	}
}

func withTimeout(d time.Duration) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			ctx, cancel := context.WithTimeout(c.Request().Context(), d)
			defer cancel()
			c.SetRequest(c.Request().WithContext(ctx))
			return next(c)
		}
	}
}

// recoverPanics turns a handler panic into a 500 whose cause (with the
// stack) the error handler logs.
func recoverPanics(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
			}
		}()
		return next(c)
	}
}

// logRequests logs one line per request: debug normally, warn for 5xx. It
// logs neither headers nor bodies, so the token never reaches the log, and
// cuts the path short (a client id can be 64 KiB).
func (s *Server) logRequests(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		if err := next(c); err != nil {
			c.Error(err) // writes the response, so the status below is final
		}
		status := c.Response().Status
		// Debug only: failures are logged once, with their cause, by
		// handleError; a 503 from /readyz is an answer, not a failure.
		req := c.Request()
		s.log.LogAttrs(req.Context(), slog.LevelDebug, "api request",
			slog.String("method", req.Method),
			slog.String("path", truncate(req.URL.EscapedPath(), 256)),
			slog.Int("status", status),
			slog.Duration("duration", time.Since(start)),
			slog.String("remote", c.RealIP()),
		)
		return nil
	}
}

// readOnlyMessage answers a write the store refused (507).
const readOnlyMessage = "store is read-only: it refuses writes (Redis at maxmemory or a read-only replica); bindings are still read"

type errorBody struct {
	Error string `json:"error"`
}

// handleError answers every error as {"error": "..."}. HTTP errors keep
// their code and message; anything else is an internal error whose cause
// is logged but not shown.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var he *echo.HTTPError
	if errors.Is(err, store.ErrReadOnly) {
		s.log.Warn("api write refused: the store is read-only", "method", c.Request().Method, "route", c.Path(), "err", err)
		he = &echo.HTTPError{Code: http.StatusInsufficientStorage, Message: readOnlyMessage}
	} else if !errors.As(err, &he) {
		level := slog.LevelError
		if errors.Is(err, context.Canceled) {
			level = slog.LevelDebug // the client went away; nothing failed
		}
		s.log.Log(c.Request().Context(), level, "api request failed", "method", c.Request().Method, "route", c.Path(), "err", err)
		he = &echo.HTTPError{Code: http.StatusInternalServerError, Message: "internal error"}
	}
	msg, ok := he.Message.(string)
	if !ok {
		msg = fmt.Sprint(he.Message)
	}
	if werr := c.JSON(he.Code, errorBody{Error: msg}); werr != nil {
		s.log.Debug("api: cannot write error response", "err", werr)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// connectedCounter is Options.Connected, else the store if it counts.
func connectedCounter(opts Options) store.ConnectedCounter {
	if opts.Connected != nil {
		return opts.Connected
	}
	c, _ := opts.Store.(store.ConnectedCounter)
	return c
}
