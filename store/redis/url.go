package redis

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// URL schemes, by the kind of deployment they address.
const (
	schemeSentinel    = "redis-sentinel"
	schemeSentinelTLS = "rediss-sentinel"
	schemeCluster     = "redis-cluster"
	schemeClusterTLS  = "rediss-cluster"
)

// Query parameters this package reads itself (go-redis's own parsers take
// sentinel credentials from the userinfo, where ours holds the data nodes').
const (
	paramMasterName       = "master_name"
	paramSentinelUsername = "sentinel_username"
	paramSentinelPassword = "sentinel_password"
)

// Default ports of host entries in multi-host URLs that name none.
const (
	defaultRedisPort    = "6379"
	defaultSentinelPort = "26379"
)

// clientOptions turns a URL into client options tuned for the hot path.
// Errors never quote the URL or its userinfo, which may hold a password:
// they name what is wrong and quote at most a host or an option.
func clientOptions(rawURL string, opTimeout time.Duration) (*goredis.UniversalOptions, error) {
	if rawURL == "" {
		return nil, errors.New("redis: no URL")
	}
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok && strings.HasPrefix(strings.ToLower(rawURL), "unix:") {
		scheme, ok = "unix", true // unix:/path, as go-redis accepts it
	}
	if !ok || !validScheme(scheme) {
		return nil, errors.New("redis: bad URL: no scheme: want redis://, rediss://, unix://, " +
			"redis-sentinel://, rediss-sentinel://, redis-cluster:// or rediss-cluster://")
	}
	scheme = strings.ToLower(scheme)
	if scheme != "unix" {
		// An '@' after the host part means a '/', '?' or '#' in the userinfo
		// cut it short: the "host" would be part of a password, which
		// errors below would quote.
		authority := rest
		if i := strings.IndexAny(rest, "/?#"); i >= 0 {
			authority = rest[:i]
		}
		if !strings.Contains(authority, "@") && strings.Contains(rest, "@") {
			return nil, errors.New("redis: bad URL: '@' after the host: percent-encode '/', '?' and '#' " +
				"in user names and passwords (%2F, %3F, %23) and '@' in query values (%40)")
		}
	}
	switch scheme {
	case "redis", "rediss", "unix":
		o, err := parseURL(rawURL)
		if err != nil {
			return nil, err
		}
		return universal(o, opTimeout), nil
	case schemeSentinel, schemeSentinelTLS, schemeCluster, schemeClusterTLS:
		return multiHostOptions(scheme, rest, opTimeout)
	default:
		return nil, fmt.Errorf("redis: bad URL: scheme %q: want redis, rediss, unix, "+
			"redis-sentinel, rediss-sentinel, redis-cluster or rediss-cluster", scheme)
	}
}

// validScheme reports whether s is URL scheme syntax, so that it can be
// quoted in an error without risk of quoting a password.
func validScheme(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return true
}

// parseURL is goredis.ParseURL without the URL in its errors.
func parseURL(rawURL string) (*goredis.Options, error) {
	o, err := goredis.ParseURL(rawURL)
	if err != nil {
		err = unwrapURLError(err)
		return nil, fmt.Errorf("redis: bad URL: %s", strings.TrimPrefix(err.Error(), "redis: "))
	}
	return o, nil
}

