package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"text/template"
	"time"
)

// A target is one configuration under test: an HAProxy in front of its own
// pair of fake brokers, with a stickyd agent for the stickyd kinds.
type target struct {
	kind    kind
	front   string // HAProxy's MQTT frontend
	led     *ledger
	brokers []*broker
	haproxy *proc
	agent   *proc // stickyd, or nil
	api     string
	spoe    string // the agent's SPOE listener
}

type kind int

const (
	kindNative kind = iota
	kindMemory
	kindRedis
	kindRoundRobin
	// The same two with haproxy.local_fresh 0: every connect asks the
	// agent, so the cost of the SPOE path stays visible.
	kindMemoryNoFast
	kindRedisNoFast
)

var kinds = []kind{kindNative, kindMemory, kindRedis, kindRoundRobin, kindMemoryNoFast, kindRedisNoFast}

func (k kind) String() string {
	return [...]string{"native stick table", "stickyd + memory", "stickyd + Redis", "round robin",
		"stickyd + memory, no fast path", "stickyd + Redis, no fast path"}[k]
}

// slug names the target's files.
func (k kind) slug() string {
	return [...]string{"native", "memory", "redis", "roundrobin", "memory-nofast", "redis-nofast"}[k]
}

// redis reports whether the target's agent runs on Redis.
func (k kind) redis() bool { return k == kindRedis || k == kindRedisNoFast }

// localFresh is the target's haproxy.local_fresh.
func (k kind) localFresh() string {
	if k == kindMemoryNoFast || k == kindRedisNoFast {
		return "0s"
	}
	return "10s"
}

func parseKinds(list string) ([]kind, error) {
	var out []kind
	for _, name := range strings.Split(list, ",") {
		i := slices.IndexFunc(kinds, func(k kind) bool { return k.slug() == strings.TrimSpace(name) })
		if i < 0 {
			return nil, fmt.Errorf("unknown configuration %q (want native, memory, redis, roundrobin, memory-nofast, redis-nofast)", name)
		}
		if !slices.Contains(out, kinds[i]) {
			out = append(out, kinds[i])
		}
	}
	return out, nil
}

func (k kind) stickyd() bool {
	return k == kindMemory || k == kindRedis || k == kindMemoryNoFast || k == kindRedisNoFast
}

// backendName is the HAProxy backend (and stickyd backend) every target uses.
const backendName = "mqtt"

// plainHAProxy is the configuration of the two targets without stickyd.
// Like the generated one it waits for a complete CONNECT before choosing a
// server, so the difference between targets is only how they choose.
var plainHAProxy = template.Must(template.New("haproxy.cfg").Parse(`global
    log stdout format raw local0 notice

defaults
    mode tcp
    log global
    option dontlognull
    timeout connect 2s
    timeout client 300000ms
    timeout server 300000ms
    retries 2
    option redispatch

frontend fe_mqtt
    bind {{.Front}}
    tcp-request inspect-delay 5000ms
    tcp-request content reject unless { req.payload(0,0),mqtt_is_valid }
    default_backend mqtt

backend mqtt
    balance roundrobin
{{- if .Native}}
    # HAProxy's own stickiness: len 128, as 32 would merge long client ids.
    stick-table type string len 128 size 2m expire 30m
    stick on req.payload(0,0),mqtt_field_value(connect,client_identifier)
{{- end}}
{{- range .Brokers}}
    server {{.Name}} {{.Addr}} check inter 2000ms rise 2 fall 2 id {{.ID}}
{{- end}}
`))

// stickydConfig is the agent's configuration; haproxy.cfg is generated from
// it by `stickyd haproxy-config`, as an operator would.
var stickydConfig = template.Must(template.New("stickyd.yaml").Parse(`spoe_listen: {{.SPOE}}
api_listen: {{.API}}
redis_url: "{{.Redis}}"
ttl: 30m
{{- with .MaxBindings}}
max_bindings: {{.}}
{{- end}}
log:
  level: warn
backends:
  - name: ` + backendName + `
    servers:
{{- range .Brokers}}
      - {name: {{.Name}}, address: "{{.Addr}}", weight: 1}
{{- end}}
haproxy:
  bind: "{{.Front}}"
  local_fresh: {{.LocalFresh}}
`))

