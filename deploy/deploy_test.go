package deploy

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/stickyd/stickyd/api"
	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/haproxy"
	"github.com/stickyd/stickyd/internal/testenv"
)

// Paths relative to this package's directory (go test's working directory).
const (
	dockerDir  = "docker"
	systemdDir = "systemd"
	kubeDir    = "kubernetes"
)

// ---------------------------------------------------------------- helpers

// decodeAll returns every YAML document of a file as a node, failing on a
// parse error or an empty document.
func decodeAll(t *testing.T, file string) []*yaml.Node {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if len(n.Content) == 0 || n.Content[0].Kind != yaml.MappingNode {
			t.Fatalf("%s: document %d is not a mapping", file, len(docs)+1)
		}
		docs = append(docs, &n)
	}
	if len(docs) == 0 {
		t.Fatalf("%s: no YAML document", file)
	}
	return docs
}

// strict decodes one document into v, rejecting keys v does not declare: a
// misspelt key in a manifest fails here instead of being ignored.
func strict(t *testing.T, what string, doc *yaml.Node, v any) {
	t.Helper()
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func yamlFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no YAML file under %s", dir)
	}
	return files
}

// loadConfig parses a stickyd configuration as the deployment runs it: env
// holds the STICKYD_* variables the deployment sets (and nothing from the
// test's own environment).
func loadConfig(t *testing.T, file string, env map[string]string) config.Config {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, err := config.Parse(f, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatalf("%s (env %v): %v", file, env, err)
	}
	return cfg
}

