package config

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/stickyd/stickyd/store/redis"
)

// Validate checks every field and returns the first problem, naming its
// key. serve and check-config both call it (through Load), so what one
// accepts the other does.
func (c *Config) Validate() error {
	for _, check := range []func() error{
		c.validateListeners, c.validateStore, c.validateStoreLimits, c.validateSPOE, c.validateSPOELimits, c.validateLog,
		c.validateBackends, c.validateHAProxy, c.validateTransport,
	} {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) validateListeners() error {
	if err := checkListen(c.SPOEListen); err != nil {
		return &Error{Key: "spoe_listen", Err: err}
	}
	if c.APIListen != "" {
		if err := checkHostPort(c.APIListen); err != nil {
			return &Error{Key: "api_listen", Err: err}
		}
	}
	for _, t := range []struct{ key, file, token string }{
		{"api_token", c.APITokenFile, c.APIToken},
		{"api_read_token", c.APIReadTokenFile, c.APIReadToken},
	} {
		if n := len(t.token); n > 0 && n < MinTokenBytes {
			key := t.key
			if t.file != "" {
				key += "_file"
			}
			return &Error{Key: key, Err: fmt.Errorf("the token is %d bytes, want at least %d (e.g. openssl rand -hex 32)", n, MinTokenBytes)}
		}
	}
	return nil
}

// MinTokenBytes is the shortest api_token accepted: short ones can be
// guessed.
const MinTokenBytes = 16

func (c *Config) validateStore() error {
	if c.RedisURL != "" {
		if err := redis.CheckURL(c.RedisURL); err != nil {
			return &Error{Key: "redis_url", Err: errors.New(strings.TrimPrefix(err.Error(), "redis: "))}
		}
	}
	if c.TTL < 0 {
		return &Error{Key: "ttl", Err: errors.New("must not be negative")}
	}
	if c.TTL > 0 && time.Duration(c.TTL) < time.Second {
		return &Error{Key: "ttl", Err: errors.New("must be at least 1s (or 0 for no expiry)")}
	}
	if c.StoreTimeout <= 0 {
		return &Error{Key: "store_timeout", Err: errors.New("must be positive")}
	}
	if c.HAProxy.TimeoutProcessing > 0 && c.StoreTimeout >= c.HAProxy.TimeoutProcessing {
		return &Error{Key: "store_timeout", Err: fmt.Errorf("%v must be below haproxy.timeout_processing (%v), or HAProxy gives up before the agent answers", c.StoreTimeout, c.HAProxy.TimeoutProcessing)}
	}
	if c.RedisCacheSize < 0 || c.RedisCacheSize > 100_000_000 {
		return &Error{Key: "redis_cache_size", Err: errors.New("must be between 0 (off) and 100000000")}
	}
	return nil
}

func (c *Config) validateSPOE() error {
	if c.MaxFrameSize < 256 || c.MaxFrameSize > 16<<20 {
		return &Error{Key: "spoe_max_frame_size", Err: errors.New("must be between 256 and 16777216")}
	}
	return nil
}

func (c *Config) validateLog() error {
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return &Error{Key: "log.level", Err: fmt.Errorf("%q: want debug, info, warn or error", c.Log.Level)}
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return &Error{Key: "log.format", Err: fmt.Errorf("%q: want text or json", c.Log.Format)}
	}
	return nil
}

func (c *Config) validateBackends() error {
	if len(c.Backends) == 0 {
		return &Error{Key: "backends", Err: errors.New("at least one backend is required")}
	}
	seen := map[string]bool{}
	binds := map[string]string{}
	for i, b := range c.Backends {
		key := fmt.Sprintf("backends[%d]", i)
		if seen[b.Name] {
			return &Error{Key: key + ".name", Err: fmt.Errorf("%q is defined twice", b.Name)}
		}
		seen[b.Name] = true
		if err := b.validate(key); err != nil {
			return err
		}
		if b.Bind != "" {
			if other, dup := binds[b.Bind]; dup {
				return &Error{Key: key + ".bind", Err: fmt.Errorf("%q is also the bind of backend %q", b.Bind, other)}
			}
			binds[b.Bind] = b.Name
		}
	}
	return nil
}

