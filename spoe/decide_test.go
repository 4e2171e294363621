package spoe

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/negasus/haproxy-spoe-go/frame"
	"github.com/negasus/haproxy-spoe-go/payload/kv"

	"github.com/stickyd/stickyd/agent"
	"github.com/stickyd/stickyd/internal/spop"
	"github.com/stickyd/stickyd/internal/spoptest"
)

// HAProxy sends session_expiry as mqtt_field_value(connect,17) renders it:
// decimal text typed BINARY, on every version (mqtt_uint2str, src/mqtt.c
// 2.6 to 3.3). "3600" and "7200" are four bytes long, as the MQTT wire's
// raw integer is, and were once read as one (926036016 s for "7200").
func TestSessionExpiryDecoding(t *testing.T) {
	s := NewServer(&fakeDecider{}, discard, Limits{})
	for _, tc := range []struct {
		name  string
		value any
		want  time.Duration
	}{
		{"absent (MQTT 3.1.1: variable not set)", nil, 0},
		{"binary 0", []byte("0"), 0},
		{"binary 60", []byte("60"), time.Minute},
		{"binary 3600", []byte("3600"), time.Hour},
		{"binary 7200", []byte("7200"), 2 * time.Hour},
		{"binary 86400", []byte("86400"), 24 * time.Hour},
		{"binary 4294967295 (never expires)", []byte("4294967295"), math.MaxUint32 * time.Second},
		{"string 7200", "7200", 2 * time.Hour},
		{"uint32", uint32(7200), 2 * time.Hour},
		{"int64", int64(3600), time.Hour},
		{"beyond uint32 is capped", []byte("99999999999"), math.MaxUint32 * time.Second},
		{"raw big-endian bytes are not a number", []byte{0, 0, 0x1c, 0x20}, 0},
		{"not decimal", []byte("72a0"), 0},
		{"signed", []byte("-1"), 0},
		{"empty", []byte(""), 0},
		{"20 digits", []byte("10000000000000000000"), 0},
		{"bool", true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var q agent.Query
			items := []kv.Item{{Name: "backend", Value: "mqtt"}, {Name: "client_id", Value: []byte("c")}, {Name: "session_expiry", Value: tc.value}}
			if err := s.fillQuery(&q, items); err != nil {
				t.Fatal(err)
			}
			if q.SessionExpiry != tc.want {
				t.Fatalf("session expiry %v (%d s), want %v", q.SessionExpiry, q.SessionExpiry/time.Second, tc.want)
			}
		})
	}
}

// up_<server> arguments reach the agent: a server HAProxy reports down
// gets no client, whichever the hash prefers.
func TestUpArgsSteerPlacement(t *testing.T) {
	_, addr := startServer(t, newAgent(t))
	c := dialHello(t, addr)
	for _, tc := range []struct {
		name string
		up   []kvp
		want string // "" for no answer
	}{
		{"n1 down", []kvp{{"up_n1", false}, {"up_n2", true}}, "n2"},
		{"n2 down", []kvp{{"up_n1", true}, {"up_n2", false}}, "n1"},
		{"both down", []kvp{{"up_n1", false}, {"up_n2", false}}, ""},
		// Unknown servers and non-boolean states are ignored.
		{"n2 down, odd args", []kvp{{"up_n9", false}, {"up_n1", "false"}, {"up_", false}, {"up_n2", false}}, "n1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := 0; i < 20; i++ {
				id := fmt.Sprintf("%s-%d", tc.name, i)
				args := append([]kvp{{"backend", "mqtt"}, {"client_id", []byte(id)}}, tc.up...)
				if _, err := c.Write(spoptest.Notify(uint64(i+1), 1, MessageName+"-mqtt", args)); err != nil {
					t.Fatal(err)
				}
				if sid, _, srv := ackServer(t, readFrame(t, c)); sid != uint64(i+1) || srv != tc.want {
					t.Fatalf("%s: ACK %d server %q, want %q", id, sid, srv, tc.want)
				}
			}
		})
	}
}

