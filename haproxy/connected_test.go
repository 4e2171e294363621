package haproxy

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stickyd/stickyd/internal/tablekey"
	"github.com/stickyd/stickyd/internal/testenv"
)

func TestConnectedRules(t *testing.T) {
	track := "tcp-request content track-sc2 var(sess.stickyd.hkey) table mqtt_connected if { var(sess.stickyd.hkey) -m found }"
	table := "backend mqtt_connected\n    # Connected clients (conn_cur > 0); an entry outlives its last\n    # connection by the expire only.\n    stick-table type string len 32 size 1000000 expire 10s store conn_cur"
	for _, c := range []struct {
		name, extra string
		want        bool
	}{
		{"with a stats socket", "haproxy:\n  stats_socket: /run/h.sock\n", true},
		{"without", "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := localCfg(t, c.extra)
			main, _, err := Generate(&cfg, "/x/s.conf", GenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range []string{track, table} {
				if strings.Contains(string(main), w) != c.want {
					t.Errorf("%q present: %v, want %v in:\n%s", w, !c.want, c.want, main)
				}
			}
		})
	}
}

func TestScanConnected(t *testing.T) {
	k1 := TableKey([]byte("a"))
	k2 := TableKey([]byte("b"))
	k3 := TableKey([]byte("c"))
	dump := "# table: mqtt_connected, type: string, size:1000000, used:3\n" +
		"0x55a7ae0fdda8: key=" + k1 + " use=1 exp=1079 conn_cur=1\n" +
		"0x55a7ae0fdda9: key=" + k2 + " use=2 exp=0 conn_cur=2\n" +
		"0x55a7ae0fddaa: key=short use=1 exp=0 conn_cur=1\n" +
		"0x55a7ae0fddab: key=" + k3 + " use=1 exp=0 conn_cur=1\n\n"
	var got [][]string
	err := scanConnected(bufio.NewReader(strings.NewReader(dump)), 2, func(keys []tablekey.Key) error {
		var b []string
		for _, k := range keys {
			b = append(b, strings.ToUpper(hex.EncodeToString(k[:])))
		}
		got = append(got, b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprint([][]string{{k1, k2}, {k3}}); fmt.Sprint(got) != want {
		t.Errorf("batches %v, want %v", got, want)
	}
	for _, bad := range []string{"Unknown table mqtt_connected\n", "", "No such table\n\n"} {
		err := scanConnected(bufio.NewReader(strings.NewReader(bad)), 2, func([]tablekey.Key) error { return nil })
		if err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func FuzzScanConnected(f *testing.F) {
	f.Add("# table: x, type: string, size:1, used:1\n0x1: key=" + TableKey([]byte("a")) + " use=1 conn_cur=1\n")
	f.Add("Unknown table\n")
	f.Fuzz(func(t *testing.T, s string) {
		n := 0
		_ = scanConnected(bufio.NewReaderSize(strings.NewReader(s), 16), 3, func(keys []tablekey.Key) error {
			if len(keys) == 0 || len(keys) > 3 {
				t.Fatalf("batch of %d", len(keys))
			}
			n += len(keys)
			return nil
		})
		if n > strings.Count(s, "key=") {
			t.Fatalf("%d keys from %d key= fields", n, strings.Count(s, "key="))
		}
	})
}

// Against a real HAProxy: connections tracked in the generated table are
// listed while open, and not once closed.
func TestConnectedKeysRealHAProxy(t *testing.T) {
	bin := testenv.RequireBinary(t, "haproxy")
	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")
	fe := testenv.FreeAddr(t)
	// The server: holds every connection until its client closes, as a
	// broker does.
	srv, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	go func() {
		for {
			c, err := srv.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	cfg := fmt.Sprintf(`global
    stats socket %s level admin
defaults
    mode tcp
    timeout connect 1s
    timeout client 30s
    timeout server 30s
frontend fe
    bind %s
    tcp-request inspect-delay 2s
    tcp-request content set-var(sess.stickyd.hkey) req.payload(0,3),sha1,bytes(0,16),hex if { req.len ge 3 }
    tcp-request content track-sc2 var(sess.stickyd.hkey) table mqtt%s if { var(sess.stickyd.hkey) -m found }
    tcp-request content accept if { req.len ge 3 }
    default_backend be
backend be
    server s1 %s
backend mqtt%s
    stick-table type string len 32 size 100 expire %s store conn_cur
`, sock, fe, ConnectedSuffix, srv.Addr(), ConnectedSuffix, connectedExpire)
	if err := os.WriteFile(filepath.Join(dir, "h.cfg"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-f", filepath.Join(dir, "h.cfg")).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	testenv.Start(t, bin, []string{"-db", "-f", filepath.Join(dir, "h.cfg")}, dir)
	rt, err := NewRuntimeAPI(sock, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	list := func() []string {
		var out []string
		err := rt.ConnectedKeys(context.Background(), "mqtt", 10, func(keys []tablekey.Key) error {
			for _, k := range keys {
				out = append(out, strings.ToUpper(hex.EncodeToString(k[:])))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		_, err := rt.Command(context.Background(), "show info")
		return err
	})
	c, err := net.Dial("tcp", fe)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	want := TableKey([]byte("abc"))
	testenv.Eventually(t, 5*time.Second, func() error {
		if got := list(); len(got) != 1 || got[0] != want {
			return fmt.Errorf("connected %v, want [%s]", got, want)
		}
		return nil
	})
	c.Close()
	testenv.Eventually(t, 5*time.Second, func() error {
		if got := list(); len(got) != 0 {
			return fmt.Errorf("connected %v after close, want none", got)
		}
		return nil
	})
	if err := rt.ConnectedKeys(context.Background(), "nosuch", 10, func([]tablekey.Key) error { return nil }); err == nil {
		t.Error("unknown table: no error")
	}
}
