package ctl

import (
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// jobJSON holds the fields evacuations and rebalances share.
type jobJSON struct {
	Backend string         `json:"backend"`
	Server  string         `json:"server"`
	Rate    int            `json:"rate"`
	State   string         `json:"state"`
	Planned *int           `json:"planned"`
	Moved   int            `json:"moved"`
	Skipped int            `json:"skipped"`
	Failed  int            `json:"failed"`
	Error   string         `json:"error"`
	Before  map[string]int `json:"before"`
}

// job runs one background-job command: start (POST), --status (GET) or
// --cancel (DELETE), and with --wait polls until it ends.
func (c *cli) job(path string, start url.Values, status, cancel, wait bool, what string) error {
	method := http.MethodPost
	switch {
	case status && cancel:
		return usagef("give --status or --cancel, not both")
	case status:
		method, start = http.MethodGet, nil
	case cancel:
		method, start = http.MethodDelete, nil
	}
	data, err := c.call(method, path, start, nil)
	if err != nil {
		return err
	}
	var j jobJSON
	if err := decode(data, &j); err != nil {
		return err
	}
	for wait && j.State == "running" {
		if !c.json {
			c.printJob(j, what)
		}
		time.Sleep(time.Second)
		if data, err = c.call(http.MethodGet, path, nil, nil); err != nil {
			return err
		}
		if err := decode(data, &j); err != nil {
			return err
		}
	}
	if c.json {
		return c.writeJSON(data)
	}
	c.printJob(j, what)
	if j.State == "failed" {
		return fmt.Errorf("%s failed: %s", what, j.Error)
	}
	return nil
}

func (c *cli) printJob(j jobJSON, what string) {
	planned := ""
	if j.Planned != nil {
		planned = fmt.Sprintf(" of %d planned", *j.Planned)
	}
	line := fmt.Sprintf("%s of %s: %s, moved %d%s, skipped %d, failed %d (rate %d/s)", what, printable(j.Backend+"/"+j.Server), j.State, j.Moved, planned, j.Skipped, j.Failed, j.Rate)
	line = strings.Replace(line, "/:", ":", 1) // a rebalance names no server
	if len(j.Before) > 0 {
		names := make([]string, 0, len(j.Before))
		for n := range j.Before {
			names = append(names, n)
		}
		sort.Strings(names)
		parts := make([]string, len(names))
		for i, n := range names {
			parts[i] = fmt.Sprintf("%s=%d", printable(n), j.Before[n])
		}
		line += "; before: " + strings.Join(parts, " ")
	}
	if j.Error != "" {
		line += "; error: " + printable(j.Error)
	}
	fmt.Fprintln(c.stdout, line)
}

// serversEvacuate: POST/GET/DELETE .../servers/NAME/evacuate.
func (c *cli) serversEvacuate(args []string) error {
	const cmd = "servers evacuate"
	fs := c.flagSet(cmd)
	backend := backendFlag(fs)
	rate := fs.Int("rate", 500, "bindings moved per second")
	status := fs.Bool("status", false, "show the last evacuation of NAME instead of starting one")
	cancel := fs.Bool("cancel", false, "stop a running evacuation (NAME stays draining)")
	wait := fs.Bool("wait", false, "wait until it ends, printing progress every second")
	b, name, err := c.parseCommand(cmd, fs, backend, args, "server name")
	if err != nil {
		return err
	}
	return c.job(backendPath(b)+"/servers/"+url.PathEscape(name)+"/evacuate",
		url.Values{"rate": {strconv.Itoa(*rate)}}, *status, *cancel, *wait, "Evacuation")
}

// serversRebalance: POST/GET/DELETE .../rebalance.
func (c *cli) serversRebalance(args []string) error {
	const cmd = "servers rebalance"
	fs := c.flagSet(cmd)
	backend := backendFlag(fs)
	rate := fs.Int("rate", 500, "bindings moved per second")
	tol := fs.Float64("tolerance", 0.05, "bring every server within this share of its weight (0.05: ±5%)")
	status := fs.Bool("status", false, "show the last rebalance instead of starting one")
	cancel := fs.Bool("cancel", false, "stop a running rebalance")
	wait := fs.Bool("wait", false, "wait until it ends, printing progress every second")
	b, _, err := c.parseCommand(cmd, fs, backend, args, "")
	if err != nil {
		return err
	}
	return c.job(backendPath(b)+"/rebalance",
		url.Values{"rate": {strconv.Itoa(*rate)}, "tolerance": {strconv.FormatFloat(*tol, 'f', -1, 64)}},
		*status, *cancel, *wait, "Rebalance")
}
