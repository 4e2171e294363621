package ctl

import (
	"encoding/base64"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode/utf8"
)

// table prints aligned columns.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	t.row(header...)
	return t
}

// row adds a line; cells must already be printable (see printable), so
// no tab or newline can shift the columns.
func (t *table) row(cells ...string) {
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// printable returns s as is when it is safe and unambiguous on a terminal:
// valid UTF-8, printable runes only (no control bytes, escape sequences,
// tabs or bidi overrides), no leading or trailing space, not starting with
// a double quote. Anything else is Go-quoted ("\x00bin", "a\tb").
func printable(s string) string {
	if s == "" {
		return `""`
	}
	if !utf8.ValidString(s) || s[0] == '"' || s[0] == ' ' || s[len(s)-1] == ' ' {
		return strconv.Quote(s)
	}
	for _, r := range s {
		if !strconv.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// clientID returns a binding's exact id bytes (client_id has invalid UTF-8
// replaced), made printable.
func clientID(b bindingJSON) string {
	if raw, err := base64.StdEncoding.DecodeString(b.ClientIDB64); err == nil && b.ClientIDB64 != "" {
		return printable(string(raw))
	}
	return printable(b.ClientID)
}

func bindingRow(b bindingJSON) []string {
	pinned := "no"
	if b.Pinned {
		pinned = "yes"
	}
	connected := "no"
	if b.Connected {
		connected = "yes"
	}
	return []string{clientID(b), printable(b.Server), formatTTL(b.TTLSeconds), pinned, connected}
}

func serverRow(s serverJSON) []string {
	state := "down"
	switch {
	case s.Up && !s.Reported:
		state = "up (not yet reported)"
	case s.Up:
		state = "up"
	}
	var drain []string
	if s.Draining {
		drain = append(drain, "draining")
	}
	if s.HAProxyDrain {
		drain = append(drain, "haproxy-drain")
	}
	if len(drain) == 0 {
		drain = []string{"-"}
	}
	count := "?" // the store could not count
	if s.Bindings != nil {
		count = strconv.Itoa(*s.Bindings)
	}
	connected := "?" // unknown to the store
	if s.Connected != nil {
		connected = strconv.Itoa(*s.Connected)
	}
	return []string{printable(s.Name), printable(s.Address), strconv.Itoa(s.Weight), state, strings.Join(drain, ","), count, connected}
}

// formatTTL writes seconds compactly: "never" for 0, else "1d2h", "9m59s".
func formatTTL(sec int64) string {
	if sec <= 0 {
		return "never"
	}
	units := []struct {
		n    int64
		name string
	}{{86400, "d"}, {3600, "h"}, {60, "m"}, {1, "s"}}
	var b strings.Builder
	for _, u := range units {
		if q := sec / u.n; q > 0 {
			fmt.Fprintf(&b, "%d%s", q, u.name)
			sec -= q * u.n
		}
	}
	return b.String()
}

// shellQuote quotes s for a POSIX shell when it needs it, for the hints
// the commands print.
func shellQuote(s string) string {
	if printable(s) != s {
		return printable(s) // never raw control bytes on a terminal
	}
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.=:/,+@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