// brokerView is what the templates need of a broker.
type brokerView struct {
	Name, Addr string
	ID         int
}

// setup starts the target's brokers, agent and HAProxy, and returns once a
// CONNECT goes through (and, with stickyd, was decided by the agent).
func (b *bench) setup(ctx context.Context, k kind) (*target, error) {
	t := &target{kind: k, led: newLedger()}
	var err error
	if t.brokers, err = startBrokers(t.led); err != nil {
		return nil, err
	}
	b.brokers = append(b.brokers, t.brokers...)
	if t.front, err = freeAddr(); err != nil {
		return nil, err
	}
	dir := filepath.Join(b.dir, k.slug())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w", k, err)
	}
	var views []brokerView
	for i, br := range t.brokers {
		views = append(views, brokerView{br.name, br.addr(), i + 1})
	}
	data := map[string]any{"Front": t.front, "Brokers": views, "Native": k == kindNative}
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	if k.stickyd() {
		if err := b.startAgent(ctx, t, dir, data); err != nil {
			return nil, err
		}
	} else if err := writeTemplate(cfgPath, plainHAProxy, data); err != nil {
		return nil, err
	}
	if t.haproxy, err = b.start(dir, "haproxy", b.opts.haproxy, "-f", cfgPath, "-db"); err != nil {
		return nil, err
	}
	if err := waitTCP(ctx, t.haproxy, t.front, 15*time.Second); err != nil {
		return nil, err
	}
	if err := t.waitReady(ctx); err != nil {
		return nil, err
	}
	return t, nil
}

// startAgent writes the agent's configuration, generates HAProxy's from it
// and starts the agent.
func (b *bench) startAgent(ctx context.Context, t *target, dir string, data map[string]any) error {
	var err error
	if t.spoe, err = freeAddr(); err != nil {
		return err
	}
	if t.api, err = freeAddr(); err != nil {
		return err
	}
	data["SPOE"], data["API"], data["Redis"], data["LocalFresh"] = t.spoe, t.api, "", t.kind.localFresh()
	if t.kind.redis() {
		data["Redis"] = "redis://" + b.redisAddr + "/0"
	}
	yml := filepath.Join(dir, "stickyd.yaml")
	if err := writeTemplate(yml, stickydConfig, data); err != nil {
		return err
	}
	gen := exec.CommandContext(ctx, b.opts.stickyd, "haproxy-config", "--config", yml, "--out", dir)
	if out, err := gen.CombinedOutput(); err != nil {
		return fmt.Errorf("stickyd haproxy-config: %w\n%s", err, out)
	}
	// The agent starts before HAProxy: spop-check then finds it at once.
	if t.agent, err = b.start(dir, "stickyd", b.opts.stickyd, "serve", "--config", yml); err != nil {
		return err
	}
	return waitTCP(ctx, t.agent, t.spoe, 15*time.Second)
}

// waitReady connects until a CONNECT reaches a broker; with stickyd, until
// the agent (not HAProxy's fallback) decided it, which shows as a binding.
func (t *target) waitReady(ctx context.Context) error {
	c := newClient(t.front)
	hc := http.Client{Timeout: 2 * time.Second}
	var last error
	for i := 0; i < 100; i++ {
		id := fmt.Sprintf("probe-%s-%03d", t.kind.slug(), i)
		_, last = c.cycle(mqtt311, id)
		if last == nil && t.agent != nil {
			last = bindingExists(ctx, &hc, t.api, id)
		}
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s: not ready after 20s: %w", t.kind, last)
}

func bindingExists(ctx context.Context, hc *http.Client, api, id string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+api+"/v1/backends/"+backendName+"/bindings/"+id, nil)
	if err != nil {
		return fmt.Errorf("binding of %s: %w", id, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("binding of %s: %w", id, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("binding of %s: HTTP %d (the agent did not decide it)", id, resp.StatusCode)
	}
	return nil
}

func writeTemplate(path string, t *template.Template, data any) error {
	var sb strings.Builder
	if err := t.Execute(&sb, data); err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	return nil
}