// multiHostOptions parses the part after "scheme://" of a sentinel or
// cluster URL: [user:pass@]host1:port1,host2:port2[/db][?opts].
func multiHostOptions(scheme, rest string, opTimeout time.Duration) (*goredis.UniversalOptions, error) {
	sentinel := scheme == schemeSentinel || scheme == schemeSentinelTLS
	bad := func(format string, args ...any) error {
		return fmt.Errorf("redis: bad %s URL: "+format, append([]any{scheme}, args...)...)
	}
	if strings.Contains(rest, "#") {
		return nil, bad("a fragment ('#') is not allowed; percent-encode '#' in a password as %%23")
	}
	authority, tail := rest, ""
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		authority, tail = rest[:i], rest[i:]
	}
	userinfo, hostList := "", authority
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		userinfo, hostList = authority[:i+1], authority[i+1:]
	}
	path, rawQuery, _ := strings.Cut(tail, "?")

	// Our own parameters come out of the query; go-redis parses the rest.
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, bad("query: %v", unwrapURLError(err))
	}
	take := func(name string) string {
		v := q.Get(name)
		q.Del(name)
		return v
	}
	masterName := take(paramMasterName)
	sentinelUser := take(paramSentinelUsername)
	sentinelPass := take(paramSentinelPassword)
	if !sentinel && (masterName != "" || sentinelUser != "" || sentinelPass != "") {
		return nil, bad("%s, %s and %s are for redis-sentinel:// URLs",
			paramMasterName, paramSentinelUsername, paramSentinelPassword)
	}
	if sentinel && masterName == "" {
		return nil, bad("missing ?%s= (the name the sentinels monitor)", paramMasterName)
	}

	defPort := defaultRedisPort
	if sentinel {
		defPort = defaultSentinelPort
	}
	addrs, err := splitHosts(hostList, defPort)
	if err != nil {
		return nil, bad("%v", err)
	}

	// go-redis parses userinfo, db and query options of a one-host URL; the
	// host is a placeholder.
	base := "redis"
	if strings.HasPrefix(scheme, "rediss") {
		base = "rediss"
	}
	single := base + "://" + userinfo + "localhost" + path
	if enc := q.Encode(); enc != "" {
		single += "?" + enc
	}
	o, err := goredis.ParseURL(single)
	if err != nil {
		return nil, bad("%s", strings.TrimPrefix(unwrapURLError(err).Error(), "redis: "))
	}
	if !sentinel && o.DB != 0 {
		return nil, bad("Redis Cluster has only database 0")
	}
	if o.TLSConfig != nil {
		// ServerName was the placeholder; empty, crypto/tls verifies each
		// node against the host it dials.
		o.TLSConfig.ServerName = ""
	}
	uo := universal(o, opTimeout)
	uo.Addrs = addrs
	if sentinel {
		// The data nodes' credentials come from the userinfo; the
		// sentinels' from sentinel_username and sentinel_password.
		uo.MasterName = masterName
		uo.SentinelUsername = sentinelUser
		uo.SentinelPassword = sentinelPass
	} else {
		uo.IsClusterMode = true // a cluster client even with one seed host
	}
	return uo, nil
}

// splitHosts splits "h1:p1,h2:p2" into addresses, adding defPort to a host
// that names no port. Hosts are not secret: errors quote them.
func splitHosts(list, defPort string) ([]string, error) {
	if list == "" {
		return nil, errors.New("no host")
	}
	parts := strings.Split(list, ",")
	addrs := make([]string, 0, len(parts))
	for i, h := range parts {
		if h == "" {
			return nil, fmt.Errorf("host %d of %d is empty", i+1, len(parts))
		}
		hp := h
		if !strings.Contains(h, ":") || strings.HasSuffix(h, "]") {
			hp = net.JoinHostPort(strings.Trim(h, "[]"), defPort)
		}
		host, port, err := net.SplitHostPort(hp)
		if err != nil || host == "" || strings.ContainsAny(host, "[]/@ ") {
			return nil, fmt.Errorf("host %d of %d (%q): want host:port", i+1, len(parts), h)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("host %d of %d (%q): bad port", i+1, len(parts), h)
		}
		addrs = append(addrs, net.JoinHostPort(host, port))
	}
	return addrs, nil
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err // url.Error quotes the whole URL
	}
	return err
}