// FuzzFillQuery feeds fillQuery every argument list the library decodes
// from a key-value list the validator accepts: it must not panic, and the
// session expiry must be what the decimal text says, capped to uint32.
func FuzzFillQuery(f *testing.F) {
	f.Add(spoptest.AppendKVs(nil, []kvp{{"backend", "mqtt"}, {"client_id", []byte("c")}, {"session_expiry", []byte("7200")}, {"up_n1", true}}))
	f.Add(spoptest.AppendKVs(nil, []kvp{{"backend", []byte("mqtt")}, {"username", "u"}, {"session_expiry", uint32(60)}, {"up_n2", false}}))
	f.Add(spoptest.AppendKVs(nil, []kvp{{"backend", uint32(1)}, {"session_expiry", []byte("4294967296")}}))
	f.Add(spoptest.AppendKVs(nil, []kvp{{"backend", "nosuch"}, {"up_n1", "x"}, {"session_expiry", []byte{0, 0, 0x1c, 0x20}}}))
	s := NewServer(&fakeDecider{}, discard, Limits{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := spop.Reader{B: b}
		if r.KVList(func(string, byte, spop.Value) error { return nil }) != nil {
			return
		}
		list := kv.NewKV()
		if err := list.Unmarshal(b); err != nil {
			return
		}
		var q agent.Query
		err := s.fillQuery(&q, list.Data())
		if err == nil && q.Backend == "" {
			t.Fatal("accepted without a backend")
		}
		if q.SessionExpiry < 0 || q.SessionExpiry > math.MaxUint32*time.Second {
			t.Fatalf("session expiry %v", q.SessionExpiry)
		}
		if v, ok := list.Get("session_expiry"); ok && err == nil {
			if text, isBin := v.([]byte); isBin {
				want := uint64(0)
				if n, perr := strconv.ParseUint(string(text), 10, 64); perr == nil && len(text) <= 19 && text[0] != '+' {
					want = min(n, math.MaxUint32)
				}
				if q.SessionExpiry != time.Duration(want)*time.Second && !dupKey(list.Data(), "session_expiry") {
					t.Fatalf("session expiry %q: %v, want %d s", text, q.SessionExpiry, want)
				}
			}
		}
	})
}

func dupKey(items []kv.Item, name string) bool {
	n := 0
	for _, it := range items {
		if it.Name == name {
			n++
		}
	}
	return n > 1
}

// FuzzDecideMessages runs NOTIFY payloads the validator accepts through the
// library's decoder and the adapter, inline and on a worker, with a real
// agent: no panic may be recovered, and an answer names a server.
func FuzzDecideMessages(f *testing.F) {
	msg := func(args []kvp) []byte { return spoptest.Message(MessageName+"-mqtt", args) }
	f.Add(msg(connectMsg([]byte("dev-1"))))
	f.Add(append(msg(connectMsg([]byte("a"))), msg([]kvp{{"backend", "mqtt"}, {"client_id", "b"}, {"up_n1", false}})...))
	f.Add(msg([]kvp{{"backend", nil}, {"client_id", uint32(3)}}))
	f.Add(spoptest.Message("other", []kvp{{"x", int64(1)}}))
	f.Add(msg([]kvp{{"backend", "nosuch"}, {"client_id", []byte("x")}, {"session_expiry", []byte("4294967295")}}))
	s := NewServer(newAgent(f), discard, Limits{})
	f.Fuzz(func(t *testing.T, payload []byte) {
		raw := spoptest.Frame(spop.FrameNotify, flagFin, 1, 1, payload)
		if len(raw) > 1<<16 {
			return
		}
		if _, err := spop.ValidateFrame(raw[spop.HeaderLen:]); err != nil {
			return
		}
		fr := frame.AcquireFrame()
		defer frame.ReleaseFrame(fr)
		if err := fr.Read(bytes.NewReader(raw)); err != nil {
			return
		}
		for _, inline := range []bool{true, false} {
			server, next := s.decideMessages(fr.Messages, 0, "", inline)
			if next >= 0 {
				server, _ = s.decideMessages(fr.Messages, next, server, false)
			}
			if server != "" && server != "n1" && server != "n2" {
				t.Fatalf("answer %q", server)
			}
		}
		if p := s.Stats().Panics; p != 0 {
			t.Fatalf("%d panics recovered", p)
		}
	})
}
