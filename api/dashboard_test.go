package api_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/stickyd/stickyd/agent"
	"github.com/stickyd/stickyd/api"
	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/internal/testenv"
	"github.com/stickyd/stickyd/store"
	"github.com/stickyd/stickyd/store/memory"
)

// hostileID is a client id that would run script or restyle the page if
// the dashboard put ids in as markup, and hides a bidi override.
const hostileID = "<img src=x onerror=\"window.pwned=1\"><b>bold</b>\u202eevil"

// dashEnv is a real API server on a loopback port: one backend "mqtt"
// with n1 (5 bindings) and n2 (2 bindings, draining), both reported up.
type dashEnv struct {
	url   string // http://127.0.0.1:port
	store store.Store
	agent *agent.Agent
	token string
}

func startDashboard(t *testing.T, token string, mw ...echo.MiddlewareFunc) *dashEnv {
	t.Helper()
	cfg := config.Default()
	cfg.TTL = config.Duration(10 * time.Minute)
	cfg.Backends = []config.Backend{{Name: "mqtt", Key: config.KeyClientID, Servers: []config.Server{
		{Name: "n1", Address: "10.0.0.1:1883", Weight: 1},
		{Name: "n2", Address: "10.0.0.2:1883", Weight: 1},
	}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	st := memory.New(memory.Options{})
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ag, err := agent.New(&cfg, st, log, agent.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// HAProxy reports both servers up with a CONNECT, as it does on each.
	q := &agent.Query{Backend: "mqtt", ClientID: []byte("probe")}
	q.SetUp(0, true)
	q.SetUp(1, true)
	if d := ag.Decide(ctx, q); d.Server == "" {
		t.Fatalf("decide: %+v", d)
	}
	if err := st.Delete(ctx, "mqtt", "probe"); err != nil {
		t.Fatal(err)
	}
	binds := map[string]string{
		"dev-1": "n1", "dev-2": "n1", "dev-4": "n1", "a/b": "n1", hostileID: "n1",
		"dev-3": "n2", "with space": "n2",
	}
	for id, srv := range binds {
		if err := st.Put(ctx, store.Binding{Backend: "mqtt", ClientID: id, Server: srv, TTL: time.Hour, Pinned: id == "dev-1"}); err != nil {
			t.Fatal(err)
		}
	}
	// dev-1 and dev-3 are connected through an agent's HAProxy.
	if _, err := st.TouchConnected(ctx, "mqtt", []store.Touch{{ClientID: "dev-1", TTL: time.Hour}, {ClientID: "dev-3", TTL: time.Hour}}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := st.SetDraining(ctx, "mqtt", "n2", true); err != nil {
		t.Fatal(err)
	}
	if err := ag.RefreshDraining(ctx); err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.Options{Config: &cfg, Store: st, Agent: ag, Logger: log, Token: token, Middleware: mw})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &dashEnv{url: "http://" + l.Addr().String(), store: st, agent: ag, token: token}
}

func (d *dashEnv) draining(t *testing.T, server string) bool {
	t.Helper()
	for _, s := range d.agent.Backend("mqtt").States() {
		if s.Name == server {
			return s.Draining
		}
	}
	t.Fatalf("no server %s", server)
	return false
}

// TestDashboardServing checks what the server sends, without a browser:
// the files, their types and security headers, the redirects, and that
// the routes leave the JSON 404/405 of other paths alone.
func TestDashboardServing(t *testing.T) {
	e := newEnv(t, memory.New(memory.Options{}), withToken("tok"))
	wantHeaders := map[string]string{
		"X-Content-Type-Options": "nosniff",
		"Referrer-Policy":        "no-referrer",
		"X-Frame-Options":        "DENY",
	}
	checkHeaders := func(t *testing.T, r response) {
		t.Helper()
		for k, v := range wantHeaders {
			if got := r.Header.Get(k); got != v {
				t.Errorf("%s: %q, want %q", k, got, v)
			}
		}
		csp := r.Header.Get("Content-Security-Policy")
		for _, d := range []string{"default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"} {
			if !strings.Contains(csp, d) {
				t.Errorf("CSP %q lacks %q", csp, d)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") || strings.Contains(csp, "*") {
			t.Errorf("CSP %q is too loose", csp)
		}
	}

	files := map[string]string{
		"/dashboard/":          "text/html; charset=utf-8",
		"/dashboard/app.js":    "text/javascript; charset=utf-8",
		"/dashboard/style.css": "text/css; charset=utf-8",
		"/dashboard/ops.js":    "text/javascript; charset=utf-8",
	}
	bodies := map[string]string{}
	for path, ctype := range files {
		t.Run(path, func(t *testing.T) {
			// Open without a token: the page holds nothing; its script asks.
			r := e.do(t, request{method: http.MethodGet, target: path, noAuth: true})
			want(t, r, http.StatusOK)
			if got := r.Header.Get("Content-Type"); got != ctype {
				t.Errorf("Content-Type %q, want %q", got, ctype)
			}
			checkHeaders(t, r)
			bodies[path] = string(r.Body)
		})
	}
	page, js, css := bodies["/dashboard/"], bodies["/dashboard/app.js"]+bodies["/dashboard/ops.js"], bodies["/dashboard/style.css"]
	// No inline script or handler, no style attribute: the CSP forbids them.
	for _, tag := range regexp.MustCompile(`(?is)<script\b[^>]*>`).FindAllString(page, -1) {
		if !strings.Contains(tag, `src="app.js"`) && !strings.Contains(tag, `src="ops.js"`) {
			t.Errorf("inline script: %s", tag)
		}
	}
	if m := regexp.MustCompile(`(?i)\son[a-z]+=|\sstyle=|javascript:`).FindString(page); m != "" {
		t.Errorf("index.html has %q", m)
	}
	// Nothing from elsewhere: no CDN, no web font.
	for name, body := range map[string]string{"index.html": page, "app.js": js, "style.css": css} {
		if m := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`).FindString(body); m != "" {
			t.Errorf("%s refers to %q", name, m)
		}
	}
	if m := regexp.MustCompile(`(?i)@import|url\(`).FindString(css); m != "" {
		t.Errorf("style.css loads %q", m)
	}
	// Data goes in as text only.
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
		if strings.Contains(js, bad) {
			t.Errorf("app.js uses %s", bad)
		}
	}

	for _, tc := range []struct{ target, location string }{
		{"/", "dashboard/"},
		{"/?client=a%2Fb", "dashboard/?client=a%2Fb"},
		{"/dashboard", "dashboard/"},
		{"/dashboard?client=x", "dashboard/?client=x"},
	} {
		r := e.do(t, request{method: http.MethodGet, target: tc.target, noAuth: true})
		if r.Code != http.StatusFound || r.Header.Get("Location") != tc.location {
			t.Errorf("GET %s: %d Location %q, want 302 %q", tc.target, r.Code, r.Header.Get("Location"), tc.location)
		}
		checkHeaders(t, r)
		// The relative Location lands on the page from either path.
		base, _ := url.Parse("http://h" + tc.target)
		loc, _ := url.Parse(tc.location)
		if got := base.ResolveReference(loc).Path; got != "/dashboard/" {
			t.Errorf("GET %s redirects to %s", tc.target, got)
		}
	}

	// Everything else keeps the API's JSON errors.
	for _, target := range []string{"/nope", "/dashboard/nope", "/dashboard/app.js/x", "/dashboard/../v1"} {
		want(t, e.do(t, request{method: http.MethodGet, target: target, noAuth: true}), http.StatusNotFound)
	}
	want(t, e.do(t, request{method: http.MethodPost, target: "/", noAuth: true}), http.StatusMethodNotAllowed)
	want(t, e.do(t, request{method: http.MethodPut, target: "/dashboard/", noAuth: true}), http.StatusMethodNotAllowed)
	want(t, e.do(t, request{method: http.MethodGet, target: "/v1/backends", noAuth: true}), http.StatusUnauthorized)
}

// encodeURIComponent is JavaScript's, which app.js uses for each path
// segment: it leaves A-Z a-z 0-9 - _ . ! ~ * ' ( ) and escapes the rest
// as UTF-8.
func encodeURIComponent(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.!~*'()", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// TestDashboardAPICalls makes the requests app.js makes, escaped as it
// escapes them, with its headers, and checks the answers it relies on.
func TestDashboardAPICalls(t *testing.T) {
	e := newEnv(t, memory.New(memory.Options{}), withToken("tok"))
	ids := []string{"dev-1", "a/b", "a%2Fb", "with space", "x+y@z:1;2=3&4,5$", "ünï", hostileID, "'()*!~"}
	for _, id := range ids {
		want(t, e.put(t, bindingPath("mqtt", id), `{"server":"n2","pinned":true}`), http.StatusOK)
	}
	// What the page sends: Accept, and the bearer token the user pasted.
	call := func(method, path string) response {
		return e.do(t, request{method: method, target: "/v1/" + path, header: http.Header{"Accept": {"application/json"}}})
	}
	for _, id := range ids {
		r := call(http.MethodGet, "backends/"+encodeURIComponent("mqtt")+"/bindings/"+encodeURIComponent(id))
		want(t, r, http.StatusOK)
		b := decode[binding](t, r)
		raw, _ := base64.StdEncoding.DecodeString(b.ClientIDB64)
		if string(raw) != id || b.Server != "n2" || !b.Pinned {
			t.Errorf("lookup %q: %+v", id, b)
		}
	}
	// No binding: the page says so, then asks where the client would go.
	want(t, call(http.MethodGet, "backends/mqtt/bindings/"+encodeURIComponent("nobody/x")), http.StatusNotFound, "no binding")
	r := call(http.MethodGet, "backends/mqtt/placement/"+encodeURIComponent("nobody/x"))
	want(t, r, http.StatusOK)
	var p struct{ Server string }
	if err := json.Unmarshal(r.Body, &p); err != nil || p.Server != e.agent.Backend("mqtt").Place([]byte("nobody/x")) {
		t.Errorf("placement %s", r.Body)
	}
	// Drain and undrain buttons.
	r = call(http.MethodPut, "backends/mqtt/servers/n1/drain")
	want(t, r, http.StatusOK)
	if s := decode[server](t, r); !s.Draining {
		t.Errorf("drain: %s", r.Body)
	}
	r = call(http.MethodGet, "backends")
	want(t, r, http.StatusOK)
	var bs struct{ Backends []backend }
	strictDecode(t, r.Body, &bs)
	if n1 := bs.Backends[0].Servers[0]; n1.Name != "n1" || !n1.Draining {
		t.Errorf("after drain: %+v", n1)
	}
	r = call(http.MethodDelete, "backends/mqtt/servers/n1/drain")
	want(t, r, http.StatusOK)
	if s := decode[server](t, r); s.Draining {
		t.Errorf("undrain: %s", r.Body)
	}
	// Without the token the page gets a 401 with a message to show.
	want(t, e.do(t, request{method: http.MethodGet, target: "/v1/backends", noAuth: true}), http.StatusUnauthorized, "bearer token")
}

// chromiumArgs are the flags of every headless run: no sandbox (tests
// may run as root), nothing fetched from Google, a throwaway profile.
func chromiumArgs(profile string) []string {
	return []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--hide-scrollbars", "--user-data-dir=" + profile,
	}
}

// chromiumEnv keeps Chromium's caches and config out of the real home.
func chromiumEnv(t *testing.T) []string {
	home := t.TempDir()
	return []string{"HOME=" + home, "XDG_CONFIG_HOME=" + home, "XDG_CACHE_HOME=" + home}
}

// runChromium runs a one-shot headless Chromium and returns its stdout.
func runChromium(t *testing.T, extra ...string) []byte {
	t.Helper()
	bin := testenv.RequireBinary(t, "chromium")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(chromiumArgs(t.TempDir()), extra...)...)
	cmd.Env = append(os.Environ(), chromiumEnv(t)...)
	// Its own process group, so the renderer and GPU helpers go too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // stragglers
	}
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", extra, err, stderr.String())
	}
	return stdout.Bytes()
}

// element is one start tag of a dumped DOM with its text up to the next tag.
type element struct {
	attrs map[string]string
	text  string
}

// findElements returns the tags named tag in a serialized DOM. Chromium
// serializes attributes as name="value", which is all this reads.
func findElements(dom, tag string) []element {
	re := regexp.MustCompile(`(?s)<` + tag + `\b([^>]*)>([^<]*)`)
	attr := regexp.MustCompile(`([a-zA-Z-]+)(?:="([^"]*)")?`)
	var out []element
	for _, m := range re.FindAllStringSubmatch(dom, -1) {
		el := element{attrs: map[string]string{}, text: html.UnescapeString(m[2])}
		for _, a := range attr.FindAllStringSubmatch(m[1], -1) {
			el.attrs[a[1]] = html.UnescapeString(a[2])
		}
		out = append(out, el)
	}
	return out
}

func findOne(t *testing.T, dom, tag string, match func(element) bool, what string) element {
	t.Helper()
	var found []element
	for _, el := range findElements(dom, tag) {
		if match(el) {
			found = append(found, el)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s: found %d, want 1\n%s", what, len(found), dom)
	}
	return found[0]
}

func hasClass(el element, c string) bool {
	return strings.Contains(" "+el.attrs["class"]+" ", " "+c+" ")
}

// TestDashboardBrowser loads the dashboard in headless Chromium: a
// screenshot that must show a rendered page, and the DOM after the
// script ran, which must show both servers, the drain, the counts, the
// buttons and the binding the URL asked for.
func TestDashboardBrowser(t *testing.T) {
	testenv.RequireBinary(t, "chromium")
	d := startDashboard(t, "")

	t.Run("screenshot", func(t *testing.T) {
		shot := filepath.Join(t.TempDir(), "dashboard.png")
		runChromium(t, "--screenshot="+shot, "--window-size=1200,800", "--virtual-time-budget=5000",
			d.url+"/dashboard/?client="+url.QueryEscape("with space"))
		data, err := os.ReadFile(shot)
		if err != nil {
			t.Fatalf("no screenshot: %v", err)
		}
		if p := os.Getenv("STICKYD_DASHBOARD_SCREENSHOT"); p != "" {
			_ = os.WriteFile(p, data, 0o644) // for a person to look at
		}
		if ct := http.DetectContentType(data); ct != "image/png" {
			t.Fatalf("screenshot is %s", ct)
		}
		img, err := png.Decode(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("decode png: %v", err)
		}
		if b := img.Bounds(); b.Dx() != 1200 || b.Dy() != 800 {
			t.Fatalf("screenshot is %v, want 1200x800", b)
		}
		checkScreenshot(t, img)
	})

	t.Run("dom", func(t *testing.T) {
		dom := string(runChromium(t, "--dump-dom", "--virtual-time-budget=5000",
			d.url+"/dashboard/?client="+url.QueryEscape("dev-1")))
		if !strings.Contains(dom, `data-state="ok"`) {
			t.Fatalf("the page did not load the backends:\n%s", dom)
		}
		for _, name := range []string{"n1", "n2"} {
			findOne(t, dom, "span", func(e element) bool { return hasClass(e, "server-name") && e.text == name }, "server "+name)
		}
		rows := findElements(dom, "tr")
		var drainRows []string
		for _, r := range rows {
			if hasClass(r, "is-draining") {
				drainRows = append(drainRows, r.attrs["data-server"])
			}
		}
		if strings.Join(drainRows, ",") != "n2" {
			t.Errorf("draining rows %v, want [n2]", drainRows)
		}
		findOne(t, dom, "span", func(e element) bool { return hasClass(e, "draining") && e.text == "draining" }, "draining badge")
		up := 0
		for _, e := range findElements(dom, "span") {
			if hasClass(e, "badge") && hasClass(e, "up") && e.text == "up" {
				up++
			}
		}
		if up != 2 {
			t.Errorf("%d up badges, want 2", up)
		}
		for _, n := range []string{"5", "2"} { // n1, n2
			findOne(t, dom, "span", func(e element) bool { return hasClass(e, "count") && e.attrs["data-count"] == n && e.text == n }, "count "+n)
		}
		findOne(t, dom, "span", func(e element) bool { return hasClass(e, "total") && e.text == "7 bindings" }, "total")
		// One connected client on each server, beside the counts.
		conn := 0
		for _, e := range findElements(dom, "td") {
			if hasClass(e, "connected") && e.attrs["data-count"] == "1" && e.text == "1" {
				conn++
			}
		}
		if conn != 2 {
			t.Errorf("%d connected cells showing 1, want 2 (n1, n2)", conn)
		}
		for server, action := range map[string]string{"n1": "drain", "n2": "undrain"} {
			b := findOne(t, dom, "button", func(e element) bool { return e.attrs["data-server"] == server }, "button of "+server)
			if b.attrs["data-action"] != action || b.attrs["data-backend"] != "mqtt" || b.attrs["aria-label"] == "" {
				t.Errorf("button of %s: %v, want data-action=%s", server, b.attrs, action)
			}
		}
		// ?client=dev-1 was looked up at load.
		res := findOne(t, dom, "div", func(e element) bool { return e.attrs["id"] == "result" }, "result")
		if res.attrs["data-state"] != "bound" {
			t.Fatalf("result %v\n%s", res.attrs, dom)
		}
		findOne(t, dom, "dd", func(e element) bool { return hasClass(e, "bound-server") && e.text == "n1" }, "bound server")
		findOne(t, dom, "dd", func(e element) bool { return hasClass(e, "client-id") && e.text == "dev-1" }, "bound id")
		if !regexp.MustCompile(`<dt>Pinned</dt><dd>yes</dd>`).MatchString(dom) {
			t.Error("dev-1 is not shown pinned")
		}
		findOne(t, dom, "dd", func(e element) bool { return hasClass(e, "connected") && e.text == "yes" }, "dev-1 connected")
	})

	t.Run("no binding", func(t *testing.T) {
		const id = "nobody/here"
		dom := string(runChromium(t, "--dump-dom", "--virtual-time-budget=5000",
			d.url+"/dashboard/?client="+url.QueryEscape(id)))
		res := findOne(t, dom, "div", func(e element) bool { return e.attrs["id"] == "result" }, "result")
		if res.attrs["data-state"] != "unbound" {
			t.Fatalf("result %v\n%s", res.attrs, dom)
		}
		place := d.agent.Backend("mqtt").Place([]byte(id))
		if place != "n1" { // n2 drains
			t.Fatalf("placement %q", place)
		}
		findOne(t, dom, "strong", func(e element) bool { return hasClass(e, "placement") && e.text == place }, "placement")
		findOne(t, dom, "code", func(e element) bool { return hasClass(e, "client-id") && e.text == id }, "id")
	})
}

// checkScreenshot fails on a blank or unstyled page: it wants many
// colours, a good share of non-background pixels, and the two bar
// colours of style.css (n1's fill, n2's draining fill), which only a page
// whose script rendered the servers has.
func checkScreenshot(t *testing.T, img image.Image) {
	t.Helper()
	b := img.Bounds()
	counts := map[color.RGBA]int{}
	near := func(c color.RGBA, r, g, bl uint8) bool {
		d := func(x, y uint8) int {
			if x > y {
				return int(x - y)
			}
			return int(y - x)
		}
		return d(c.R, r) < 8 && d(c.G, g) < 8 && d(c.B, bl) < 8
	}
	var bar, drainBar int
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			c := color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)
			counts[c]++
			switch {
			case near(c, 0x2f, 0x6f, 0xd0):
				bar++
			case near(c, 0xd9, 0x9a, 0x1e):
				drainBar++
			}
		}
	}
	var bg int
	for _, n := range counts {
		bg = max(bg, n)
	}
	total := b.Dx() * b.Dy()
	if len(counts) < 50 {
		t.Errorf("only %d distinct colours: blank page?", len(counts))
	}
	if fg := total - bg; fg < total/10 {
		t.Errorf("only %d of %d pixels differ from the background", fg, total)
	}
	t.Logf("%d colours, %d bar and %d draining-bar pixels", len(counts), bar, drainBar)
	// n1's bar is 5/7 and n2's 2/7 of about 240x14 pixels.
	if bar < 1500 || drainBar < 500 {
		t.Errorf("binding bars not drawn: %d blue and %d amber pixels", bar, drainBar)
	}
}

// TestDashboardNeedsToken loads the page from an API with a token, with
// none set in the browser: it must say so rather than look empty.
func TestDashboardNeedsToken(t *testing.T) {
	testenv.RequireBinary(t, "chromium")
	d := startDashboard(t, "dash-secret")
	dom := string(runChromium(t, "--dump-dom", "--virtual-time-budget=5000", d.url+"/dashboard/"))
	if !strings.Contains(dom, `data-auth="required"`) {
		t.Errorf("body not marked auth-required:\n%s", dom)
	}
	alert := findOne(t, dom, "div", func(e element) bool { return e.attrs["id"] == "alert" }, "alert")
	if _, hidden := alert.attrs["hidden"]; hidden || !strings.Contains(alert.text, "HTTP 401") || !strings.Contains(alert.text, "token") {
		t.Errorf("alert %+v", alert)
	}
}

// TestDashboardClicks drives a real page over the Chrome DevTools
// Protocol: it types the token, clicks Drain and Undrain with the mouse
// and searches for clients, checking the store and the page after each.
func TestDashboardClicks(t *testing.T) {
	bin := testenv.RequireBinary(t, "chromium")
	d := startDashboard(t, "click-secret")
	page := startCDP(t, bin)

	// Record CSP violations and script errors from the first line on.
	page.call(t, "Page.addScriptToEvaluateOnNewDocument", map[string]any{"source": `
		window.__problems = [];
		document.addEventListener('securitypolicyviolation', e => window.__problems.push('CSP ' + e.violatedDirective + ' ' + e.blockedURI));
		window.addEventListener('error', e => window.__problems.push('error ' + e.message));
		window.addEventListener('unhandledrejection', e => window.__problems.push('rejection ' + e.reason));`}, nil)
	page.call(t, "Page.navigate", map[string]any{"url": d.url + "/?client=dev-1"}, nil)

	// No token yet: the page asks for one and focuses the field.
	page.waitFor(t, `document.body.dataset.auth === 'required' && document.activeElement.id === 'token'`)
	page.call(t, "Input.insertText", map[string]any{"text": "click-secret"}, nil)
	page.click(t, `#token-form button[type=submit]`)
	page.waitFor(t, `document.body.dataset.state === 'ok' && !document.body.dataset.auth && document.querySelectorAll('tr.server').length === 2`)
	if got := page.eval(t, `[location.pathname + location.search, sessionStorage.getItem('stickyd.apiToken'), document.getElementById('token').value]`); fmt.Sprint(got) != "[/dashboard/?client=dev-1 click-secret ]" {
		t.Errorf("after entering the token: %v", got)
	}
	// The lookup the URL asked for waited for the token.
	page.waitFor(t, `document.getElementById('result').dataset.state === 'bound' && document.querySelector('#result .bound-server').textContent === 'n1'`)

	page.click(t, `button[data-action=drain][data-server=n1]`)
	page.waitFor(t, `!!document.querySelector('button[data-action=undrain][data-server=n1]')`)
	if !d.draining(t, "n1") {
		t.Error("n1 is not draining after clicking Drain")
	}
	if got := page.eval(t, `document.activeElement.dataset.action + ' ' + document.activeElement.dataset.server`); got != "undrain n1" {
		t.Errorf("focus after the click is on %v, want n1's new button", got)
	}
	if msg := page.eval(t, `document.getElementById('status').textContent`); !strings.Contains(fmt.Sprint(msg), "n1 (mqtt) is draining") {
		t.Errorf("status %q", msg)
	}
	page.click(t, `button[data-action=undrain][data-server=n2]`)
	page.waitFor(t, `!!document.querySelector('button[data-action=drain][data-server=n2]')`)
	if d.draining(t, "n2") {
		t.Error("n2 is still draining after clicking Undrain")
	}

	// Search by typing, ids that need escaping included.
	search := func(id string) {
		t.Helper()
		page.click(t, `#client`)
		page.eval(t, `document.getElementById('client').select()`)
		page.call(t, "Input.insertText", map[string]any{"text": id}, nil)
		page.eval(t, `delete document.getElementById('result').dataset.state`)
		page.click(t, `#search-form button[type=submit]`)
		page.waitFor(t, `!!document.getElementById('result').dataset.state`)
	}
	for _, tc := range []struct{ id, server string }{{"a/b", "n1"}, {"with space", "n2"}, {hostileID, "n1"}} {
		id := tc.id
		search(id)
		got := page.eval(t, `[document.getElementById('result').dataset.state, document.querySelector('#result .bound-server').textContent, document.querySelector('#result .client-id').textContent]`)
		shown := strings.ReplaceAll(id, "\u202e", `\u202e`)
		if want := fmt.Sprint([]any{"bound", tc.server, shown}); fmt.Sprint(got) != want {
			t.Errorf("search %q: %v, want %v", id, got, want)
		}
	}
	// The hostile id stayed text: no element, no script ran.
	if got := page.eval(t, `[document.querySelectorAll('#result img, #result b').length, window.pwned === undefined]`); fmt.Sprint(got) != "[0 true]" {
		t.Errorf("hostile id: %v", got)
	}
	search("nobody")
	want := d.agent.Backend("mqtt").Place([]byte("nobody"))
	if got := page.eval(t, `[document.getElementById('result').dataset.state, document.querySelector('#result .placement').textContent, new URLSearchParams(location.search).get('client')]`); fmt.Sprint(got) != fmt.Sprint([]any{"unbound", want, "nobody"}) {
		t.Errorf("search nobody: %v, want unbound on %s", got, want)
	}

	if got := page.eval(t, `window.__problems`); fmt.Sprint(got) != "[]" {
		t.Errorf("problems in the page: %v", got)
	}
}

// ---- a minimal Chrome DevTools Protocol client ----

// cdpPage is one page target, driven over a WebSocket.
type cdpPage struct {
	ws     *wsConn
	nextID int
}

// startCDP runs headless Chromium with a DevTools port and attaches to
// its page.
func startCDP(t *testing.T, bin string, extra ...string) *cdpPage {
	t.Helper()
	profile := t.TempDir()
	args := append(chromiumArgs(profile), "--remote-debugging-address=127.0.0.1",
		"--remote-debugging-port=0", "--window-size=1200,800")
	args = append(append(args, extra...), "about:blank")
	testenv.Start(t, bin, args, "", chromiumEnv(t)...)

	// Chromium writes the port it took into DevToolsActivePort.
	var port string
	testenv.Eventually(t, 30*time.Second, func() error {
		data, err := os.ReadFile(filepath.Join(profile, "DevToolsActivePort"))
		if err != nil {
			return err
		}
		lines := strings.SplitN(string(data), "\n", 2)
		if len(lines) < 2 || lines[0] == "" {
			return errors.New("DevToolsActivePort incomplete")
		}
		port = lines[0]
		return nil
	})
	var wsURL string
	testenv.Eventually(t, 30*time.Second, func() error {
		res, err := http.Get("http://127.0.0.1:" + port + "/json/list")
		if err != nil {
			return err
		}
		defer res.Body.Close()
		var targets []struct {
			Type, WebSocketDebuggerURL string
		}
		if err := json.NewDecoder(res.Body).Decode(&targets); err != nil {
			return err
		}
		for _, tg := range targets {
			if tg.Type == "page" && tg.WebSocketDebuggerURL != "" {
				wsURL = tg.WebSocketDebuggerURL
				return nil
			}
		}
		return errors.New("no page target yet")
	})
	ws, err := dialWS(wsURL)
	if err != nil {
		t.Fatalf("devtools websocket: %v", err)
	}
	t.Cleanup(func() { ws.conn.Close() })
	p := &cdpPage{ws: ws}
	p.call(t, "Page.enable", nil, nil)
	p.call(t, "Runtime.enable", nil, nil)
	return p
}

// call sends one command and waits for its answer, skipping events.
func (p *cdpPage) call(t *testing.T, method string, params, result any) {
	t.Helper()
	if err := p.callErr(method, params, result); err != nil {
		t.Fatalf("%s: %v", method, err)
	}
}

func (p *cdpPage) callErr(method string, params, result any) error {
	p.nextID++
	id := p.nextID
	if params == nil {
		params = struct{}{}
	}
	msg, err := json.Marshal(map[string]any{"id": id, "method": method, "params": params})
	if err != nil {
		return err
	}
	_ = p.ws.conn.SetDeadline(time.Now().Add(20 * time.Second))
	if err := p.ws.writeText(msg); err != nil {
		return err
	}
	for {
		data, err := p.ws.readMessage()
		if err != nil {
			return err
		}
		var res struct {
			ID     int             `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(data, &res); err != nil {
			return err
		}
		if res.ID != id {
			continue // an event
		}
		if res.Error != nil {
			return errors.New(res.Error.Message)
		}
		if result != nil {
			return json.Unmarshal(res.Result, result)
		}
		return nil
	}
}

// eval runs an expression in the page (awaiting a promise) and returns
// its JSON value.
func (p *cdpPage) eval(t *testing.T, expr string) any {
	t.Helper()
	v, err := p.evalErr(expr)
	if err != nil {
		t.Fatalf("eval %s: %v", expr, err)
	}
	return v
}

func (p *cdpPage) evalErr(expr string) (any, error) {
	var res struct {
		Result struct {
			Value any `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	err := p.callErr("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}, &res)
	if err != nil {
		return nil, err
	}
	if ex := res.ExceptionDetails; ex != nil {
		return nil, fmt.Errorf("%s %s", ex.Text, ex.Exception.Description)
	}
	return res.Result.Value, nil
}

// waitFor polls a boolean expression until it holds.
func (p *cdpPage) waitFor(t *testing.T, expr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v, err := p.evalErr(expr)
		if err == nil && v == true {
			return
		}
		if time.Now().After(deadline) {
			body, _ := p.evalErr(`document.body && document.body.outerHTML`)
			t.Fatalf("timed out waiting for %s (last: %v, %v)\npage: %v", expr, v, err, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// click presses and releases the left mouse button on the middle of the
// element sel matches, as a person would.
func (p *cdpPage) click(t *testing.T, sel string) {
	t.Helper()
	q, _ := json.Marshal(sel)
	p.waitFor(t, `(() => { const e = document.querySelector(`+string(q)+`); return !!e && !e.disabled; })()`)
	v := p.eval(t, `(() => { const e = document.querySelector(`+string(q)+`); e.scrollIntoView({block: 'center'});
		const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()`)
	xy, ok := v.([]any)
	if !ok || len(xy) != 2 {
		t.Fatalf("click %s: position %v", sel, v)
	}
	for _, typ := range []string{"mouseMoved", "mousePressed", "mouseReleased"} {
		p.call(t, "Input.dispatchMouseEvent", map[string]any{
			"type": typ, "x": xy[0], "y": xy[1], "button": "left", "buttons": 1, "clickCount": 1,
		}, nil)
	}
}

// wsConn is the client side of a WebSocket (RFC 6455), just enough for
// DevTools: text messages, fragmentation, ping.
type wsConn struct {
	conn net.Conn
	br   *bufio.Reader
}

func dialWS(rawURL string) (*wsConn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	conn, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	key := base64.StdEncoding.EncodeToString(nonce)
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", u.RequestURI(), u.Host, key)
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if res.StatusCode != http.StatusSwitchingProtocols || res.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		conn.Close()
		return nil, fmt.Errorf("websocket handshake: %s", res.Status)
	}
	return &wsConn{conn: conn, br: br}, nil
}

func (w *wsConn) writeFrame(op byte, payload []byte) error {
	hdr := []byte{0x80 | op}
	switch n := len(payload); {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	case n < 1<<16:
		hdr = append(hdr, 0x80|126)
		hdr = binary.BigEndian.AppendUint16(hdr, uint16(n))
	default:
		hdr = append(hdr, 0x80|127)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	mask := make([]byte, 4) // a client masks every frame
	_, _ = rand.Read(mask)
	hdr = append(hdr, mask...)
	body := make([]byte, len(payload))
	for i, c := range payload {
		body[i] = c ^ mask[i%4]
	}
	_, err := w.conn.Write(append(hdr, body...))
	return err
}

func (w *wsConn) writeText(p []byte) error { return w.writeFrame(0x1, p) }

func (w *wsConn) readMessage() ([]byte, error) {
	var msg []byte
	for {
		var h [2]byte
		if _, err := io.ReadFull(w.br, h[:]); err != nil {
			return nil, err
		}
		fin, op := h[0]&0x80 != 0, h[0]&0x0f
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(w.br, b[:]); err != nil {
				return nil, err
			}
			n = uint64(binary.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			if _, err := io.ReadFull(w.br, b[:]); err != nil {
				return nil, err
			}
			n = binary.BigEndian.Uint64(b[:])
		}
		var mask [4]byte
		masked := h[1]&0x80 != 0
		if masked {
			if _, err := io.ReadFull(w.br, mask[:]); err != nil {
				return nil, err
			}
		}
		if n > 256<<20 {
			return nil, fmt.Errorf("websocket frame of %d bytes", n)
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(w.br, payload); err != nil {
			return nil, err
		}
		if masked {
			for i := range payload {
				payload[i] ^= mask[i%4]
			}
		}
		switch op {
		case 0x8:
			return nil, errors.New("websocket closed by Chromium")
		case 0x9:
			if err := w.writeFrame(0xA, payload); err != nil {
				return nil, err
			}
			continue
		case 0xA:
			continue
		}
		msg = append(msg, payload...)
		if fin {
			return msg, nil
		}
	}
}