// validate checks one backend, whose keys start with key.
func (b *Backend) validate(key string) error {
	if !nameRE.MatchString(b.Name) {
		return &Error{Key: key + ".name", Err: fmt.Errorf("%q: want 1-64 of A-Z a-z 0-9 _ . -", b.Name)}
	}
	if b.Key != KeyClientID && b.Key != KeyUsername && b.Key != KeyCertCN {
		return &Error{Key: key + ".key", Err: fmt.Errorf("%q: want client_id, username or cert_cn", b.Key)}
	}
	if len(b.Servers) == 0 {
		return &Error{Key: key + ".servers", Err: errors.New("at least one server is required")}
	}
	if b.Bind != "" {
		if err := checkHostPort(b.Bind); err != nil {
			return &Error{Key: key + ".bind", Err: err}
		}
	}
	srvSeen := map[string]bool{}
	for j, s := range b.Servers {
		skey := fmt.Sprintf("%s.servers[%d]", key, j)
		if !nameRE.MatchString(s.Name) {
			return &Error{Key: skey + ".name", Err: fmt.Errorf("%q: want 1-64 of A-Z a-z 0-9 _ . -", s.Name)}
		}
		if srvSeen[s.Name] {
			return &Error{Key: skey + ".name", Err: fmt.Errorf("%q is defined twice in backend %q", s.Name, b.Name)}
		}
		srvSeen[s.Name] = true
		if err := checkHostPort(s.Address); err != nil {
			return &Error{Key: skey + ".address", Err: err}
		}
		if s.Weight < 1 || s.Weight > 256 {
			return &Error{Key: skey + ".weight", Err: fmt.Errorf("%d: want 1 to 256", s.Weight)}
		}
	}
	return nil
}

func (c *Config) validateHAProxy() error {
	if err := checkHostPort(c.HAProxy.Bind); err != nil {
		return &Error{Key: "haproxy.bind", Err: err}
	}
	for i, a := range c.HAProxy.Agents {
		if err := checkListen(a); err != nil {
			return &Error{Key: fmt.Sprintf("haproxy.agents[%d]", i), Err: err}
		}
	}
	if c.HAProxy.TimeoutProcessing <= 0 {
		return &Error{Key: "haproxy.timeout_processing", Err: errors.New("must be positive")}
	}
	if c.HAProxy.InspectDelay <= c.HAProxy.TimeoutProcessing {
		return &Error{Key: "haproxy.inspect_delay", Err: errors.New("must exceed haproxy.timeout_processing, or HAProxy interrupts the agent")}
	}
	if c.HAProxy.CheckInterval <= 0 {
		return &Error{Key: "haproxy.check_interval", Err: errors.New("must be positive")}
	}
	if c.HAProxy.TimeoutClient <= c.HAProxy.InspectDelay {
		return &Error{Key: "haproxy.timeout_client", Err: errors.New("must exceed haproxy.inspect_delay")}
	}
	if c.HAProxy.LocalFresh < 0 {
		return &Error{Key: "haproxy.local_fresh", Err: errors.New("must not be negative (0 turns the fast path off)")}
	}
	if c.HAProxy.LocalSize < 1 {
		return &Error{Key: "haproxy.local_size", Err: fmt.Errorf("%d: want at least 1", c.HAProxy.LocalSize)}
	}
	if err := checkLocalPeer(c.HAProxy.LocalPeer); err != nil {
		return &Error{Key: "haproxy.local_peer", Err: err}
	}
	if c.HAProxy.Maxconn < 0 {
		return &Error{Key: "haproxy.maxconn", Err: errors.New("must not be negative")}
	}
	nsSeen := map[string]bool{}
	for i, r := range c.HAProxy.Resolvers {
		key := fmt.Sprintf("haproxy.resolvers[%d]", i)
		if nsSeen[r] {
			return &Error{Key: key, Err: fmt.Errorf("%q is listed twice", r)}
		}
		nsSeen[r] = true
		if r == ResolvConf {
			continue
		}
		host, port, err := net.SplitHostPort(r)
		n, perr := strconv.Atoi(port)
		if err != nil || net.ParseIP(host) == nil || perr != nil || n < 1 || n > 65535 {
			return &Error{Key: key, Err: fmt.Errorf("%q: want the ip:port of a DNS server (e.g. 127.0.0.11:53) or %q", r, ResolvConf)}
		}
	}
	return nil
}

// checkLocalPeer accepts "" or a loopback host:port with a fixed port: the
// peers protocol has no authentication, so whatever reaches the port could
// write HAProxy's tables, and the old process must find the new one at the
// same address.
func checkLocalPeer(a string) error {
	if a == "" {
		return nil
	}
	if err := checkHostPort(a); err != nil {
		return err
	}
	if _, port, _ := net.SplitHostPort(a); port == "0" {
		return fmt.Errorf("%q: want a fixed port (the old process finds the new one there)", a)
	}
	if !IsLoopback(a) {
		return fmt.Errorf("%q: want a loopback address: the peers protocol has no authentication", a)
	}
	return nil
}
