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

// releaseRE reads the release from `haproxy -v`'s first line.
var releaseRE = regexp.MustCompile(`HA-?Proxy version (\S+)`)

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
	// Release is the full version as printed ("2.6.12-1+deb12u4"), for
	// what depends on one release's upstream bug.
	Release string
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
	if m := releaseRE.FindStringSubmatch(first); m != nil {
		b.Release = m[1]
	}
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
	if s := needsTLS(cfg); s != "" {
		return fmt.Errorf("%s: %w (haproxy -vv lists no SSL library)", s, ErrNoTLS)
	}
	return nil
}

// needsTLS names the first setting that needs HAProxy to speak TLS, or "".
func needsTLS(cfg *config.Config) string {
	if cfg.HAProxy.TLS.Bind != "" {
		return "haproxy.tls.bind"
	}
	for i, be := range cfg.Backends {
		switch {
		case be.TLSBind != "":
			return fmt.Sprintf("backends[%d].tls_bind", i)
		case be.ProxyProtocol == config.ProxyV2SSL || be.ProxyProtocol == config.ProxyV2SSLCN:
			return fmt.Sprintf("backends[%d].proxy_protocol %s", i, be.ProxyProtocol)
		}
	}
	return ""
}
