package tablekey

import (
	"strings"
	"testing"
)

func TestOf(t *testing.T) {
	cases := []struct{ in, want string }{
		// SHA-1 test vectors (FIPS 180), first 16 bytes.
		{"abc", "A9993E364706816ABA3E25717850C26C"},
		{"", "DA39A3EE5E6B4B0D3255BFEF95601890"},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			if got := Of([]byte(c.in)).String(); got != c.want {
				t.Fatalf("Of(%q) = %s, want %s", c.in, got, c.want)
			}
		})
	}
	long := strings.Repeat("x", 65535)
	if a, b := Of([]byte(long)), Of([]byte(long[:65534]+"y")); a == b {
		t.Fatalf("ids differing in their last byte share key %s", a)
	}
}

func TestParse(t *testing.T) {
	k := Of([]byte("dev-42"))
	cases := []struct {
		name, in string
		ok       bool
	}{
		{"upper", k.String(), true},
		{"lower", strings.ToLower(k.String()), true},
		{"short", k.String()[:30], false},
		{"long", k.String() + "00", false},
		{"not hex", "Z" + k.String()[1:], false},
		{"empty", "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := Parse(c.in)
			if ok != c.ok || ok && got != k {
				t.Fatalf("Parse(%q) = %s, %v; want %v", c.in, got, ok, c.ok)
			}
		})
	}
}
