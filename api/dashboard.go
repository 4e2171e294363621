package api

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"

	"github.com/labstack/echo/v4"
)

// The dashboard is a static page (HTML, CSS and plain JavaScript, no build
// step, nothing fetched from elsewhere) served without auth at
// GET /dashboard/. Its script calls the /v1 API with the bearer token the
// user pastes, so it holds no secret and shows nothing by itself.
//
//go:embed dashboard
var dashboardFiles embed.FS

// DashboardPath is where the dashboard is served; GET / redirects there.
const DashboardPath = "/dashboard/"

// dashboardRedirect is relative ("/" and "/dashboard" both resolve it to
// /dashboard/), so the redirects also work behind a path prefix.
const dashboardRedirect = "dashboard/"

// dashboardCSP allows this origin's script, style and API only: no inline
// script, no framing (the page has drain buttons), no other origin.
const dashboardCSP = "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

var dashboardTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
}

// dashboardRoutes registers GET /, GET /dashboard and one route per
// embedded file; index.html is GET /dashboard/. Exact routes, no
// wildcard, so every other path still answers the JSON 404.
func (s *Server) dashboardRoutes(e *echo.Echo) {
	e.GET("/", redirectTo(dashboardRedirect))
	e.GET(strings.TrimSuffix(DashboardPath, "/"), redirectTo(dashboardRedirect))
	entries, err := fs.ReadDir(dashboardFiles, "dashboard")
	if err != nil {
		panic("api: embedded dashboard: " + err.Error()) // cannot happen: embedded at build time
	}
	for _, ent := range entries {
		name := ent.Name()
		ctype, ok := dashboardTypes[path.Ext(name)]
		if ent.IsDir() || !ok {
			continue
		}
		body, err := dashboardFiles.ReadFile("dashboard/" + name)
		if err != nil {
			panic("api: embedded dashboard: " + err.Error())
		}
		route := DashboardPath + name
		if name == "index.html" {
			route = DashboardPath
		}
		e.GET(route, func(c echo.Context) error {
			dashboardHeaders(c.Response().Header())
			return c.Blob(http.StatusOK, ctype, body)
		})
	}
}

// redirectTo answers 302 to target, keeping the query string
// (/?client=x reaches /dashboard/?client=x).
func redirectTo(target string) echo.HandlerFunc {
	return func(c echo.Context) error {
		dashboardHeaders(c.Response().Header())
		to := target
		if q := c.Request().URL.RawQuery; q != "" {
			to += "?" + q
		}
		return c.Redirect(http.StatusFound, to)
	}
}

func dashboardHeaders(h http.Header) {
	h.Set("Content-Security-Policy", dashboardCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	// Revalidate each time, so an upgraded stickyd serves its own script.
	h.Set("Cache-Control", "no-cache")
}
