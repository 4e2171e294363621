// Package config loads and validates stickyd's YAML configuration.
//
// Decoding is strict: an unknown key is an error. Every scalar can be
// overridden by a STICKYD_* environment variable named after its path
// (redis_url -> STICKYD_REDIS_URL, haproxy.bind -> STICKYD_HAPROXY_BIND);
// string lists take a comma-separated value.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole configuration file.
type Config struct {
	SPOEListen   string `yaml:"spoe_listen"`
	APIListen    string `yaml:"api_listen"`
	APIToken     string `yaml:"api_token"`
	APITokenFile string `yaml:"api_token_file"`
	// APITokenFileMode is api_token_file's permission bits, read with it.
	APITokenFileMode fs.FileMode `yaml:"-"`
	// APIReadToken grants GET on /v1 only (a read-only role); it needs
	// APIToken, which keeps every right.
	APIReadToken     string `yaml:"api_read_token"`
	APIReadTokenFile string `yaml:"api_read_token_file"`
	RedisURL         string `yaml:"redis_url"`
	// RedisCacheSize is how many recent bindings each agent keeps in
	// process when on Redis, kept coherent over pub/sub; 0 disables it.
	RedisCacheSize int `yaml:"redis_cache_size"`
	// MaxBindings caps the bindings of each backend: past it new clients
	// are routed by the rendezvous hash but not stored. 0 takes the store's
	// default (memory 1000000, Redis 10000000).
	MaxBindings int      `yaml:"max_bindings"`
	TTL         Duration `yaml:"ttl"`
	// StoreTimeout bounds one store call on the connect path; past it the
	// agent answers without the store (fail open). Keep it well under
	// haproxy.timeout_processing.
	StoreTimeout Duration `yaml:"store_timeout"`
	// SPOEMaxConnections caps open SPOE connections; past it a connection
	// is closed as soon as it is accepted.
	SPOEMaxConnections int `yaml:"spoe_max_connections"`
	// SPOEFrameTimeout bounds a HELLO from the accept, every frame from
	// its first byte, and every write of the agent.
	SPOEFrameTimeout Duration `yaml:"spoe_frame_timeout"`
	// SPOEIdleTimeout closes an SPOE connection with no frame for that
	// long: far above HAProxy's own limits on the agent connections it
	// keeps for reuse (config/spoe.go).
	SPOEIdleTimeout Duration `yaml:"spoe_idle_timeout"`
	// MaxTTL caps the TTL a client's MQTT 5 session expiry asks for.
	MaxTTL Duration `yaml:"max_ttl"`

	// MaxFrameSize caps SPOE frames the agent accepts, whatever HAProxy
	// announces; larger frames close the connection before any allocation.
	MaxFrameSize int       `yaml:"spoe_max_frame_size"`
	Log          Log       `yaml:"log"`
	Backends     []Backend `yaml:"backends"`
	HAProxy      HAProxy   `yaml:"haproxy"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// Backend is one HAProxy backend whose clients stickyd places.
type Backend struct {
	Name    string   `yaml:"name"`
	Key     string   `yaml:"key"` // client_id, username or cert_cn
	Servers []Server `yaml:"servers"`
	// Bind is this backend's frontend bind address in the generated
	// HAProxy configuration; the first backend defaults to haproxy.bind.
	Bind string `yaml:"bind"`
	// TLSBind is this backend's TLS listener (terminated by HAProxy with
	// haproxy.tls.crt); the first backend defaults to haproxy.tls.bind.
	TLSBind string `yaml:"tls_bind"`
	// ProxyProtocol is what HAProxy sends this backend's brokers, health
	// checks included: "", v1, v2, v2-ssl or v2-ssl-cn.
	ProxyProtocol string `yaml:"proxy_protocol"`
	// HealthCheck is how HAProxy checks the brokers: mqtt (a CONNECT
	// answered by a CONNACK, the default) or tcp (connect only).
	HealthCheck string `yaml:"health_check"`
}

// Server is one broker node.
type Server struct {
	Name    string `yaml:"name"`
	Address string `yaml:"address"`
	Weight  int    `yaml:"weight"`
}

// HAProxy holds what the generated HAProxy configuration needs.
type HAProxy struct {
	Bind              string   `yaml:"bind"`
	Agents            []string `yaml:"agents"`
	TimeoutProcessing Duration `yaml:"timeout_processing"`
	InspectDelay      Duration `yaml:"inspect_delay"`
	CheckInterval     Duration `yaml:"check_interval"`
	TimeoutClient     Duration `yaml:"timeout_client"`
	// StatsSocket, when set, is written into the global section so the
	// Runtime API is reachable (unix path or ipv4@host:port).
	StatsSocket string `yaml:"stats_socket"`
	// Maxconn is HAProxy's global maxconn; 0 lets HAProxy derive it from
	// the file-descriptor limit, which always starts unprivileged.
	Maxconn int `yaml:"maxconn"`
	// Resolvers, when set, are the DNS servers (ip:port, or ResolvConf for
	// the nameservers of /etc/resolv.conf) HAProxy resolves server and agent
	// hostnames with at run time: the generated configuration gets a
	// resolvers section and every server "init-addr last,libc,none", so a
	// name that does not resolve yet (a container or pod not started) does
	// not stop HAProxy from starting. Empty: the C library resolves each
	// hostname once, at startup, and an unknown name is a fatal error.
	Resolvers []string `yaml:"resolvers"`
	// LocalFresh is how long HAProxy routes a reconnect from its own table
	// of the agent's answers without asking the agent. Capped at half the
	// ttl (LocalFreshWindow), so a client that keeps reconnecting still
	// reaches the agent often enough to refresh its binding. 0 turns the
	// fast path off; the table still answers while the agent is down.
	LocalFresh Duration `yaml:"local_fresh"`
	// LocalSize is how many entries that table holds (the oldest are
	// dropped first).
	LocalSize int `yaml:"local_size"`
	// LocalPeer, when set, is the loopback address of HAProxy's local peer:
	// at a reload (-sf, or a master-worker reload) the old process hands
	// its tables of answers to the new one over it, so clients keep their
	// node through a reload even while the agent is down. Empty: a reload
	// starts with empty tables.
	LocalPeer string `yaml:"local_peer"`
	// TLS is the frontend's MQTT-over-TLS listener (see transport.go).
	TLS TLS `yaml:"tls"`
	// AcceptProxy: every frontend listener expects a PROXY protocol header
	// (HAProxy behind a load balancer that sends one).
	AcceptProxy bool `yaml:"accept_proxy"`
}

// LocalFreshWindow is the freshness window in force: haproxy.local_fresh,
// capped at half the ttl.
func (c *Config) LocalFreshWindow() time.Duration {
	f := c.HAProxy.LocalFresh.D()
	if c.TTL > 0 && f > c.TTL.D()/2 {
		f = c.TTL.D() / 2
	}
	return f
}

// ResolvConf, as an entry of haproxy.resolvers, reads the nameservers of
// /etc/resolv.conf (HAProxy's parse-resolv-conf).
const ResolvConf = "resolv.conf"

// Key kinds: what identifies a client.
const (
	KeyClientID = "client_id"
	KeyUsername = "username"
	// KeyCertCN is the common name of the client certificate, verified
	// against haproxy.tls.ca on a TLS listener.
	KeyCertCN = "cert_cn"
)

// Defaults applied before the file is read.
func Default() Config {
	return Config{
		SPOEListen:   "127.0.0.1:12345",
		APIListen:    "127.0.0.1:8080",
		TTL:          Duration(30 * time.Minute),
		StoreTimeout: Duration(50 * time.Millisecond),
		MaxFrameSize: 65536,
		// SPOE bounds: see config/spoe.go.
		SPOEMaxConnections: 1024,
		SPOEFrameTimeout:   Duration(10 * time.Second),
		SPOEIdleTimeout:    Duration(10 * time.Minute),
		MaxTTL:             Duration(24 * time.Hour),
		// At most about 23 MiB of agent memory: ids past 64 bytes are not
		// cached (store/redis CacheMaxIDLen).
		RedisCacheSize: 100000,
		Log:            Log{Level: "info", Format: "text"},
		HAProxy: HAProxy{
			Bind:              "127.0.0.1:1883",
			TimeoutProcessing: Duration(200 * time.Millisecond),
			InspectDelay:      Duration(5 * time.Second),
			CheckInterval:     Duration(2 * time.Second),
			TimeoutClient:     Duration(5 * time.Minute),
			LocalFresh:        Duration(10 * time.Second),
			LocalSize:         1000000,
		},
	}
}

// Error names the key that is wrong.
type Error struct {
	Key string
	Err error
}

func (e *Error) Error() string { return fmt.Sprintf("config: %s: %v", e.Key, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

// Load reads a file, applies defaults and environment overrides, and
// validates the result.
func Load(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	return Parse(f, os.LookupEnv)
}

// Parse decodes YAML from r strictly, then applies overrides found by
// lookupEnv (os.LookupEnv in production) and validates.
func Parse(r io.Reader, lookupEnv func(string) (string, bool)) (Config, error) {
	cfg := Default()
	data, err := io.ReadAll(r)
	if err != nil {
		return cfg, fmt.Errorf("config: read: %w", err)
	}
	if len(bytes.TrimSpace(data)) > 0 {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil {
			return cfg, decodeError(err)
		}
		var extra any
		if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
			return cfg, &Error{Key: "(file)", Err: errors.New("more than one YAML document")}
		}
	}
	if lookupEnv != nil {
		if err := applyEnv(reflect.ValueOf(&cfg).Elem(), "STICKYD", "", lookupEnv); err != nil {
			return cfg, err
		}
	}
	if err := cfg.finish(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

var unknownField = regexp.MustCompile(`line (\d+): field (\S+) not found in type (\S+)`)

// decodeError turns yaml.v3's wording into one that names the key.
func decodeError(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		var msgs []string
		for _, m := range te.Errors {
			if sm := unknownField.FindStringSubmatch(m); sm != nil {
				msgs = append(msgs, fmt.Sprintf("unknown key %q (line %s)", sm[2], sm[1]))
				continue
			}
			msgs = append(msgs, m)
		}
		return fmt.Errorf("config: %s", strings.Join(msgs, "; "))
	}
	return fmt.Errorf("config: %w", err)
}

// applyEnv walks the struct and overrides scalars and string lists.
func applyEnv(v reflect.Value, prefix, path string, lookup func(string) (string, bool)) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		key := tag
		if path != "" {
			key = path + "." + tag
		}
		env := prefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
		fv := v.Field(i)
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(Duration(0)) {
			if err := applyEnv(fv, prefix, key, lookup); err != nil {
				return err
			}
			continue
		}
		val, ok := lookup(env)
		if !ok {
			continue
		}
		if err := setScalar(fv, val); err != nil {
			return &Error{Key: key + " (from " + env + ")", Err: err}
		}
	}
	return nil
}

func setScalar(fv reflect.Value, val string) error {
	switch {
	case fv.Type() == reflect.TypeOf(Duration(0)):
		d, err := parseDuration(val)
		if err != nil {
			return err
		}
		fv.SetInt(int64(d))
	case fv.Kind() == reflect.String:
		fv.SetString(val)
	case fv.Kind() == reflect.Int:
		n, err := strconv.Atoi(strings.TrimSpace(val))
		if err != nil {
			return fmt.Errorf("not an integer: %q", val)
		}
		fv.SetInt(int64(n))
	case fv.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(val))
		if err != nil {
			return fmt.Errorf("not a boolean: %q", val)
		}
		fv.SetBool(b)
	case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.String:
		var items []string
		for _, s := range strings.Split(val, ",") {
			if s = strings.TrimSpace(s); s != "" {
				items = append(items, s)
			}
		}
		fv.Set(reflect.ValueOf(items))
	default:
		return fmt.Errorf("cannot be set from the environment")
	}
	return nil
}

// Names HAProxy accepts for proxies and servers, minus ':' which stickyd
// uses as a separator in store keys.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// finish fills derived defaults and validates.
func (c *Config) finish() error {
	if err := readTokenFile("api_token", c.APITokenFile, &c.APIToken, &c.APITokenFileMode); err != nil {
		return err
	}
	var readMode fs.FileMode
	if err := readTokenFile("api_read_token", c.APIReadTokenFile, &c.APIReadToken, &readMode); err != nil {
		return err
	}
	switch {
	case c.APIReadToken != "" && c.APIToken == "":
		return &Error{Key: "api_read_token", Err: errors.New("needs api_token too: without it the API is open to writes")}
	case c.APIReadToken != "" && c.APIReadToken == c.APIToken:
		return &Error{Key: "api_read_token", Err: errors.New("must differ from api_token")}
	}
	if len(c.HAProxy.Agents) == 0 {
		c.HAProxy.Agents = []string{c.SPOEListen}
	}
	for i := range c.Backends {
		b := &c.Backends[i]
		if b.Key == "" {
			b.Key = KeyClientID
		}
		for j := range b.Servers {
			if b.Servers[j].Weight == 0 {
				b.Servers[j].Weight = 1
			}
		}
		if i == 0 && b.Bind == "" {
			b.Bind = c.HAProxy.Bind
		}
	}
	c.finishTransport()
	return c.Validate()
}

// readTokenFile sets *dst (trimmed) and *mode from file when file is set;
// the mode is read from the same open file.
func readTokenFile(key, file string, dst *string, mode *fs.FileMode) error {
	if file == "" {
		return nil
	}
	if *dst != "" {
		return &Error{Key: key + "_file", Err: fmt.Errorf("set %s or %s_file, not both", key, key)}
	}
	f, err := os.Open(file)
	if err != nil {
		return &Error{Key: key + "_file", Err: err}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return &Error{Key: key + "_file", Err: err}
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return &Error{Key: key + "_file", Err: err}
	}
	*dst, *mode = strings.TrimSpace(string(b)), fi.Mode().Perm()
	if *dst == "" {
		return &Error{Key: key + "_file", Err: errors.New("file is empty")}
	}
	return nil
}

// TokenFileExposed reports whether api_token_file's mode lets its group
// or others read or write it (serve and check-config warn).
func (c *Config) TokenFileExposed() bool {
	return c.APITokenFile != "" && c.APITokenFileMode&0o077 != 0
}

// UnixPrefix starts a unix socket address, in HAProxy's syntax
// (unix@/run/stickyd/spoe.sock): for an agent on HAProxy's host, it costs
// HAProxy less per exchange than TCP over loopback.
const UnixPrefix = "unix@"

// UnixPath returns the socket path of a unix@ address, or "" for host:port.
func UnixPath(addr string) string {
	p, ok := strings.CutPrefix(addr, UnixPrefix)
	if !ok {
		return ""
	}
	return p
}

// checkListen accepts host:port or unix@/absolute/path.
func checkListen(s string) error {
	if strings.HasPrefix(s, UnixPrefix) {
		if p := UnixPath(s); !filepath.IsAbs(p) || len(p) > 107 {
			return fmt.Errorf("%q: want unix@ and an absolute path of at most 107 bytes", s)
		}
		return nil
	}
	return checkHostPort(s)
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q: want host:port", s)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: bad port", s)
	}
	_ = host
	return nil
}

// Backend returns the named backend.
func (c *Config) Backend(name string) (*Backend, bool) {
	for i := range c.Backends {
		if c.Backends[i].Name == name {
			return &c.Backends[i], true
		}
	}
	return nil, false
}

// Server returns the named server of the backend.
func (b *Backend) Server(name string) (*Server, bool) {
	for i := range b.Servers {
		if b.Servers[i].Name == name {
			return &b.Servers[i], true
		}
	}
	return nil, false
}

// IsLoopback reports whether a listen address only accepts local clients.
func IsLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Duration is a time.Duration written as "30m", "50ms" or a number of seconds.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML accepts "1m30s" style strings and plain integers (seconds).
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := parseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (e.g. 30m, 50ms, 600)", s)
	}
	return v, nil
}
