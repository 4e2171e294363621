package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/stickyd/stickyd/adopt"
	"github.com/stickyd/stickyd/config"
	"github.com/stickyd/stickyd/haproxy"
	"github.com/stickyd/stickyd/store/redis"
)

const importUsage = `Usage: stickyd import --config FILE --from-haproxy SOCKET --table TABLE
                      [--backend NAME] [--haproxy-backend NAME] [--key-len N]
                      [--api URL] [--dry-run]

Reads "show table TABLE" from a running HAProxy's Runtime API (a unix socket
path or ipv4@host:port, level admin or operator) and claims each binding in
stickyd with its remaining expiry. A binding stickyd already has is never
overwritten. On Redis it writes to the store directly; on the memory store
(which lives inside the agent) it posts to the running agent's API
(POST /v1/backends/{backend}/import?mode=claim) at api_listen or --api.
`

// importCmd runs `stickyd import`.
func importCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("stickyd import", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, importUsage); fs.PrintDefaults() }
	configPath := fs.String("config", "stickyd.yaml", "configuration file")
	socket := fs.String("from-haproxy", "", "HAProxy Runtime API socket (path, unix@path or ipv4@host:port)")
	table := fs.String("table", "", "stick table to read (the HAProxy backend that declares it)")
	backend := fs.String("backend", "", "stickyd backend to import into (default: the only one)")
	hBackend := fs.String("haproxy-backend", "", "HAProxy backend whose server ids the table holds (default: --table)")
	keyLen := fs.Int("key-len", 32, "the table's len: keys this long may be truncated and are skipped (0: no check)")
	apiURL := fs.String("api", "", "stickyd API for the memory store (default: http://api_listen)")
	dryRun := fs.Bool("dry-run", false, "print what would be imported, write nothing")
	if fs.Parse(args) != nil {
		return 2
	}
	if *socket == "" || *table == "" || fs.NArg() > 0 {
		fmt.Fprint(stderr, "stickyd import: --from-haproxy and --table are required\n\n"+importUsage)
		return 2
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	bc, err := importBackend(&cfg, *backend)
	if err != nil {
		fmt.Fprintln(stderr, "stickyd import:", err)
		return 2
	}
	if *hBackend == "" {
		*hBackend = *table
	}
	if err := runImport(&cfg, bc, importArgs{*socket, *table, *hBackend, *keyLen, *apiURL, *dryRun}, stdout); err != nil {
		fmt.Fprintln(stderr, "stickyd import:", err)
		return 1
	}
	return 0
}

type importArgs struct {
	socket, table, hBackend string
	keyLen                  int
	apiURL                  string
	dryRun                  bool
}

func importBackend(cfg *config.Config, name string) (*config.Backend, error) {
	if name == "" {
		if len(cfg.Backends) != 1 {
			return nil, fmt.Errorf("the configuration has %d backends: say which with --backend", len(cfg.Backends))
		}
		return &cfg.Backends[0], nil
	}
	bc, ok := cfg.Backend(name)
	if !ok {
		return nil, fmt.Errorf("unknown backend %q", name)
	}
	return bc, nil
}

func runImport(cfg *config.Config, bc *config.Backend, a importArgs, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	rt, err := haproxy.NewRuntimeAPI(a.socket, 30*time.Second)
	if err != nil {
		return err
	}
	t, ids, err := adopt.Read(ctx, rt, a.table, a.hBackend)
	if err != nil {
		return err
	}
	opts := adopt.Options{Backend: bc.Name, KeyLen: a.keyLen, ServerIDs: ids, DefaultTTL: cfg.TTL.D()}
	for _, s := range bc.Servers {
		opts.Servers = append(opts.Servers, s.Name)
	}
	items, skips := adopt.Plan(t, opts)
	if a.dryRun {
		return adopt.Report(stdout, items, skips, adopt.Result{}, true)
	}
	var sink adopt.Sink
	if cfg.RedisURL != "" {
		st, err := redis.New(ctx, redis.Options{URL: cfg.RedisURL, OpTimeout: 5 * time.Second})
		if err != nil {
			return fmt.Errorf("open store: %w", err)
		}
		defer st.Close()
		sink = adopt.StoreSink{Store: st}
	} else {
		base := a.apiURL
		if base == "" {
			if cfg.APIListen == "" {
				return fmt.Errorf("the memory store lives in the running agent: enable api_listen or pass --api URL")
			}
			base = "http://" + cfg.APIListen
		}
		sink = adopt.APISink{Base: base, Token: cfg.APIToken, Client: &http.Client{Timeout: 5 * time.Minute}}
	}
	r, err := sink.Claim(ctx, bc.Name, items)
	if rerr := adopt.Report(stdout, items, skips, r, false); rerr != nil && err == nil {
		err = rerr
	}
	return err
}
