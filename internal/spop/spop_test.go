package spop

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/negasus/haproxy-spoe-go/frame"

	"github.com/stickyd/stickyd/internal/spoptest"
)

// What HAProxy would send, from the test-side encoder.

type kvp = spoptest.KV

func helloFrame(healthcheck bool) []byte { return spoptest.Hello("test-engine", healthcheck) }

func TestValidateFrame(t *testing.T) {
	good := spoptest.Notify(7, 1, "stickyd-connect-mqtt", []kvp{{"backend", "mqtt"}, {"client_id", []byte("dev-1")}, {"up_n1", true}})
	tests := []struct {
		name  string
		frame []byte
		ok    bool
	}{
		{"hello", helloFrame(false), true},
		{"hello healthcheck", helloFrame(true), true},
		{"notify", good, true},
		{"notify two messages", spoptest.Frame(FrameNotify, flagFin, 1, 1, append(append(spoptest.AppendString(nil, "a"), 0), append(spoptest.AppendString(nil, "b"), 0)...)), true},
		{"disconnect", spoptest.Frame(FrameHAProxyDisconnect, flagFin, 0, 0, spoptest.AppendKVs(nil, []kvp{{"status-code", uint32(0)}, {"message", "bye"}})), true},
		{"unknown type", spoptest.Frame(42, flagFin, 0, 0, nil), false},
		{"agent frame type", spoptest.Frame(103, flagFin, 0, 0, nil), false},
		{"aborted, not final", spoptest.Frame(FrameNotify, flagAbort, 1, 1, append(spoptest.AppendString(nil, "m"), 0)), false},
		{"fragment", spoptest.Frame(FrameNotify, 0, 1, 1, append(spoptest.AppendString(nil, "m"), 0)), false},
		{"abort", spoptest.Frame(FrameNotify, flagFin|flagAbort, 1, 1, append(spoptest.AppendString(nil, "m"), 0)), false},
		{"message name without arg count", spoptest.Frame(FrameNotify, flagFin, 1, 1, spoptest.AppendString(nil, "m")), false},
		{"arg count beyond data", spoptest.Frame(FrameNotify, flagFin, 1, 1, append(spoptest.AppendString(nil, "m"), 3)), false},
		{"name length beyond end", spoptest.Frame(FrameNotify, flagFin, 1, 1, []byte{0x20, 'a'}), false},
		{"bad data type", spoptest.Frame(FrameNotify, flagFin, 1, 1, append(spoptest.AppendString(append(spoptest.AppendString(nil, "m"), 1), "k"), 0x0e)), false},
		{"truncated ipv6", spoptest.Frame(FrameNotify, flagFin, 1, 1, append(spoptest.AppendString(append(spoptest.AppendString(nil, "m"), 1), "k"), TypeIPv6, 1, 2)), false},
		{"hello healthcheck not bool", spoptest.Frame(FrameHAProxyHello, flagFin, 0, 0, spoptest.AppendKVs(nil, []kvp{{"healthcheck", "yes"}})), false},
		{"hello max-frame-size not uint32", spoptest.Frame(FrameHAProxyHello, flagFin, 0, 0, spoptest.AppendKVs(nil, []kvp{{"max-frame-size", "big"}})), false},
		{"disconnect healthcheck not bool", mistypedDisconnect, false},
		{"disconnect max-frame-size not uint32", spoptest.Frame(FrameHAProxyDisconnect, flagFin, 0, 0, spoptest.AppendKVs(nil, []kvp{{"max-frame-size", "x"}})), false},
		{"disconnect engine-id not string", spoptest.Frame(FrameHAProxyDisconnect, flagFin, 0, 0, spoptest.AppendKVs(nil, []kvp{{"engine-id", uint32(1)}})), false},
		{"disconnect status-code not uint32", spoptest.Frame(FrameHAProxyDisconnect, flagFin, 0, 0, spoptest.AppendKVs(nil, []kvp{{"status-code", "0"}})), false},
		{"disconnect message not string", spoptest.Frame(FrameHAProxyDisconnect, flagFin, 0, 0, spoptest.AppendKVs(nil, []kvp{{"message", true}})), false},
		{"hello engine-id not string", spoptest.Frame(FrameHAProxyHello, flagFin, 0, 0, spoptest.AppendKVs(nil, []kvp{{"engine-id", []byte("e")}})), false},
		{"hello unknown key of any type", spoptest.Frame(FrameHAProxyHello, flagFin, 0, 0, spoptest.AppendKVs(nil, []kvp{{"x-new", uint32(1)}})), true},
		{"endless varint", spoptest.Frame(FrameNotify, flagFin, 1, 1, bytes.Repeat([]byte{0xff}, 20)), false},
		{"short", []byte{0, 0, 0, 2, 3, 0}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ValidateFrame(tc.frame[4:])
			if tc.ok && err != nil {
				t.Fatalf("want ok, got %v", err)
			}
			if !tc.ok && !errors.Is(err, ErrBadFrame) {
				t.Fatalf("want ErrBadFrame, got %v", err)
			}
		})
	}
}

