package ctl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// apiError is a non-2xx answer of the API.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string {
	if e.status == http.StatusUnauthorized {
		return fmt.Sprintf("%s (HTTP 401): set %s (or pass --token-file FILE) to stickyd's api_token", e.msg, EnvToken)
	}
	return fmt.Sprintf("%s (HTTP %d)", e.msg, e.status)
}

// maxResponse bounds what one answer may hold: a page of 1000 ids of
// 64 KiB, twice over (client_id and client_id_b64), fits.
const maxResponse = 512 << 20

// call sends one request to the API and returns the body of a 2xx
// answer. path is already escaped; query and body may be nil.
func (c *cli) call(method, path string, query url.Values, body any) ([]byte, error) {
	if err := c.setup(); err != nil {
		return nil, err
	}
	target := c.base + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, target, rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, shorten(target), err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	res, err := c.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its message repeats the (possibly huge) URL
		}
		return nil, fmt.Errorf("cannot reach the stickyd API: %s %s: %v (set --api or %s)", method, shorten(target), err, EnvAPI)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the answer: %w", method, shorten(target), err)
	}
	if res.StatusCode/100 == 2 {
		return data, nil
	}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(data, &e) != nil || e.Error == "" {
		// Not the API's JSON: a proxy or something else on that port.
		e.Error = fmt.Sprintf("%s %s answered %s", method, shorten(target), res.Status)
		if s := strings.TrimSpace(string(data)); s != "" {
			e.Error += ": " + printable(shorten(s))
		}
	}
	return nil, &apiError{status: res.StatusCode, msg: e.Error}
}

// getJSON GETs path and decodes the answer into v; it returns the raw
// answer too, for --json.
func (c *cli) getJSON(path string, query url.Values, v any) ([]byte, error) {
	data, err := c.call(http.MethodGet, path, query, nil)
	if err != nil {
		return nil, err
	}
	return data, decode(data, v)
}

func decode(data []byte, v any) error {
	if v == nil {
		return nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("unexpected answer from the API (%v): %s", err, printable(shorten(string(data))))
	}
	return nil
}

// backendPath is /v1/backends/{backend}, escaped.
func backendPath(backend string) string {
	return "/v1/backends/" + url.PathEscape(backend)
}

// shorten keeps messages readable when a URL carries a 64 KiB client id.
func shorten(s string) string {
	const max = 200
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