// tokenFile stands in for a mounted secret.
func tokenFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "api-token")
	if err := os.WriteFile(p, []byte("test-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// haproxyCheck generates the HAProxy configuration of cfg and runs
// `haproxy -c` on it. The certificates the deployment mounts are replaced
// by ones made here (openssl), at test paths.
func haproxyCheck(t *testing.T, cfg *config.Config) {
	t.Helper()
	bin := testenv.RequireBinary(t, "haproxy")
	if cfg.HAProxy.TLS.Crt != "" {
		pki := testenv.NewPKI(t)
		cfg.HAProxy.TLS.Crt = pki.Server(t)
		if cfg.HAProxy.TLS.CA != "" {
			cfg.HAProxy.TLS.CA = pki.CA
		}
		if err := cfg.CheckTLSFiles(); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	if err := haproxy.WriteConfig(cfg, dir, haproxy.GenOptions{}); err != nil {
		t.Fatal(err)
	}
	main := filepath.Join(dir, haproxy.ConfigFile)
	if out, err := exec.Command(bin, "-c", "-f", main).CombinedOutput(); err != nil {
		data, _ := os.ReadFile(main)
		t.Fatalf("haproxy -c: %v\n%s\n--- %s ---\n%s", err, out, main, data)
	}
}

func hostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return h, n
}

// checkResolvable: a hostname in a server or agent address needs
// haproxy.resolvers, or HAProxy refuses to start while that container or
// pod is not up yet (and never follows its new address).
func checkResolvable(t *testing.T, cfg *config.Config) {
	t.Helper()
	addrs := slices.Clone(cfg.HAProxy.Agents)
	for _, b := range cfg.Backends {
		for _, s := range b.Servers {
			addrs = append(addrs, s.Address)
		}
	}
	for _, a := range addrs {
		if h, _ := hostPort(t, a); net.ParseIP(h) == nil && len(cfg.HAProxy.Resolvers) == 0 {
			t.Errorf("address %s is a hostname but haproxy.resolvers is not set", a)
		}
	}
}

// flag returns the value following name in args.
func flag(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// ---------------------------------------------------------------- all YAML

func TestYAMLParses(t *testing.T) {
	for _, dir := range []string{dockerDir, kubeDir, systemdDir} {
		for _, f := range yamlFiles(t, dir) {
			docs := decodeAll(t, f)
			if dir != kubeDir || isKustomizeInput(t, f) {
				if len(docs) != 1 {
					t.Errorf("%s: %d documents, want 1", f, len(docs))
				}
				continue
			}
			for i, d := range docs {
				var obj struct {
					APIVersion string `yaml:"apiVersion"`
					Kind       string `yaml:"kind"`
					Metadata   struct {
						Name string `yaml:"name"`
					} `yaml:"metadata"`
				}
				if err := d.Decode(&obj); err != nil {
					t.Fatalf("%s document %d: %v", f, i+1, err)
				}
				if obj.APIVersion == "" || obj.Kind == "" || obj.Metadata.Name == "" {
					t.Errorf("%s document %d: apiVersion %q, kind %q, metadata.name %q: all three are required",
						f, i+1, obj.APIVersion, obj.Kind, obj.Metadata.Name)
				}
			}
		}
	}
}

// ---------------------------------------------------------------- docker

type composeFile struct {
	Name         string                    `yaml:"name"`
	StickydImage any                       `yaml:"x-stickyd-image"`
	Services     map[string]composeService `yaml:"services"`
	Volumes      map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string            `yaml:"context"`
		Dockerfile string            `yaml:"dockerfile"`
		Args       map[string]string `yaml:"args"`
	} `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	Ports       []string          `yaml:"ports"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck *struct {
		Test        []string `yaml:"test"`
		Interval    string   `yaml:"interval"`
		Timeout     string   `yaml:"timeout"`
		Retries     int      `yaml:"retries"`
		StartPeriod string   `yaml:"start_period"`
	} `yaml:"healthcheck"`
	Restart     string   `yaml:"restart"`
	ReadOnly    bool     `yaml:"read_only"`
	CapDrop     []string `yaml:"cap_drop"`
	CapAdd      []string `yaml:"cap_add"`
	SecurityOpt []string `yaml:"security_opt"`
	Privileged  bool     `yaml:"privileged"`
	NetworkMode string   `yaml:"network_mode"`
}

// mount finds the volume whose target holds p: (source, target).
func (s composeService) mount(p string) (string, string) {
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 {
			continue
		}
		if p == parts[1] || strings.HasPrefix(p, strings.TrimSuffix(parts[1], "/")+"/") {
			return parts[0], parts[1]
		}
	}
	return "", ""
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	var c composeFile
	strict(t, "compose.yaml", decodeAll(t, filepath.Join(dockerDir, "compose.yaml"))[0], &c)
	return c
}

// envRef matches compose interpolation: ${VAR}, ${VAR:?message}, ...
var envRef = regexp.MustCompile(`^\$\{([A-Z_]+)[:?\-}]`)

func TestCompose(t *testing.T) {
	c := loadCompose(t)
	for _, name := range []string{"redis", "n1", "n2", "stickyd", "haproxy-config", "haproxy"} {
		if _, ok := c.Services[name]; !ok {
			t.Fatalf("compose.yaml: no service %q", name)
		}
	}
	for name, s := range c.Services {
		if s.Privileged || len(s.CapAdd) > 0 || s.NetworkMode == "host" {
			t.Errorf("service %s: privileged, cap_add or host network", name)
		}
		if s.Image == "" {
			t.Errorf("service %s: no image", name)
		}
		if name != "haproxy-config" && (s.Healthcheck == nil || len(s.Healthcheck.Test) == 0) {
			t.Errorf("service %s: no healthcheck", name)
		}
		for dep := range s.DependsOn {
			if _, ok := c.Services[dep]; !ok {
				t.Errorf("service %s depends on unknown %s", name, dep)
			}
		}
		for _, v := range s.Volumes {
			src := strings.Split(v, ":")[0]
			if strings.HasPrefix(src, ".") {
				if _, err := os.Stat(filepath.Join(dockerDir, src)); err != nil {
					t.Errorf("service %s mounts %s: %v", name, src, err)
				}
			} else if _, ok := c.Volumes[src]; !ok {
				t.Errorf("service %s mounts undeclared volume %s", name, src)
			}
		}
	}

	hp, gen, sd := c.Services["haproxy"], c.Services["haproxy-config"], c.Services["stickyd"]
	if got := hp.DependsOn["haproxy-config"].Condition; got != "service_completed_successfully" {
		t.Errorf("haproxy depends on haproxy-config with condition %q, want service_completed_successfully", got)
	}
	if got := hp.DependsOn["stickyd"].Condition; got != "service_healthy" {
		t.Errorf("haproxy depends on stickyd with condition %q: start the agent first (service_healthy)", got)
	}
	if gen.Restart != "no" {
		t.Errorf("haproxy-config is one-shot: restart %q, want \"no\"", gen.Restart)
	}
	for _, name := range []string{"stickyd", "haproxy-config"} {
		s := c.Services[name]
		if s.Build == nil || s.Image != sd.Image {
			t.Errorf("service %s: want the stickyd image %q built from the Dockerfile", name, sd.Image)
			continue
		}
		df := filepath.Join(dockerDir, s.Build.Context, s.Build.Dockerfile)
		if abs, _ := filepath.Abs(df); abs != mustAbs(t, filepath.Join(dockerDir, "Dockerfile")) {
			t.Errorf("service %s builds %s, want deploy/docker/Dockerfile", name, df)
		}
		if _, err := os.Stat(filepath.Join(dockerDir, s.Build.Context, "go.mod")); err != nil {
			t.Errorf("service %s: build context %s has no go.mod", name, s.Build.Context)
		}
		if !s.ReadOnly || !slices.Contains(s.CapDrop, "ALL") || !slices.Contains(s.SecurityOpt, "no-new-privileges:true") {
			t.Errorf("service %s: want read_only, cap_drop [ALL], no-new-privileges", name)
		}
	}

	// The generator and the agent read the mounted stickyd.yaml.
	for name, s := range map[string]composeService{"stickyd": sd, "haproxy-config": gen} {
		cfgPath := flag(s.Command, "--config")
		if src, _ := s.mount(cfgPath); src != "./stickyd.yaml" {
			t.Errorf("service %s: --config %q is not the mounted ./stickyd.yaml", name, cfgPath)
		}
	}
	if sd.Command[0] != "serve" || gen.Command[0] != "haproxy-config" {
		t.Errorf("commands: stickyd %v, haproxy-config %v", sd.Command, gen.Command)
	}
	// haproxy.cfg names the SPOE file by absolute path: haproxy must see the
	// generated directory at the same path.
	out := flag(gen.Command, "--out")
	genVol, genTarget := gen.mount(out)
	hpVol, hpTarget := hp.mount(out)
	if genVol == "" || genVol != hpVol || genTarget != hpTarget {
		t.Errorf("--out %s: haproxy-config mounts %q at %q, haproxy %q at %q: want the same volume at the same path",
			out, genVol, genTarget, hpVol, hpTarget)
	}
	if f := flag(hp.Command, "-f"); f != path.Join(out, haproxy.ConfigFile) {
		t.Errorf("haproxy -f %q, want %s", f, path.Join(out, haproxy.ConfigFile))
	}

	// The configuration as the stickyd service runs it.
	env := map[string]string{}
	for k, v := range sd.Environment {
		if envRef.MatchString(v) {
			v = "test-token-0123456789" // set by the operator (.env)
		}
		env[k] = v
	}
	cfg := loadConfig(t, filepath.Join(dockerDir, "stickyd.yaml"), env)
	if err := api.CheckListen(cfg.APIListen, cfg.APIToken); err != nil {
		t.Errorf("stickyd service would refuse to start: %v", err)
	}
	if config.IsLoopback(cfg.SPOEListen) {
		t.Errorf("spoe_listen %s: HAProxy is in another container", cfg.SPOEListen)
	}
	_, spoePort := hostPort(t, cfg.SPOEListen)
	for _, a := range cfg.HAProxy.Agents {
		if h, p := hostPort(t, a); h != "stickyd" || p != spoePort {
			t.Errorf("haproxy.agents %s: want stickyd:%d", a, spoePort)
		}
	}
	mosq, err := os.ReadFile(filepath.Join(dockerDir, "mosquitto.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range cfg.Backends {
		for _, s := range b.Servers {
			h, p := hostPort(t, s.Address)
			if _, ok := c.Services[h]; !ok {
				t.Errorf("server %s: %s is not a compose service", s.Name, h)
			}
			if !regexp.MustCompile(`(?m)^listener ` + strconv.Itoa(p) + `\b`).Match(mosq) {
				t.Errorf("server %s: mosquitto.conf has no listener on %d", s.Name, p)
			}
		}
	}
	checkResolvable(t, &cfg)
	_, bindPort := hostPort(t, cfg.HAProxy.Bind)
	if !slices.ContainsFunc(hp.Ports, func(p string) bool { return strings.HasSuffix(p, ":"+strconv.Itoa(bindPort)) }) {
		t.Errorf("haproxy publishes %v, not haproxy.bind's port %d", hp.Ports, bindPort)
	}
	_, apiPort := hostPort(t, cfg.APIListen)
	if hc := strings.Join(sd.Healthcheck.Test, " "); !strings.Contains(hc, ":"+strconv.Itoa(apiPort)+"/") {
		t.Errorf("stickyd healthcheck %q does not probe api_listen's port %d", hc, apiPort)
	}
	// The TLS listener: its certificate is mounted where the generator
	// (which reads it) and HAProxy look, and its port is published.
	if crt := cfg.HAProxy.TLS.Crt; crt == "" || cfg.Backends[0].TLSBind == "" {
		t.Error("no TLS listener (haproxy.tls) in the compose example")
	} else {
		for name, s := range map[string]composeService{"haproxy-config": gen, "haproxy": hp} {
			if src, _ := s.mount(crt); src != "./tls" {
				t.Errorf("service %s: haproxy.tls.crt %s is not in the mounted ./tls (got %q)", name, crt, src)
			}
		}
		_, tlsPort := hostPort(t, cfg.Backends[0].TLSBind)
		if !slices.ContainsFunc(hp.Ports, func(p string) bool { return strings.HasSuffix(p, ":"+strconv.Itoa(tlsPort)) }) {
			t.Errorf("haproxy publishes %v, not the TLS listener's port %d", hp.Ports, tlsPort)
		}
	}
	// The generator runs without the token.
	genCfg := loadConfig(t, filepath.Join(dockerDir, "stickyd.yaml"), nil)
	haproxyCheck(t, &genCfg)
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

type dockerInstr struct {
	line      int
	cmd, args string
}

// parseDockerfile returns instructions with continuations joined.
func parseDockerfile(t *testing.T, file string) []dockerInstr {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []dockerInstr
	var cur strings.Builder
	start, n := 0, 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		cont := strings.HasSuffix(line, "\\")
		cur.WriteString(strings.TrimSuffix(line, "\\"))
		cur.WriteString(" ")
		if cont {
			continue
		}
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		out = append(out, dockerInstr{start, strings.ToUpper(cmd), strings.Join(strings.Fields(args), " ")})
		cur.Reset()
	}
	return out
}

func TestDockerfile(t *testing.T) {
	file := filepath.Join(dockerDir, "Dockerfile")
	ins := parseDockerfile(t, file)
	var stages []string // FROM arguments
	var final []dockerInstr
	var build strings.Builder
	for _, in := range ins {
		switch in.cmd {
		case "FROM":
			stages = append(stages, in.args)
			final = nil
		case "ADD":
			if regexp.MustCompile(`(?i)(https?|git)://|git@`).MatchString(in.args) {
				t.Errorf("line %d: ADD of a remote source: %s", in.line, in.args)
			}
		}
		if len(stages) == 1 {
			build.WriteString(in.cmd + " " + in.args + "\n")
		}
		final = append(final, in)
	}
	if len(stages) < 2 {
		t.Fatalf("%d FROM: want a multi-stage build", len(stages))
	}
	if !regexp.MustCompile(`(^|\s)golang:1\.26(\S*)? AS build$`).MatchString(stages[0]) {
		t.Errorf("first stage %q: want golang:1.26 AS build", stages[0])
	}
	last := stages[len(stages)-1]
	if last != "scratch" && !strings.HasPrefix(last, "gcr.io/distroless/static") {
		t.Errorf("final stage %q: want scratch or distroless static", last)
	}
	b := build.String()
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags "-s -w -X main.version=${VERSION}"`, "go build"} {
		if !strings.Contains(b, want) {
			t.Errorf("build stage lacks %s", want)
		}
	}
	get := func(cmd string) string {
		v := ""
		for _, in := range final {
			if in.cmd == cmd {
				v = in.args
			}
		}
		return v
	}
	user := strings.Split(get("USER"), ":")[0]
	if uid, err := strconv.Atoi(user); err != nil || uid == 0 {
		t.Errorf("final USER %q: want a numeric non-root uid (Kubernetes runAsNonRoot checks it)", get("USER"))
	}
	if got := get("ENTRYPOINT"); got != `["/stickyd"]` {
		t.Errorf("ENTRYPOINT %s", got)
	}
	if got := get("CMD"); got != `["serve", "--config", "/etc/stickyd/stickyd.yaml"]` {
		t.Errorf("CMD %s", got)
	}
	def := config.Default()
	for _, addr := range []string{def.SPOEListen, def.APIListen} {
		if _, p := hostPort(t, addr); !slices.Contains(strings.Fields(get("EXPOSE")), strconv.Itoa(p)) {
			t.Errorf("EXPOSE %q lacks %d", get("EXPOSE"), p)
		}
	}
	for _, in := range final {
		if in.cmd == "COPY" {
			if m := regexp.MustCompile(`--from=(\S+)`).FindStringSubmatch(in.args); m != nil && !strings.HasSuffix(stages[0], " AS "+m[1]) {
				t.Errorf("line %d: COPY --from=%s: no such stage", in.line, m[1])
			}
		}
	}

	// The BuildKit ignore file keeps the sources in the context.
	ign, err := os.ReadFile(filepath.Join(dockerDir, "Dockerfile.dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var pats []string
	for _, l := range strings.Split(string(ign), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			pats = append(pats, l)
		}
	}
	if !slices.Contains(pats, ".git") {
		t.Error("Dockerfile.dockerignore does not exclude .git")
	}
	for _, keep := range []string{"go.mod", "go.sum", "main.go", "config/config.go", "deploy/docker/healthcheck/main.go"} {
		for _, p := range pats {
			if ok, _ := path.Match(p, keep); ok || strings.HasPrefix(keep, strings.TrimSuffix(p, "/")+"/") {
				t.Errorf("Dockerfile.dockerignore pattern %q excludes %s, needed by the build", p, keep)
			}
		}
	}
}

// TestDockerBuildCommand runs the Dockerfile's build command here (the
// image itself cannot be built without a Docker engine) and checks that
// the binaries are static and the version is stamped.
func TestDockerBuildCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds stickyd")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go not on PATH")
	}
	out := t.TempDir()
	for _, b := range []struct{ out, pkg, ldflags string }{
		{"stickyd", ".", "-s -w -X main.version=docker-test"},
		{"healthcheck", "./deploy/docker/healthcheck", "-s -w"},
	} {
		cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags", b.ldflags, "-o", filepath.Join(out, b.out), b.pkg)
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if o, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", b.pkg, err, o)
		}
		f, err := elf.Open(filepath.Join(out, b.out))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s has an ELF interpreter: not static", b.out)
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			t.Errorf("%s links %v: not static", b.out, libs)
		}
		f.Close()
	}
	v, err := exec.Command(filepath.Join(out, "stickyd"), "version").Output()
	if err != nil || strings.TrimSpace(string(v)) != "stickyd docker-test" {
		t.Errorf("stickyd version: %q, %v", v, err)
	}
}

// ---------------------------------------------------------------- systemd

// unitDirectives returns "Section.Key" -> values, in order.
func unitDirectives(t *testing.T, file string) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	section := ""
	for _, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";"):
		case strings.HasPrefix(l, "["):
			section = strings.Trim(l, "[]")
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				t.Fatalf("%s: bad line %q", file, l)
			}
			out[section+"."+k] = append(out[section+"."+k], v)
		}
	}
	return out
}

const (
	unitExec   = "/usr/local/bin/stickyd"
	unitConfig = "/etc/stickyd/stickyd.yaml"
)

func TestSystemdUnit(t *testing.T) {
	unit := filepath.Join(systemdDir, "stickyd.service")
	d := unitDirectives(t, unit)
	want := map[string]string{
		"Service.Type":                    "simple",
		"Service.ExecStart":               unitExec + " serve --config " + unitConfig,
		"Service.Restart":                 "on-failure",
		"Service.NoNewPrivileges":         "yes",
		"Service.ProtectSystem":           "strict",
		"Service.ProtectHome":             "yes",
		"Service.PrivateTmp":              "yes",
		"Service.PrivateDevices":          "yes",
		"Service.ProtectKernelTunables":   "yes",
		"Service.ProtectKernelModules":    "yes",
		"Service.ProtectKernelLogs":       "yes",
		"Service.ProtectControlGroups":    "yes",
		"Service.RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		"Service.RestrictNamespaces":      "yes",
		"Service.LockPersonality":         "yes",
		"Service.MemoryDenyWriteExecute":  "yes",
		"Service.CapabilityBoundingSet":   "",
		"Service.AmbientCapabilities":     "",
		"Service.DynamicUser":             "yes",
		"Install.WantedBy":                "multi-user.target",
	}
	for k, v := range want {
		if got, ok := d[k]; !ok || got[0] != v {
			t.Errorf("%s=%q, want %q", k, got, v)
		}
	}
	if !slices.Contains(d["Service.SystemCallFilter"], "@system-service") {
		t.Errorf("SystemCallFilter %q lacks @system-service", d["Service.SystemCallFilter"])
	}
	if len(d["Service.LimitNOFILE"]) == 0 {
		t.Error("no LimitNOFILE")
	}

	// The example configuration, with the token the unit passes.
	env := map[string]string{}
	for _, e := range d["Service.Environment"] {
		k, v, _ := strings.Cut(e, "=")
		if strings.HasPrefix(v, "%d/") { // credentials directory
			cred := strings.TrimPrefix(v, "%d/")
			if !slices.ContainsFunc(d["Service.LoadCredential"], func(c string) bool { return strings.HasPrefix(c, cred+":") }) {
				t.Errorf("%s=%s: no LoadCredential=%s:...", k, v, cred)
			}
			v = tokenFile(t)
		}
		env[k] = v
	}
	cfg := loadConfig(t, filepath.Join(systemdDir, "stickyd.yaml"), env)
	if err := api.CheckListen(cfg.APIListen, cfg.APIToken); err != nil {
		t.Errorf("the unit would refuse to start: %v", err)
	}
	checkResolvable(t, &cfg)
	genCfg := loadConfig(t, filepath.Join(systemdDir, "stickyd.yaml"), nil)
	haproxyCheck(t, &genCfg)
}

// systemdAnalyze is optional (not a project dependency): skip, never fail,
// when it is missing.
func systemdAnalyze(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: runs systemd-analyze")
	}
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (apt-get install systemd): unit not verified")
	}
	return p
}

// installedUnit copies the unit into a temporary directory with ExecStart
// pointing at an executable that exists here: verify checks the path, and
// stickyd is not installed at /usr/local/bin on a test machine.
func installedUnit(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(systemdDir, "stickyd.service"))
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "stickyd.service")
	if err := os.WriteFile(p, bytes.ReplaceAll(data, []byte(unitExec), []byte(self)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSystemdAnalyzeVerify(t *testing.T) {
	bin := systemdAnalyze(t)
	unit := installedUnit(t)
	// verify exits 0 on unknown keys and bad values, only printing them:
	// any output is a failure.
	out, err := exec.Command(bin, "verify", unit).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestSystemdAnalyzeSecurity(t *testing.T) {
	bin := systemdAnalyze(t)
	unit := installedUnit(t)
	// Exposure at most 2.0 of 10 (systemd rates 1.1 as "OK"): the
	// threshold is in tenths.
	out, err := exec.Command(bin, "security", "--offline=true", "--threshold=20", unit).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("unrecognized option")) {
			t.Skipf("systemd-analyze too old for --offline/--threshold (systemd < 250): %s", bytes.TrimSpace(out))
		}
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
}

// ---------------------------------------------------------------- kubernetes

type kustomization struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Namespace  string   `yaml:"namespace"`
	Resources  []string `yaml:"resources"`
	Labels     []any    `yaml:"labels"`
	Generator  []struct {
		Name  string   `yaml:"name"`
		Files []string `yaml:"files"`
	} `yaml:"configMapGenerator"`
	Images []struct {
		Name    string `yaml:"name"`
		NewName string `yaml:"newName"`
		NewTag  string `yaml:"newTag"`
	} `yaml:"images"`
}

func loadKustomization(t *testing.T) kustomization {
	t.Helper()
	var k kustomization
	strict(t, "kustomization.yaml", decodeAll(t, filepath.Join(kubeDir, "kustomization.yaml"))[0], &k)
	return k
}

// isKustomizeInput: kustomization.yaml itself and the files it turns into
// ConfigMaps are not Kubernetes objects.
func isKustomizeInput(t *testing.T, file string) bool {
	t.Helper()
	if filepath.Base(file) == "kustomization.yaml" {
		return true
	}
	for _, g := range loadKustomization(t).Generator {
		for _, f := range g.Files {
			if filepath.Join(kubeDir, f) == file {
				return true
			}
		}
	}
	return false
}

type kObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   kMeta  `yaml:"metadata"`
}

type kMeta struct {
	Name      string            `yaml:"name"`
	Namespace string            `yaml:"namespace"`
	Labels    map[string]string `yaml:"labels"`
}

// Workloads are decoded strictly: every key used in the manifests is
// declared here, so a misspelt one fails the test.
type kWorkload struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   kMeta  `yaml:"metadata"`
	Spec       struct {
		Replicas    int          `yaml:"replicas"`
		ServiceName string       `yaml:"serviceName"`
		Selector    kSelector    `yaml:"selector"`
		Strategy    any          `yaml:"strategy"`
		Template    kPodTemplate `yaml:"template"`
		VolumeClaim []struct {
			Metadata kMeta `yaml:"metadata"`
			Spec     any   `yaml:"spec"`
		} `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}

type kSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type kPodTemplate struct {
	Metadata kMeta `yaml:"metadata"`
	Spec     struct {
		AutomountSAToken   *bool        `yaml:"automountServiceAccountToken"`
		EnableServiceLinks *bool        `yaml:"enableServiceLinks"`
		TerminationGrace   int          `yaml:"terminationGracePeriodSeconds"`
		SecurityContext    kSecContext  `yaml:"securityContext"`
		Volumes            []kVolume    `yaml:"volumes"`
		InitContainers     []kContainer `yaml:"initContainers"`
		Containers         []kContainer `yaml:"containers"`
	} `yaml:"spec"`
}

type kSecContext struct {
	RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
	RunAsUser                *int  `yaml:"runAsUser"`
	RunAsGroup               *int  `yaml:"runAsGroup"`
	FSGroup                  *int  `yaml:"fsGroup"`
	ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
	AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
	Capabilities             struct {
		Drop []string `yaml:"drop"`
		Add  []string `yaml:"add"`
	} `yaml:"capabilities"`
	SeccompProfile struct {
		Type string `yaml:"type"`
	} `yaml:"seccompProfile"`
	Privileged *bool `yaml:"privileged"`
}

type kVolume struct {
	Name      string `yaml:"name"`
	ConfigMap *struct {
		Name string `yaml:"name"`
	} `yaml:"configMap"`
	Secret *struct {
		SecretName  string `yaml:"secretName"`
		DefaultMode int    `yaml:"defaultMode"`
		Items       []struct {
			Key  string `yaml:"key"`
			Path string `yaml:"path"`
		} `yaml:"items"`
	} `yaml:"secret"`
	EmptyDir *struct {
		Medium    string `yaml:"medium"`
		SizeLimit string `yaml:"sizeLimit"`
	} `yaml:"emptyDir"`
}

type kContainer struct {
	Name            string   `yaml:"name"`
	Image           string   `yaml:"image"`
	ImagePullPolicy string   `yaml:"imagePullPolicy"`
	RestartPolicy   string   `yaml:"restartPolicy"`
	Command         []string `yaml:"command"`
	Args            []string `yaml:"args"`
	Env             []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
	StartupProbe   *kProbe `yaml:"startupProbe"`
	ReadinessProbe *kProbe `yaml:"readinessProbe"`
	LivenessProbe  *kProbe `yaml:"livenessProbe"`
	Lifecycle      struct {
		PreStop struct {
			Exec struct {
				Command []string `yaml:"command"`
			} `yaml:"exec"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext kSecContext `yaml:"securityContext"`
}

type kProbe struct {
	HTTPGet *struct {
		Path string    `yaml:"path"`
		Port yaml.Node `yaml:"port"`
	} `yaml:"httpGet"`
	TCPSocket *struct {
		Port yaml.Node `yaml:"port"`
	} `yaml:"tcpSocket"`
	Exec *struct {
		Command []string `yaml:"command"`
	} `yaml:"exec"`
	PeriodSeconds    int `yaml:"periodSeconds"`
	FailureThreshold int `yaml:"failureThreshold"`
}

// port resolves a named or numeric port of c.
func (c kContainer) port(t *testing.T, n yaml.Node) int {
	t.Helper()
	if p, err := strconv.Atoi(n.Value); err == nil {
		return p
	}
	for _, p := range c.Ports {
		if p.Name == n.Value {
			return p.ContainerPort
		}
	}
	t.Errorf("container %s has no port named %q", c.Name, n.Value)
	return 0
}

func (c kContainer) mountOf(p string) (volume, mountPath string) {
	for _, m := range c.VolumeMounts {
		if p == m.MountPath || strings.HasPrefix(p, strings.TrimSuffix(m.MountPath, "/")+"/") {
			return m.Name, m.MountPath
		}
	}
	return "", ""
}

type kService struct {
	Metadata kMeta `yaml:"metadata"`
	Spec     struct {
		Type     string            `yaml:"type"`
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Name       string    `yaml:"name"`
			Port       int       `yaml:"port"`
			TargetPort yaml.Node `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type kubeSet struct {
	workloads map[string]kWorkload // by name
	services  map[string]kService
	kinds     map[string][]string // kind -> names
}

func loadKube(t *testing.T, files []string) kubeSet {
	t.Helper()
	ks := kubeSet{workloads: map[string]kWorkload{}, services: map[string]kService{}, kinds: map[string][]string{}}
	for _, f := range files {
		for i, d := range decodeAll(t, f) {
			var o kObject
			if err := d.Decode(&o); err != nil {
				t.Fatalf("%s document %d: %v", f, i+1, err)
			}
			ks.kinds[o.Kind] = append(ks.kinds[o.Kind], o.Metadata.Name)
			switch o.Kind {
			case "Deployment", "StatefulSet":
				var w kWorkload
				strict(t, f+" "+o.Kind+"/"+o.Metadata.Name, d, &w)
				ks.workloads[o.Metadata.Name] = w
			case "Service":
				var s kService
				if err := d.Decode(&s); err != nil {
					t.Fatal(err)
				}
				ks.services[o.Metadata.Name] = s
			}
		}
	}
	return ks
}

func matches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestKubernetes(t *testing.T) {
	k := loadKustomization(t)
	if k.Kind != "Kustomization" || k.APIVersion == "" {
		t.Errorf("kustomization.yaml: kind %q apiVersion %q", k.Kind, k.APIVersion)
	}
	// Every file is used, or an example kept out of the kustomization.
	known := map[string]bool{"kustomization.yaml": true}
	var resources []string
	for _, r := range k.Resources {
		known[r] = true
		resources = append(resources, filepath.Join(kubeDir, r))
	}
	genFile := map[string]string{} // ConfigMap name -> file
	for _, g := range k.Generator {
		for _, f := range g.Files {
			known[f] = true
			genFile[g.Name] = f
		}
	}
	for _, f := range yamlFiles(t, kubeDir) {
		rel, _ := filepath.Rel(kubeDir, f)
		if !known[rel] && !strings.HasSuffix(rel, ".example.yaml") {
			t.Errorf("%s is neither in kustomization.yaml nor an .example.yaml", f)
		}
	}
	for f := range known {
		if _, err := os.Stat(filepath.Join(kubeDir, f)); err != nil {
			t.Errorf("kustomization.yaml: %v", err)
		}
	}

	ks := loadKube(t, append(resources, filepath.Join(kubeDir, "secret.example.yaml")))
	secretKeys := map[string][]string{}
	for _, d := range decodeAll(t, filepath.Join(kubeDir, "secret.example.yaml")) {
		var s struct {
			Metadata   kMeta             `yaml:"metadata"`
			StringData map[string]string `yaml:"stringData"`
		}
		if err := d.Decode(&s); err != nil {
			t.Fatal(err)
		}
		for key, v := range s.StringData {
			secretKeys[s.Metadata.Name] = append(secretKeys[s.Metadata.Name], key)
			if v != "" {
				t.Errorf("secret.example.yaml carries a token: leave it empty")
			}
		}
	}

	// Pod security, for every workload (the namespace enforces "restricted").
	for name, w := range ks.workloads {
		pod := w.Spec.Template.Spec
		if !matches(w.Spec.Selector.MatchLabels, w.Spec.Template.Metadata.Labels) {
			t.Errorf("%s: selector %v does not match its pod labels", name, w.Spec.Selector.MatchLabels)
		}
		psc := pod.SecurityContext
		if psc.SeccompProfile.Type != "RuntimeDefault" {
			t.Errorf("%s: pod seccompProfile %q, want RuntimeDefault", name, psc.SeccompProfile.Type)
		}
		if pod.AutomountSAToken == nil || *pod.AutomountSAToken {
			t.Errorf("%s: automountServiceAccountToken must be false (no API access needed)", name)
		}
		for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
			sc := c.SecurityContext
			who := name + "/" + c.Name
			nonRoot := (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) || (sc.RunAsNonRoot == nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot)
			uid := sc.RunAsUser
			if uid == nil {
				uid = psc.RunAsUser
			}
			if !nonRoot || uid == nil || *uid == 0 {
				t.Errorf("%s: want runAsNonRoot and a numeric non-root runAsUser (images with a named USER cannot be checked by the kubelet)", who)
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s: readOnlyRootFilesystem must be true", who)
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("%s: allowPrivilegeEscalation must be false", who)
			}
			if !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
				t.Errorf("%s: capabilities must drop ALL and add none", who)
			}
			if sc.Privileged != nil && *sc.Privileged {
				t.Errorf("%s: privileged", who)
			}
			if c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" || c.Resources.Requests["cpu"] == "" {
				t.Errorf("%s: want cpu and memory requests and a memory limit", who)
			}
			if c.Image == "" {
				t.Errorf("%s: no image", who)
			}
		}
	}

	// The HAProxy pod: generator, sidecar, HAProxy.
	lb, ok := ks.workloads["mqtt-lb"]
	if !ok {
		t.Fatal("no Deployment mqtt-lb")
	}
	pod := lb.Spec.Template.Spec
	var gen, sd, hp *kContainer
	for i := range pod.InitContainers {
		c := &pod.InitContainers[i]
		switch {
		case len(c.Args) > 0 && c.Args[0] == "haproxy-config":
			gen = c
		case len(c.Args) > 0 && c.Args[0] == "serve":
			sd = c
			if gen == nil {
				t.Error("the stickyd sidecar starts before haproxy-config")
			}
		}
	}
	for i := range pod.Containers {
		if pod.Containers[i].Name == "haproxy" {
			hp = &pod.Containers[i]
		}
	}
	if gen == nil || sd == nil || hp == nil {
		t.Fatalf("mqtt-lb: want init containers haproxy-config and stickyd (sidecar) and a container haproxy")
	}
	if sd.RestartPolicy != "Always" {
		t.Errorf("stickyd: restartPolicy %q: a native sidecar has Always", sd.RestartPolicy)
	}
	if gen.RestartPolicy != "" {
		t.Errorf("haproxy-config: restartPolicy %q: it must run to completion", gen.RestartPolicy)
	}
	vols := map[string]kVolume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
	}
	// Both stickyd processes read the generated ConfigMap's file.
	var cfgFile string
	for _, c := range []*kContainer{gen, sd} {
		p := flag(c.Args, "--config")
		vol, mp := c.mountOf(p)
		v, ok := vols[vol]
		if !ok || v.ConfigMap == nil || genFile[v.ConfigMap.Name] != strings.TrimPrefix(p, mp+"/") {
			t.Fatalf("%s: --config %s is not a file of a generated ConfigMap", c.Name, p)
		}
		cfgFile = filepath.Join(kubeDir, genFile[v.ConfigMap.Name])
	}
	out := flag(gen.Args, "--out")
	gv, gm := gen.mountOf(out)
	hv, hm := hp.mountOf(out)
	if gv == "" || gv != hv || gm != hm || vols[gv].EmptyDir == nil {
		t.Errorf("--out %s: haproxy-config mounts %q at %q, haproxy %q at %q: want one emptyDir at the same path", out, gv, gm, hv, hm)
	}
	if f := flag(hp.Command, "-f"); f != path.Join(out, haproxy.ConfigFile) {
		t.Errorf("haproxy -f %q, want %s", f, path.Join(out, haproxy.ConfigFile))
	}

	// The configuration as the sidecar runs it.
	env := map[string]string{}
	for _, e := range sd.Env {
		v := e.Value
		if strings.HasSuffix(e.Name, "_FILE") {
			vol, mp := sd.mountOf(v)
			sv, ok := vols[vol]
			if !ok || sv.Secret == nil || !slices.Contains(secretKeys[sv.Secret.SecretName], strings.TrimPrefix(v, mp+"/")) {
				t.Errorf("%s=%s is not a key of a mounted Secret (see secret.example.yaml)", e.Name, v)
			}
			v = tokenFile(t)
		}
		env[e.Name] = v
	}
	cfg := loadConfig(t, cfgFile, env)
	if err := api.CheckListen(cfg.APIListen, cfg.APIToken); err != nil {
		t.Errorf("the sidecar would refuse to start: %v", err)
	}
	if !config.IsLoopback(cfg.SPOEListen) {
		t.Errorf("spoe_listen %s: a sidecar listens on the pod's loopback", cfg.SPOEListen)
	}
	for _, a := range cfg.HAProxy.Agents {
		if a != cfg.SPOEListen {
			t.Errorf("haproxy.agents %s: want the sidecar, %s", a, cfg.SPOEListen)
		}
	}
	checkResolvable(t, &cfg)
	_, apiPort := hostPort(t, cfg.APIListen)
	_, bindPort := hostPort(t, cfg.HAProxy.Bind)
	for _, pr := range []struct {
		name  string
		probe *kProbe
		path  string
	}{{"startupProbe", sd.StartupProbe, "/healthz"}, {"livenessProbe", sd.LivenessProbe, "/healthz"}} {
		if pr.probe == nil || pr.probe.HTTPGet == nil || pr.probe.HTTPGet.Path != pr.path || sd.port(t, pr.probe.HTTPGet.Port) != apiPort {
			t.Errorf("stickyd %s: want GET %s on api_listen's port %d", pr.name, pr.path, apiPort)
		}
	}
	// The sidecar's readiness is the pod's: /readyz (503 without Redis)
	// would take MQTT down with Redis, where stickyd fails open.
	if sd.ReadinessProbe != nil && sd.ReadinessProbe.HTTPGet != nil && sd.ReadinessProbe.HTTPGet.Path == "/readyz" {
		t.Error("stickyd readinessProbe on /readyz: a Redis outage would make every pod unready")
	}
	for _, pr := range []*kProbe{hp.ReadinessProbe, hp.LivenessProbe} {
		if pr == nil || pr.TCPSocket == nil || hp.port(t, pr.TCPSocket.Port) != bindPort {
			t.Errorf("haproxy: want tcpSocket readiness and liveness probes on haproxy.bind's port %d", bindPort)
		}
	}

	// Services select pods and reach declared ports.
	for name, s := range ks.services {
		var target *kWorkload
		for _, w := range ks.workloads {
			if matches(s.Spec.Selector, w.Spec.Template.Metadata.Labels) {
				target = &w
			}
		}
		if target == nil {
			t.Errorf("Service %s selects no pod", name)
			continue
		}
		tp := target.Spec.Template.Spec
		for _, p := range s.Spec.Ports {
			found := false
			for _, c := range tp.Containers {
				for _, cp := range c.Ports {
					found = found || cp.Name == p.TargetPort.Value || strconv.Itoa(cp.ContainerPort) == p.TargetPort.Value
				}
			}
			for _, c := range tp.InitContainers {
				for _, cp := range c.Ports {
					// Named ports of init containers are not resolved by every
					// Kubernetes version: numbers only.
					found = found || strconv.Itoa(cp.ContainerPort) == p.TargetPort.Value
				}
			}
			if !found {
				t.Errorf("Service %s port %s: targetPort %s is no container port of %s", name, p.Name, p.TargetPort.Value, target.Metadata.Name)
			}
		}
	}
	if s, ok := ks.services["mqtt"]; !ok || s.Spec.Ports[0].Port != bindPort {
		t.Errorf("want a Service mqtt on port %d", bindPort)
	}
	if s, ok := ks.services["stickyd-api"]; !ok || s.Spec.Ports[0].Port != apiPort {
		t.Errorf("want a Service stickyd-api on port %d", apiPort)
	}
	// redis_url names the Redis Service.
	if !strings.HasPrefix(cfg.RedisURL, "redis://") {
		t.Fatalf("redis_url %q", cfg.RedisURL)
	}
	h, p := hostPort(t, strings.Split(strings.TrimPrefix(cfg.RedisURL, "redis://"), "/")[0])
	if s, ok := ks.services[h]; !ok || s.Spec.Ports[0].Port != p {
		t.Errorf("redis_url %s: no Service %s on port %d", cfg.RedisURL, h, p)
	}
	for _, kind := range []string{"Namespace", "Deployment", "StatefulSet", "Service", "Secret", "PodDisruptionBudget", "NetworkPolicy"} {
		if len(ks.kinds[kind]) == 0 {
			t.Errorf("no %s", kind)
		}
	}

	checkKubeTLS(t, &cfg, vols, secretKeys, gen, hp, ks.services["mqtt"])
	// The initContainer runs the generator without the token.
	genCfg := loadConfig(t, cfgFile, nil)
	haproxyCheck(t, &genCfg)
}

// checkKubeTLS: the TLS listener's certificate and key come from one
// Secret's keys (see secret.example.yaml), mounted where the generator
// (which reads them) and HAProxy look; the port is the container's and the
// Service's.
func checkKubeTLS(t *testing.T, cfg *config.Config, vols map[string]kVolume, secretKeys map[string][]string, gen, hp *kContainer, svc kService) {
	t.Helper()
	crt := cfg.HAProxy.TLS.Crt
	if crt == "" || cfg.Backends[0].TLSBind == "" {
		t.Error("no TLS listener (haproxy.tls) in the Kubernetes example")
		return
	}
	for _, c := range []*kContainer{gen, hp} {
		vol, mp := c.mountOf(crt)
		v, ok := vols[vol]
		if !ok || v.Secret == nil {
			t.Errorf("%s: haproxy.tls.crt %s is not on a mounted Secret", c.Name, crt)
			continue
		}
		paths := map[string]string{}
		for _, it := range v.Secret.Items {
			if !slices.Contains(secretKeys[v.Secret.SecretName], it.Key) {
				t.Errorf("Secret %s has no key %s (see secret.example.yaml)", v.Secret.SecretName, it.Key)
			}
			paths[path.Join(mp, it.Path)] = it.Key
		}
		if paths[crt] == "" || paths[crt+".key"] == "" {
			t.Errorf("%s: want %s and %s (the key, where HAProxy looks for it) from Secret %s, got %v", c.Name, crt, crt+".key", v.Secret.SecretName, paths)
		}
	}
	_, tlsPort := hostPort(t, cfg.Backends[0].TLSBind)
	found := false
	for _, p := range svc.Spec.Ports {
		found = found || (p.Port == tlsPort && hp.port(t, p.TargetPort) == tlsPort)
	}
	if !found {
		t.Errorf("Service mqtt has no port %d to the haproxy container's TLS listener", tlsPort)
	}
}

// TestKustomizeBuild renders the kustomization as `kubectl apply -k` would
// (offline; kubectl is optional here).
func TestKustomizeBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs kubectl")
	}
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not installed: kustomization not rendered")
	}
	out, err := exec.Command(kubectl, "kustomize", kubeDir).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v\n%s", err, out)
	}
	dec := yaml.NewDecoder(bytes.NewReader(out))
	var cmName, deployCM string
	cfgData, err := os.ReadFile(filepath.Join(kubeDir, "stickyd.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for {
		var o struct {
			Kind     string            `yaml:"kind"`
			Metadata kMeta             `yaml:"metadata"`
			Data     map[string]string `yaml:"data"`
			Spec     struct {
				Template struct {
					Spec struct {
						Volumes        []kVolume    `yaml:"volumes"`
						InitContainers []kContainer `yaml:"initContainers"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if o.Kind != "Namespace" && o.Metadata.Namespace != "stickyd" {
			t.Errorf("%s/%s rendered in namespace %q", o.Kind, o.Metadata.Name, o.Metadata.Namespace)
		}
		switch {
		case o.Kind == "ConfigMap" && strings.HasPrefix(o.Metadata.Name, "stickyd-config-"):
			cmName = o.Metadata.Name
			if o.Data["stickyd.yaml"] != string(cfgData) {
				t.Errorf("ConfigMap %s: stickyd.yaml differs from %s/stickyd.yaml", cmName, kubeDir)
			}
		case o.Kind == "Deployment":
			for _, v := range o.Spec.Template.Spec.Volumes {
				if v.ConfigMap != nil {
					deployCM = v.ConfigMap.Name
				}
			}
		case o.Kind == "Secret":
			t.Errorf("the kustomization renders Secret %s: an apply would overwrite the real token", o.Metadata.Name)
		}
	}
	if cmName == "" || deployCM != cmName {
		t.Errorf("rendered ConfigMap %q, Deployment mounts %q: want the hashed name in both", cmName, deployCM)
	}
}