// mistypedDisconnect is a DISCONNECT whose healthcheck is the string "x":
// the library's unchecked type assertion panicked on it.
var mistypedDisconnect = []byte{0x00, 0x00, 0x00, 0x16, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x0b,
	'h', 'e', 'a', 'l', 't', 'h', 'c', 'h', 'e', 'c', 'k', 0x08, 0x01, 'x'}

func TestFrameLen(t *testing.T) {
	for _, tc := range []struct {
		hdr []byte
		ok  bool
	}{
		{[]byte{0, 0, 0, 0}, false},
		{[]byte{0, 0, 0, 6}, false},
		{[]byte{0, 0, 0, 7}, true},
		{[]byte{0, 0, 0x40, 0}, true},
		{[]byte{0, 0, 0x40, 1}, false},
		{[]byte{0xff, 0xff, 0xff, 0xff}, false},
		{[]byte("GET "), false},
	} {
		_, err := FrameLen(tc.hdr, 16384)
		if (err == nil) != tc.ok {
			t.Errorf("FrameLen(% x): err=%v, want ok=%v", tc.hdr, err, tc.ok)
		}
	}
}

// FuzzValidateFrame checks that the validator never panics and that every
// frame it accepts is also decoded by the negasus library without a panic:
// the validator is what keeps the library's unchecked indexing safe.
func FuzzValidateFrame(f *testing.F) {
	f.Add(helloFrame(false)[4:])
	f.Add(helloFrame(true)[4:])
	f.Add(spoptest.Notify(1, 1, "stickyd-connect-mqtt", []kvp{{"backend", "mqtt"}, {"client_id", []byte("c")}, {"session_expiry", int64(3600)}, {"up_n1", false}})[4:])
	f.Add(spoptest.Frame(FrameHAProxyDisconnect, flagFin, 0, 0, spoptest.AppendKVs(nil, []kvp{{"status-code", uint32(2)}}))[4:])
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add(mistypedDisconnect[4:])
	for _, k := range []string{"max-frame-size", "engine-id", "healthcheck"} {
		f.Add(spoptest.Frame(FrameHAProxyDisconnect, flagFin, 0, 0, spoptest.AppendKVs(nil, []kvp{{k, []byte("1")}}))[4:])
		f.Add(spoptest.Frame(FrameHAProxyHello, flagFin, 0, 0, spoptest.AppendKVs(nil, []kvp{{k, nil}}))[4:])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > 1<<16 {
			return
		}
		fi, err := ValidateFrame(body)
		if err != nil {
			return
		}
		if fi.Type != FrameHAProxyHello && fi.Type != FrameHAProxyDisconnect && fi.Type != FrameNotify {
			t.Fatalf("accepted frame type %d", fi.Type)
		}
		full := make([]byte, 4, 4+len(body))
		binary.BigEndian.PutUint32(full, uint32(len(body)))
		full = append(full, body...)
		fr := frame.AcquireFrame()
		defer frame.ReleaseFrame(fr)
		_ = fr.Read(bytes.NewReader(full)) // must not panic
	})
}
