// Package ctl is `stickyd ctl`: a command-line client of the admin API
// (see api/openapi.yaml) for listing, pinning and evicting bindings and
// draining servers.
//
// It talks HTTP only, so it works against any stickyd reachable over the
// network, and prints either aligned tables meant for people (client ids
// with non-printable bytes are quoted, so a hostile id cannot drive the
// terminal) or, with --json, the API's JSON unchanged.
package ctl

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// DefaultAPI is the API address when neither --api nor STICKYD_API is set:
// `stickyd serve`'s default api_listen.
const DefaultAPI = "http://127.0.0.1:8080"

// Environment variables read by Run.
const (
	EnvAPI   = "STICKYD_API"
	EnvToken = "STICKYD_API_TOKEN"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// requestTimeout bounds one API request (the server gives up on store
// work after 10 s).
const requestTimeout = 30 * time.Second

const usage = `Usage: stickyd ctl [--api URL] [--token-file FILE] [--json] COMMAND [ARGS]

Bindings (which broker a client id goes to):
  bindings list   [--server S] [--prefix P] [--limit N] [--cursor C] [--all]
  bindings get    ID
  bindings pin    ID --server S [--ttl 10m|0] [--unpinned]
  bindings evict  ID
  bindings evict  --server S --yes        evict every binding of server S
  bindings export [--out FILE]            every binding as NDJSON (default stdout)
  bindings import FILE|- [--mode claim|replace]
                                          load an export; claim never overwrites

Servers:
  servers list
  servers drain   NAME                    no new clients on NAME
  servers undrain NAME
  servers evacuate NAME [--rate N] [--wait] [--status|--cancel]
                                          drain NAME and move its bindings away
  servers rebalance [--rate N] [--tolerance 0.05] [--wait] [--status|--cancel]
                                          even out bindings by weight (after adding a server)

Every command takes --backend B, which defaults to the only backend when
there is just one. Flags may come before or after the command; an ID that
starts with "-" goes after "--". IDs are bytes: they are percent-encoded on
the way, and tables show non-printable bytes quoted ("\x00bin").

Global flags:
  --api URL          the admin API (default $STICKYD_API, else ` + DefaultAPI + `)
  --token-file FILE  read the bearer token from FILE (default $STICKYD_API_TOKEN)
  --json             print the API's JSON instead of a table

Exit status: 0 ok, 1 error (the API's message is printed), 2 usage.
`

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// errHelp asks for the usage text on stdout and exit status 0.
var errHelp = errors.New("help requested")

// cli is one invocation.
type cli struct {
	stdout, stderr io.Writer
	env            func(string) string

	// Global flags, shared by every FlagSet.
	apiFlag   string
	tokenFile string
	json      bool

	base   string // API URL without a trailing slash
	token  string
	client *http.Client
}

// command is one leaf: "bindings list", "servers drain", ...
type command struct {
	run func(c *cli, args []string) error
}

var commands = map[string]map[string]command{
	"bindings": {
		"list":  {(*cli).bindingsList},
		"get":   {(*cli).bindingsGet},
		"pin":   {(*cli).bindingsPin},
		"evict": {(*cli).bindingsEvict},
		// export.go
		"export": {(*cli).bindingsExport},
		"import": {(*cli).bindingsImport},
	},
	"servers": {
		"list":    {(*cli).serversList},
		"drain":   {func(c *cli, args []string) error { return c.serversDrain(args, true) }},
		"undrain": {func(c *cli, args []string) error { return c.serversDrain(args, false) }},
		// rebalance.go
		"evacuate":  {(*cli).serversEvacuate},
		"rebalance": {(*cli).serversRebalance},
	},
}

// Run executes `stickyd ctl args...` and returns the exit status. env
// reads the environment (os.Getenv in production).
func Run(args []string, stdout, stderr io.Writer, env func(string) string) int {
	if env == nil {
		env = func(string) string { return "" }
	}
	c := &cli{stdout: stdout, stderr: stderr, env: env}
	err := c.dispatch(args)
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errHelp):
		fmt.Fprint(stdout, usage)
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "stickyd ctl: %s\nRun 'stickyd ctl help' for usage.\n", ue.msg)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "stickyd ctl: %s\n", err)
		return exitError
	}
}

func (c *cli) dispatch(args []string) error {
	fs := c.flagSet("stickyd ctl")
	rest, err := parseFlags(fs, args, false)
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		return usagef("missing command (bindings or servers)")
	}
	group := rest[0]
	if group == "help" {
		return errHelp
	}
	cmds, ok := commands[group]
	if !ok {
		return usagef("unknown command %q (want bindings or servers)", group)
	}
	if len(rest) < 2 {
		return usagef("%s: missing subcommand (%s)", group, subcommands(cmds))
	}
	cmd, ok := cmds[rest[1]]
	if !ok {
		if rest[1] == "help" || rest[1] == "-h" || rest[1] == "--help" {
			return errHelp
		}
		return usagef("%s: unknown subcommand %q (want %s)", group, rest[1], subcommands(cmds))
	}
	return cmd.run(c, rest[2:])
}

func subcommands(cmds map[string]command) string {
	// Fixed order, as in the usage text.
	var out []string
	for _, n := range []string{"list", "get", "pin", "evict", "export", "import", "drain", "undrain", "evacuate", "rebalance"} {
		if _, ok := cmds[n]; ok {
			out = append(out, n)
		}
	}
	return strings.Join(out, ", ")
}

// flagSet returns a FlagSet holding the global flags; callers add their
// own. It prints nothing: Run reports errors.
func (c *cli) flagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&c.apiFlag, "api", c.apiFlag, "admin API URL")
	fs.StringVar(&c.tokenFile, "token-file", c.tokenFile, "file holding the bearer token")
	fs.BoolVar(&c.json, "json", c.json, "print the API's JSON")
	return fs
}

// parseFlags parses args with fs. With interspersed, flags may follow
// positional arguments (until "--"); without, parsing stops at the first
// positional argument, which is returned with everything after it.
func parseFlags(fs *flag.FlagSet, args []string, interspersed bool) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, errHelp
			}
			return nil, usagef("%s: %v", fs.Name(), err)
		}
		rest := fs.Args()
		if !interspersed || len(rest) == 0 {
			return append(pos, rest...), nil
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil // everything after "--" is positional
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// setup resolves the API URL and token once the flags are known.
func (c *cli) setup() error {
	if c.client != nil {
		return nil
	}
	raw := c.apiFlag
	if raw == "" {
		raw = c.env(EnvAPI)
	}
	if raw == "" {
		raw = DefaultAPI
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return usagef("--api %q: want an http:// or https:// URL such as %s", raw, DefaultAPI)
	}
	c.base = strings.TrimRight(raw, "/")

	if c.tokenFile != "" {
		data, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return fmt.Errorf("token file: %w", err)
		}
		c.token = strings.TrimSpace(string(data))
		if c.token == "" {
			return fmt.Errorf("token file %s is empty", c.tokenFile)
		}
	} else {
		c.token = strings.TrimSpace(c.env(EnvToken))
	}
	if strings.ContainsAny(c.token, "\r\n\x00") {
		return errors.New("the API token holds a line break or NUL byte; check STICKYD_API_TOKEN or --token-file")
	}
	c.client = &http.Client{Timeout: requestTimeout}
	return nil
}
