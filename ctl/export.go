package ctl

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// bulkTimeout bounds an export or import (the server's own bound is 5 min).
const bulkTimeout = 6 * time.Minute

// bindingsExport writes every binding of a backend as NDJSON.
func (c *cli) bindingsExport(args []string) error {
	const cmd = "bindings export"
	fs := c.flagSet(cmd)
	backend := backendFlag(fs)
	out := fs.String("out", "-", "file to write (- is stdout)")
	b, _, err := c.parseCommand(cmd, fs, backend, args, "")
	if err != nil {
		return err
	}
	res, err := c.stream(http.MethodGet, backendPath(b)+"/export", nil, nil)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	w := c.stdout
	if *out != "-" {
		f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	n, err := io.Copy(w, res.Body)
	if err != nil {
		return fmt.Errorf("export cut short after %d bytes: %w", n, err)
	}
	if f, ok := w.(*os.File); ok && w != c.stdout {
		if err := f.Close(); err != nil {
			return err
		}
		fmt.Fprintf(c.stderr, "Wrote %d bytes to %s.\n", n, *out)
	}
	return nil
}

// bindingsImport posts an NDJSON file (an export) to a backend.
func (c *cli) bindingsImport(args []string) error {
	const cmd = "bindings import"
	fs := c.flagSet(cmd)
	backend := backendFlag(fs)
	mode := fs.String("mode", "claim", "claim (never overwrite) or replace")
	pos, err := parseFlags(fs, args, true)
	if err != nil {
		return err
	}
	file, err := oneArg(cmd, pos, "file to import (- is stdin)")
	if err != nil {
		return err
	}
	if *mode != "claim" && *mode != "replace" {
		return usagef("%s: --mode must be claim or replace", cmd)
	}
	var body io.Reader = os.Stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		body = f
	}
	b, err := c.backend(*backend)
	if err != nil {
		return err
	}
	res, err := c.stream(http.MethodPost, backendPath(b)+"/import", url.Values{"mode": {*mode}}, body)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return err
	}
	if c.json {
		if err := c.writeJSON(data); err != nil {
			return err
		}
	}
	var ans struct {
		Imported int      `json:"imported"`
		Skipped  int      `json:"skipped"`
		Errors   []string `json:"errors"`
	}
	if err := decode(data, &ans); err != nil {
		return err
	}
	if !c.json {
		fmt.Fprintf(c.stdout, "Imported %d binding(s) into backend %s, skipped %d already bound.\n", ans.Imported, printable(b), ans.Skipped)
		for _, e := range ans.Errors {
			fmt.Fprintln(c.stdout, "error:", printable(e))
		}
	}
	if len(ans.Errors) > 0 {
		return fmt.Errorf("%d line(s) not imported", len(ans.Errors))
	}
	return nil
}

// stream sends one request with a streamed body and returns a 2xx answer
// unread; other answers become errors as in call.
func (c *cli) stream(method, path string, query url.Values, body io.Reader) (*http.Response, error) {
	if err := c.setup(); err != nil {
		return nil, err
	}
	target := c.base + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, shorten(target), err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-ndjson")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	res, err := (&http.Client{Timeout: bulkTimeout}).Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("cannot reach the stickyd API: %s %s: %v (set --api or %s)", method, shorten(target), err, EnvAPI)
	}
	if res.StatusCode/100 == 2 {
		return res, nil
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(data, &e) != nil || e.Error == "" {
		e.Error = fmt.Sprintf("%s %s answered %s: %s", method, shorten(target), res.Status, printable(shorten(strings.TrimSpace(string(data)))))
	}
	return nil, &apiError{status: res.StatusCode, msg: e.Error}
}
