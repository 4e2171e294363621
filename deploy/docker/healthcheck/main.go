// Command healthcheck exits 0 when an HTTP GET of its URL answers 200, 1
// otherwise. It is the container health check of the stickyd image, which
// has no shell and no HTTP client of its own:
//
//	healthcheck [URL]    (default http://127.0.0.1:8080/readyz)
//
// /readyz answers 503 while the store (Redis) is unreachable; /healthz only
// says the process serves.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// DefaultURL is stickyd's readiness endpoint at the default api_listen.
const DefaultURL = "http://127.0.0.1:8080/readyz"

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

func run(args []string, stderr io.Writer) int {
	url := DefaultURL
	switch len(args) {
	case 0:
	case 1:
		url = args[0]
	default:
		fmt.Fprintln(stderr, "usage: healthcheck [URL]")
		return 2
	}
	// No proxy from the environment: the URL is the container's own.
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Get(url)
	if err != nil {
		fmt.Fprintf(stderr, "healthcheck: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "healthcheck: %s: %s %s\n", url, resp.Status, body)
		return 1
	}
	return 0
}
