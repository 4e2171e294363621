// Package haproxy speaks to HAProxy itself: it writes the configuration
// that routes MQTT through the SPOE agent (one template per section, in
// templates/) and reads and drives the Runtime API (runtime.go). The SPOE
// wire protocol is package spoe's.
package haproxy

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/stickyd/stickyd/agent"
	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/spoe"
)

// File names written by WriteConfig.
const (
	ConfigFile = "haproxy.cfg"
	SPOEFile   = "stickyd.spoe.conf"
)

// Names used in the generated configuration.
const (
	EngineName    = "stickyd"
	AgentsBackend = "stickyd_agents"
	// FallbackSuffix names the backend that takes the connections the
	// fail-open placement routed: "<backend>_fallback".
	FallbackSuffix = "_fallback"
	// ResolversName names the resolvers section written when
	// haproxy.resolvers is set.
	ResolversName = "stickyd_dns"
)

// GenOptions tune generation beyond the configuration file.
type GenOptions struct {
	// LogConnections adds one log line per connection on stdout (who went
	// where, and any SPOE error). Off by default: it is one line per CONNECT.
	LogConnections bool
	// Version is the HAProxy line to write for; zero means DefaultVersion.
	Version Version
}

// WriteConfig writes haproxy.cfg and the SPOE file into dir. The
// haproxy.cfg references the SPOE file by absolute path, so HAProxy can run
// from any working directory.
func WriteConfig(cfg *config.Config, dir string, opts GenOptions) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("haproxy config: %w", err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return fmt.Errorf("haproxy config: %w", err)
	}
	spoePath := filepath.Join(abs, SPOEFile)
	main, spoe, err := Generate(cfg, spoePath, opts)
	if err != nil {
		return err
	}
	if err := writeFile(spoePath, spoe); err != nil {
		return err
	}
	return writeFile(filepath.Join(abs, ConfigFile), main)
}

// writeFile replaces a file atomically, so a reload never reads half of it.
func writeFile(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("haproxy config: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("haproxy config: %w", err)
	}
	return nil
}

// Generate returns haproxy.cfg (referencing spoePath) and the SPOE file.
func Generate(cfg *config.Config, spoePath string, opts GenOptions) (mainCfg, spoeCfg []byte, err error) {
	if opts.Version == (Version{}) {
		opts.Version = DefaultVersion
	}
	v, err := opts.Version.Check()
	if err != nil {
		return nil, nil, fmt.Errorf("haproxy config: %w", err)
	}
	opts.Version = v
	d := genData{Cfg: cfg, SPOEPath: spoePath, Opts: opts, Agents: cfg.HAProxy.Agents}
	for _, b := range cfg.Backends {
		if b.Bind == "" {
			return nil, nil, fmt.Errorf("haproxy config: backend %q has no bind (only the first backend defaults to haproxy.bind)", b.Name)
		}
		d.Backends = append(d.Backends, b)
	}
	var m, s bytes.Buffer
	if err := templates.ExecuteTemplate(&m, "haproxy.cfg", &d); err != nil {
		return nil, nil, fmt.Errorf("haproxy config: %w", err)
	}
	if err := templates.ExecuteTemplate(&s, "spoe", &d); err != nil {
		return nil, nil, fmt.Errorf("haproxy config: %w", err)
	}
	return m.Bytes(), s.Bytes(), nil
}

type genData struct {
	Cfg      *config.Config
	SPOEPath string
	Opts     GenOptions
	Backends []config.Backend
	Agents   []string
}

// backendData is what the per-backend templates see: the backend's fields
// as .Name, .Servers, ..., and everything else through $.
type backendData struct {
	*genData
	config.Backend
}

// ForBackend gives a per-backend template its data.
func (d *genData) ForBackend(b config.Backend) backendData { return backendData{d, b} }

// ms renders a duration in HAProxy's syntax, rounded up to a millisecond.
func ms(d config.Duration) string {
	v := time.Duration(d)
	n := (v + time.Millisecond - 1) / time.Millisecond
	return strconv.FormatInt(int64(n), 10) + "ms"
}

func (*genData) EngineName() string     { return EngineName }
func (*genData) AgentsBackend() string  { return AgentsBackend }
func (*genData) FallbackSuffix() string { return FallbackSuffix }

// SPOPMux is true for 3.1+, where SPOE runs on the SPOP multiplexer.
func (d *genData) SPOPMux() bool       { return d.Opts.Version.AtLeast(spopMux) }
func (*genData) VarPrefix() string     { return spoe.VarPrefix }
func (*genData) MessageName() string   { return spoe.MessageName }
func (*genData) ResolversName() string { return ResolversName }
func (*genData) ResolvConf() string    { return config.ResolvConf }

// ResolveOpts is appended to every server line: with haproxy.resolvers set,
// the name is resolved at run time and may not resolve at startup.
func (d *genData) ResolveOpts() string {
	if len(d.Cfg.HAProxy.Resolvers) == 0 {
		return ""
	}
	return " resolvers " + ResolversName + " init-addr last,libc,none"
}

// failOpenDraw is one draw of the fail-open placement: its rules score the
// key with xxh32(Seed) for Server, ranked by Rank on a tie.
type failOpenDraw struct {
	Server string
	Seed   uint32
	Rank   int
}

// failOpenRank breaks ties towards the server listed first; it fits the
// low 9 bits HAProxy's rules keep for it (agent.MaxServers is 256).
func failOpenRank(i int) int { return agent.MaxServers - i }

// FailOpenDraws lists every draw of the backend's servers, weight each
// (agent.DrawSeeds): 2 rules per draw, plus one per server and one more.
func (d backendData) FailOpenDraws() []failOpenDraw {
	var out []failOpenDraw
	for i, s := range d.Servers {
		for _, seed := range agent.DrawSeeds(s.Name, s.Weight) {
			out = append(out, failOpenDraw{Server: s.Name, Seed: seed, Rank: failOpenRank(i)})
		}
	}
	return out
}
