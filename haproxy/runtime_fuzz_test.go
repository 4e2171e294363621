package haproxy

import (
	"strconv"
	"strings"
	"testing"
)

// FuzzParseServersState feeds the Runtime API answer parser arbitrary
// text: it must not panic, and every state it returns must come from a
// line of the asked backend that says so.
func FuzzParseServersState(f *testing.F) {
	f.Add(serversState)
	f.Add("Can't find backend.\n")
	f.Add("1\n3 mqtt 1 n1 a 2 8\n3 other 1 n1 a 0 32\n")
	f.Add("1\n3 mqtt 1 n1 a -1 999999999999999999999\n")
	f.Add("1\n" + strings.Repeat("x", 70000) + "\n")
	f.Add("\n1\r\n3\tmqtt\t1\tn1\ta\t2\t0\n")
	f.Fuzz(func(t *testing.T, out string) {
		states, err := parseServersState(out, "mqtt")
		if err != nil {
			return
		}
		for name, st := range states {
			if !lineSays(out, name, st) {
				t.Fatalf("%q: %+v is said by no line of backend mqtt", name, st)
			}
		}
	})
}

// lineSays reports whether a line of backend mqtt gives server name the
// state st (the last such line wins, as in the parser).
func lineSays(out, name string, st ServerAdmin) bool {
	found := false
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 7 || f[1] != "mqtt" || f[3] != name {
			continue
		}
		op, err1 := strconv.Atoi(f[5])
		adm, err2 := strconv.Atoi(f[6])
		if err1 != nil || err2 != nil {
			continue
		}
		found = st == ServerAdmin{Drain: adm&admDrain != 0, Maint: adm&admMaint != 0, Up: op == 2}
	}
	return found
}