// universal copies parsed options into UniversalOptions with this package's
// hot-path defaults: a value set in the URL query wins; zero means "not
// set". The same settings serve standalone, sentinel and cluster clients
// (for the cluster, pool sizes are per node).
func universal(o *goredis.Options, opTimeout time.Duration) *goredis.UniversalOptions {
	or := func(v, def time.Duration) time.Duration {
		if v != 0 {
			return v
		}
		return def
	}
	ori := func(v, def int) int {
		if v != 0 {
			return v
		}
		return def
	}
	return &goredis.UniversalOptions{
		Addrs:      []string{o.Addr}, // a unix socket path starts with '/', which go-redis dials as unix
		ClientName: o.ClientName,
		DB:         o.DB,
		Protocol:   o.Protocol,
		Username:   o.Username,
		Password:   o.Password,
		TLSConfig:  o.TLSConfig,

		DialTimeout:        or(o.DialTimeout, 500*time.Millisecond),
		DialerRetries:      2,
		DialerRetryTimeout: 20 * time.Millisecond,
		ReadTimeout:        or(o.ReadTimeout, opTimeout),
		WriteTimeout:       or(o.WriteTimeout, opTimeout),
		// Context deadlines drive socket deadlines too, so a caller's budget
		// shorter than OpTimeout is honoured.
		ContextTimeoutEnabled: true,
		// One retry on a dead connection or dial error; see the package doc
		// for why replays are harmless.
		MaxRetries:      ori(o.MaxRetries, 1),
		MinRetryBackoff: or(o.MinRetryBackoff, 2*time.Millisecond),
		MaxRetryBackoff: or(o.MaxRetryBackoff, 20*time.Millisecond),

		PoolFIFO:              o.PoolFIFO,
		PoolSize:              ori(o.PoolSize, max(32, 10*runtime.GOMAXPROCS(0))),
		PoolTimeout:           or(o.PoolTimeout, opTimeout),
		MinIdleConns:          ori(o.MinIdleConns, 2),
		MaxIdleConns:          o.MaxIdleConns,
		MaxActiveConns:        o.MaxActiveConns,
		MaxConcurrentDials:    o.MaxConcurrentDials,
		ConnMaxIdleTime:       o.ConnMaxIdleTime,
		ConnMaxLifetime:       o.ConnMaxLifetime,
		ConnMaxLifetimeJitter: o.ConnMaxLifetimeJitter,

		PipelinePoolSize:        o.PipelinePoolSize,
		PipelineReadBufferSize:  o.PipelineReadBufferSize,
		PipelineWriteBufferSize: o.PipelineWriteBufferSize,

		DisableIdentity:          true, // no CLIENT SETINFO on every new connection
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
}

// Redact returns a URL accepted by Options.URL with its password and any
// *password query parameter (sentinel_password) replaced by "xxxxx", for
// logs. Unlike url.URL.Redacted it handles multi-host URLs, which net/url
// may not parse. When the userinfo cannot be told apart (an unescaped '@',
// '/', '?' or '#' in a password), everything before the last '@' goes.
func Redact(rawURL string) string {
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok || !validScheme(scheme) {
		if u, err := url.Parse(rawURL); err == nil && strings.EqualFold(u.Scheme, "unix") {
			return u.Redacted()
		}
		return "(unparsable URL)"
	}
	authority, tail := rest, ""
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority, tail = rest[:i], rest[i:]
	}
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		if user, _, hasPass := strings.Cut(authority[:i], ":"); hasPass {
			authority = user + ":xxxxx" + authority[i:]
		}
	} else if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		return scheme + "://xxxxx" + Redact("x://" + rest[i:])[len("x://"):]
	}
	tail, _, _ = strings.Cut(tail, "#") // go-redis ignores fragments
	path, query, hasQuery := strings.Cut(tail, "?")
	out := scheme + "://" + authority + path
	if !hasQuery {
		return out
	}
	params := strings.Split(query, "&")
	for i, p := range params {
		name, _, _ := strings.Cut(p, "=")
		if n, err := url.QueryUnescape(name); err != nil || strings.HasSuffix(strings.ToLower(n), "password") {
			params[i] = name + "=xxxxx"
		}
	}
	return out + "?" + strings.Join(params, "&")
}

// CheckURL reports whether rawURL is one New would accept, with the same
// error New would give: config validation (check-config and serve alike)
// calls it, so the two cannot disagree.
func CheckURL(rawURL string) error {
	_, err := clientOptions(rawURL, time.Second)
	return err
}
