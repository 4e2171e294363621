package haproxy

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/stickyd/stickyd/config"
)

// Version is an HAProxy release line (major.minor): what the generated
// configuration targets.
type Version struct{ Major, Minor int }

// Supported range of the generated configuration. Lines between are
// covered (2.5, 2.7, 2.9, 3.1, 3.3); a newer line is written as MaxVersion.
var (
	MinVersion = Version{2, 4}
	MaxVersion = Version{3, 4}
	// DefaultVersion applies when neither --haproxy-version nor an haproxy
	// on PATH says otherwise: Debian bookworm's 2.6.
	DefaultVersion = Version{2, 6}
	// spopMux is the first line where SPOE runs on the SPOP multiplexer:
	// agents backend in mode spop; timeout hello|idle, maxerrrate and
	// option async are gone (ignored, deprecated).
	spopMux = Version{3, 1}
	// tableIdle is the first line with the table_idle converter, which the
	// table's fast path (haproxy.local_fresh) needs: 2.4 has none.
	tableIdle = Version{2, 6}
)

// FastPath reports whether the line has the fast path of the table of
// answers (haproxy.local_fresh): it needs table_idle.
func (v Version) FastPath() bool { return v.AtLeast(tableIdle) }

// ErrUnsupportedVersion is returned for a line older than MinVersion.
var ErrUnsupportedVersion = errors.New("unsupported HAProxy version")

func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// AtLeast reports whether v is o or newer.
func (v Version) AtLeast(o Version) bool {
	return v.Major > o.Major || v.Major == o.Major && v.Minor >= o.Minor
}

var versionRE = regexp.MustCompile(`(?:^|\s|v)(\d+)\.(\d+)(?:[.\-+~\w]*)?`)

// ParseVersion reads "3.0", "2.6.12", "3.0.11-1+deb13u4" or the first line
// of `haproxy -v` ("HAProxy version 2.6.12-1+deb12u4 2025/04/23 - ...").
func ParseVersion(s string) (Version, error) {
	m := versionRE.FindStringSubmatch(s)
	if m == nil {
		return Version{}, fmt.Errorf("HAProxy version %q: want MAJOR.MINOR, e.g. 2.6", s)
	}
	maj, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	return Version{maj, minor}, nil
}

// Check refuses a line older than MinVersion (no MQTT converters before
// 2.4) and maps a newer line than MaxVersion to MaxVersion.
func (v Version) Check() (Version, error) {
	if !v.AtLeast(MinVersion) {
		return v, fmt.Errorf("%w: %s (supported: %s to %s)", ErrUnsupportedVersion, v, MinVersion, MaxVersion)
	}
	if v.AtLeast(MaxVersion) {
		return MaxVersion, nil
	}
	return v, nil
}

// Build is an HAProxy binary as `haproxy -vv` describes it: its line,
// and whether it was built with an SSL library (TLS listeners, client
// certificates, PROXY v2 with TLS information need one).
type Build struct {
	Version Version
	TLS     bool
}

// ErrNoTLS is returned when the configuration needs TLS from an HAProxy
// built without an SSL library.
var ErrNoTLS = errors.New("HAProxy built without TLS support")

// DetectBuild runs `haproxy -vv` (the haproxy on PATH). ok is false when
// there is none; an haproxy that runs but prints no version is an error.
func DetectBuild(ctx context.Context) (b Build, ok bool, err error) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		return Build{}, false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-vv").Output()
	if err != nil {
		return Build{}, true, fmt.Errorf("%s -vv: %w", bin, err)
	}
	b, err = ParseBuild(string(out))
	if err != nil {
		return Build{}, true, fmt.Errorf("%s -vv: %w", bin, err)
	}
	return b, true, nil
}

// ParseBuild reads the output of `haproxy -vv`: the version from its first
// line, TLS from its feature list (+OPENSSL on every line; 3.x also lists
// +SSL, and +OPENSSL_WOLFSSL or +OPENSSL_AWSLC for other libraries).
func ParseBuild(out string) (Build, error) {
	first, rest, _ := strings.Cut(out, "\n")
	v, err := ParseVersion(first)
	if err != nil {
		return Build{}, err
	}
	b := Build{Version: v}
	for _, line := range strings.Split(rest, "\n") {
		features, ok := strings.CutPrefix(strings.TrimSpace(line), "Feature list :")
		if !ok {
			continue
		}
		for _, f := range strings.Fields(features) {
			if f == "+SSL" || strings.HasPrefix(f, "+OPENSSL") {
				b.TLS = true
			}
		}
	}
	return b, nil
}

// CheckConfig refuses a configuration that needs what this build lacks,
// naming the setting.
func (b Build) CheckConfig(cfg *config.Config) error {
	if b.TLS {
		return nil
	}
	if cfg.HAProxy.TLS.Bind != "" {
		return fmt.Errorf("haproxy.tls.bind: %w (haproxy -vv lists no SSL library)", ErrNoTLS)
	}
	for i, be := range cfg.Backends {
		key := fmt.Sprintf("backends[%d]", i)
		switch {
		case be.TLSBind != "":
			return fmt.Errorf("%s.tls_bind: %w (haproxy -vv lists no SSL library)", key, ErrNoTLS)
		case be.ProxyProtocol == config.ProxyV2SSL || be.ProxyProtocol == config.ProxyV2SSLCN:
			return fmt.Errorf("%s.proxy_protocol %s: %w (haproxy -vv lists no SSL library)", key, be.ProxyProtocol, ErrNoTLS)
		}
	}
	return nil
}
