// Command stickyd keeps MQTT clients on the broker node that holds their
// session, as an HAProxy SPOE agent backed by a shared sticky map.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/stickyd/stickyd/ctl"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

const usage = `stickyd: sticky sessions for MQTT behind HAProxy

Usage:
  stickyd serve          --config FILE    run the SPOE agent and the admin API
  stickyd haproxy-config --config FILE --out DIR [--log-connections]
                         [--haproxy-version X.Y]
                                          write DIR/haproxy.cfg and its SPOE file
                                          for that HAProxy (default: haproxy -vv
                                          of the haproxy on PATH, else 2.6)
  stickyd check-config   --config FILE    validate a configuration file
  stickyd import --config FILE --from-haproxy SOCKET --table TABLE [--backend NAME] [--dry-run]
                                          adopt a running HAProxy stick table's bindings
  stickyd ctl COMMAND ...                 administer bindings and servers over the
                                          admin API (stickyd ctl help)
  stickyd version                         print the version

Every configuration scalar can be overridden by a STICKYD_* environment
variable named after its path (STICKYD_REDIS_URL, STICKYD_HAPROXY_BIND, ...).
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// run dispatches a command and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("stickyd "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "stickyd.yaml", "configuration file")
	switch cmd {
	case "serve":
		if fs.Parse(args) != nil {
			return 2
		}
		return serve(*configPath, stderr)
	case "haproxy-config":
		out := fs.String("out", "", "directory to write haproxy.cfg and the SPOE file into")
		logConns := fs.Bool("log-connections", false, "log one line per connection (client key, server, SPOE error)")
		hv := fs.String("haproxy-version", "", "HAProxy line to write for, 2.4 to 3.4 (default: from `haproxy -vv`, else 2.6)")
		if fs.Parse(args) != nil {
			return 2
		}
		if *out == "" {
			fmt.Fprintln(stderr, "stickyd haproxy-config: --out DIR is required")
			return 2
		}
		return haproxyConfig(*configPath, *out, *hv, *logConns, stdout, stderr)
	case "check-config":
		if fs.Parse(args) != nil {
			return 2
		}
		return checkConfig(*configPath, stdout, stderr)
	case "import": // its own flags
		return importCmd(args, stdout, stderr)
	case "ctl": // its own flags (not --config) and exit codes
		return ctl.Run(args, stdout, stderr, os.Getenv)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "stickyd", version)
		return 0
	case "help", "--help", "-help", "-h":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "stickyd: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
}
