package api

import (
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"

	"github.com/labstack/echo/v4"
)

// The guard keeps web pages away from the API. A browser on the operator's
// machine can reach a loopback API: any page may send it "simple" requests
// (a form POST, a no-cors fetch with a text/plain body) without reading
// the answer, and a DNS-rebinding page may even read answers, under its own
// host name. Without a token nothing else stands in the way, so:
//
//   - Host must be a loopback name or address (rebinding sends the
//     attacker's name). Checked unless a token is set and the listener is
//     not on loopback, where the token is the protection and proxies may
//     send any Host.
//   - Without a token, a state-changing request is refused when the browser
//     says it comes from another site (Sec-Fetch-Site), when its Origin is
//     not the API's own, or when it has a content type a form or a no-cors
//     fetch can send. Requests no browser page can send cross-site
//     unchallenged (curl, stickyd ctl, application/json) pass, and so does
//     the same-origin dashboard.
//
// A CORS preflight (OPTIONS) gets a 405 without CORS headers, so a page
// can send nothing but simple requests; the rules above cover those.
type guard struct {
	// hostCheck is true unless a token is set and the listener is not on
	// loopback. Serve sets it from the real listener.
	hostCheck atomic.Bool
	// sameOrigin enforces the cross-site rules; it is on without a token.
	sameOrigin bool
}

// formTypes are the content types a page may send cross-site without a
// CORS preflight (the Fetch standard's CORS-safelisted request headers).
var formTypes = map[string]bool{
	"application/x-www-form-urlencoded": true,
	"multipart/form-data":               true,
	"text/plain":                        true,
}

func (g *guard) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if g.hostCheck.Load() && !loopbackHost(r.Host) {
			return echo.NewHTTPError(http.StatusForbidden, "refused: Host "+quoteShort(r.Host)+
				" is not a loopback name or address (localhost, 127.0.0.0/8, [::1]); other names need api_token and a non-loopback api_listen")
		}
		if g.sameOrigin && changesState(r.Method) {
			if err := crossSite(r); err != nil {
				return err
			}
		}
		return next(c)
	}
}

// crossSite refuses a state-changing request a foreign page could have
// sent. Only browsers set Sec-Fetch-Site and Origin; curl and ctl send
// neither.
func crossSite(r *http.Request) error {
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "", "same-origin", "none":
	default:
		return echo.NewHTTPError(http.StatusForbidden, "refused: a "+quoteShort(site)+
			" browser request (Sec-Fetch-Site) cannot change state without api_token")
	}
	if origin := r.Header.Get("Origin"); origin != "" && !sameOrigin(origin, r) {
		return echo.NewHTTPError(http.StatusForbidden, "refused: Origin "+quoteShort(origin)+
			" is not this API's origin; a foreign web page cannot change state without api_token")
	}
	if ct := r.Header.Get(echo.HeaderContentType); ct != "" {
		essence, _, _ := strings.Cut(ct, ";")
		essence = strings.ToLower(strings.TrimSpace(essence))
		if formTypes[essence] {
			return echo.NewHTTPError(http.StatusUnsupportedMediaType, "refused: content type "+quoteShort(essence)+
				" is one a web page can send cross-site; send Content-Type: application/json (or no body)")
		}
	}
	return nil
}

func changesState(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

// sameOrigin reports whether an Origin header names the server the request
// was sent to: same scheme, host and port (default ports filled in).
func sameOrigin(origin string, r *http.Request) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || u.Path != "" || u.User != nil {
		return false // includes "null" (sandboxed frames, file: pages)
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if !strings.EqualFold(u.Scheme, scheme) {
		return false
	}
	oh, op := splitHost(u.Host, scheme)
	rh, rp := splitHost(r.Host, scheme)
	return oh != "" && strings.EqualFold(oh, rh) && op == rp
}

// splitHost splits host[:port], filling in the scheme's default port.
func splitHost(hostport, scheme string) (host, port string) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]"), ""
	}
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[scheme]
	}
	return host, port
}

// loopbackHost reports whether a Host header names this machine only:
// "localhost" or a loopback address, with any port. Other names under
// .localhost are not accepted: browsers keep them on loopback, but not
// every resolver does. An empty Host (HTTP/1.0) is no browser's and passes.
func loopbackHost(hostport string) bool {
	if hostport == "" {
		return true
	}
	host, _ := splitHost(hostport, "http")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// quoteShort quotes a header value for an error message, cut short.
func quoteShort(s string) string {
	return `"` + truncate(strings.ToValidUTF8(s, "?"), 100) + `"`
}
