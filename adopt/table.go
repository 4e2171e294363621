// Package adopt takes over the bindings of a running HAProxy stick table
// (the seed's `stick on ... mqtt_field_value(connect,client_identifier)`
// setup), so switching to stickyd moves no client.
package adopt

import (
	"bufio"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Entry is one line of `show table`.
type Entry struct {
	Key       string // unescaped key bytes
	ServerID  int    // server_id, 0 when absent
	ServerKey string // server_key (the server's name with srvkey name), "" when absent
	// Exp is the remaining lifetime; HasExp is false for a table without
	// expire.
	Exp    time.Duration
	HasExp bool
}

// Table is a parsed `show table TABLE` answer.
type Table struct {
	Name    string
	Type    string
	Entries []Entry
}

// ErrNoSuchTable is returned when HAProxy does not know the table.
var ErrNoSuchTable = errors.New("no such table")

// ParseShowTable reads HAProxy's `show table TABLE` answer: a header
// "# table: NAME, type: TYPE, size:N, used:N" and one line per entry,
// "0x...: key=K use=N exp=MS server_id=N server_key=NAME ...".
func ParseShowTable(out string) (Table, error) {
	var t Table
	sc := bufio.NewScanner(strings.NewReader(out))
	// A key is at most a table's len, escaped at most 4 bytes a byte.
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	header := false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
			continue
		case strings.HasPrefix(line, "# table:"):
			header = true
			for _, f := range strings.Split(strings.TrimPrefix(line, "#"), ",") {
				k, v, _ := strings.Cut(f, ":")
				switch strings.TrimSpace(k) {
				case "table":
					t.Name = strings.TrimSpace(v)
				case "type":
					t.Type = strings.TrimSpace(v)
				}
			}
			continue
		case strings.HasPrefix(line, "#"):
			continue
		case !header:
			if strings.Contains(line, "Unknown table") || strings.Contains(line, "No such table") {
				return t, fmt.Errorf("show table: %s: %w", line, ErrNoSuchTable)
			}
			return t, fmt.Errorf("show table: unexpected answer %q", truncate(line, 200))
		}
		e, err := parseEntry(line)
		if err != nil {
			return t, err
		}
		t.Entries = append(t.Entries, e)
	}
	if err := sc.Err(); err != nil {
		return t, fmt.Errorf("show table: %w", err)
	}
	if !header {
		return t, errors.New("show table: empty answer")
	}
	return t, nil
}

func parseEntry(line string) (Entry, error) {
	var e Entry
	_, rest, ok := strings.Cut(line, ": ")
	if !ok {
		return e, fmt.Errorf("show table: bad entry line %q", truncate(line, 200))
	}
	haveKey := false
	for _, f := range splitFields(rest) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		var err error
		switch k {
		case "key":
			e.Key, err = unescapeKey(v)
			haveKey = true
		case "exp":
			var ms int64
			ms, err = strconv.ParseInt(v, 10, 64)
			e.Exp, e.HasExp = time.Duration(ms)*time.Millisecond, true
		case "server_id":
			e.ServerID, err = strconv.Atoi(v)
		case "server_key", "server_name":
			e.ServerKey, err = unescapeKey(v)
		}
		if err != nil {
			return e, fmt.Errorf("show table: bad %s in %q: %w", k, truncate(line, 200), err)
		}
	}
	if !haveKey {
		return e, fmt.Errorf("show table: entry without key: %q", truncate(line, 200))
	}
	return e, nil
}

// splitFields splits on spaces that are not escaped (HAProxy writes a
// space inside a key as "\ ").
func splitFields(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case ' ':
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// unescapeKey reverses HAProxy's dump_text: "\ ", "\=", "\\", "\t", "\n",
// "\r", "\e" and "\xHH".
func unescapeKey(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		if i+1 >= len(s) {
			return "", errors.New("escape at the end")
		}
		i++
		switch s[i] {
		case 't':
			b.WriteByte('\t')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 'e':
			b.WriteByte(0x1b)
		case 'x':
			if i+2 >= len(s) {
				return "", errors.New(`short \x escape`)
			}
			n, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
			if err != nil {
				return "", fmt.Errorf(`bad \x escape %q`, s[i+1:i+3])
			}
			b.WriteByte(byte(n))
			i += 2
		default:
			b.WriteByte(s[i]) // "\ ", "\=", "\\"
		}
	}
	return b.String(), nil
}

// ServerIDs reads `show servers state BACKEND` into server id -> name.
func ServerIDs(out, backend string) (map[int]string, error) {
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	if !sc.Scan() || strings.TrimSpace(sc.Text()) != "1" {
		return nil, fmt.Errorf("show servers state %s: unexpected answer %q", backend, truncate(strings.TrimSpace(out), 200))
	}
	ids := map[int]string{}
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || strings.HasPrefix(f[0], "#") || f[1] != backend {
			continue
		}
		id, err := strconv.Atoi(f[2])
		if err != nil {
			return nil, fmt.Errorf("show servers state %s: bad server id in %q", backend, sc.Text())
		}
		ids[id] = f[3]
	}
	return ids, sc.Err()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
