package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// Roles a bearer token grants.
const (
	RoleAdmin = "admin" // api_token: everything
	RoleRead  = "read"  // api_read_token: GET only
	RoleOpen  = "open"  // no token configured: loopback only, everything
)

// ctxRole is the echo.Context key holding the caller's role.
const ctxRole = "stickyd.role"

// authorize requires "Authorization: Bearer <token>" with the admin token,
// or the read token for GET and HEAD (403 for anything else). Tokens are
// hashed first so the comparison takes the same time whatever the lengths.
func authorize(admin, read string) echo.MiddlewareFunc {
	wantAdmin := sha256.Sum256([]byte(admin))
	wantRead := sha256.Sum256([]byte(read))
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			scheme, cred, _ := strings.Cut(c.Request().Header.Get(echo.HeaderAuthorization), " ")
			got := sha256.Sum256([]byte(cred))
			isAdmin := subtle.ConstantTimeCompare(got[:], wantAdmin[:]) == 1
			isRead := read != "" && subtle.ConstantTimeCompare(got[:], wantRead[:]) == 1
			switch {
			case !strings.EqualFold(scheme, "Bearer") || (!isAdmin && !isRead):
				c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="stickyd"`)
				return echo.NewHTTPError(http.StatusUnauthorized, "missing or invalid bearer token")
			case isAdmin:
				c.Set(ctxRole, RoleAdmin)
			default:
				if m := c.Request().Method; m != http.MethodGet && m != http.MethodHead {
					return echo.NewHTTPError(http.StatusForbidden, "the read-only token (api_read_token) cannot change anything: use api_token")
				}
				c.Set(ctxRole, RoleRead)
			}
			return next(c)
		}
	}
}

// role is the caller's role (RoleOpen when the API has no token).
func role(c echo.Context) string {
	if r, ok := c.Get(ctxRole).(string); ok {
		return r
	}
	return RoleOpen
}

// whoami tells a client (the dashboard) what its token may do.
func (s *Server) whoami(c echo.Context) error {
	r := role(c)
	return c.JSON(http.StatusOK, struct {
		Role     string `json:"role"`
		CanWrite bool   `json:"can_write"`
	}{r, r != RoleRead})
}
