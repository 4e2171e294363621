package haproxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/negasus/haproxy-spoe-go/frame"
)

// Test-side SPOP encoder: what HAProxy would send.

func putVarint(b []byte, v uint64) []byte {
	if v < 240 {
		return append(b, byte(v))
	}
	b = append(b, byte(v)|0xf0)
	v = (v - 240) >> 4
	for v >= 128 {
		b = append(b, byte(v)|0x80)
		v = (v - 128) >> 7
	}
	return append(b, byte(v))
}

func putString(b []byte, s string) []byte { return append(putVarint(b, uint64(len(s))), s...) }

type kvp struct {
	k string
	v any
}

func putTyped(b []byte, v any) []byte {
	switch t := v.(type) {
	case nil:
		return append(b, typeNull)
	case bool:
		if t {
			return append(b, typeBool|0x10)
		}
		return append(b, typeBool)
	case uint32:
		return putVarint(append(b, typeUint32), uint64(t))
	case int64:
		return putVarint(append(b, typeInt64), uint64(t))
	case string:
		return putString(append(b, typeString), t)
	case []byte:
		return putString(append(b, typeBinary), string(t))
	}
	panic("unsupported")
}

func putKVs(b []byte, kvs []kvp) []byte {
	for _, p := range kvs {
		b = putTyped(putString(b, p.k), p.v)
	}
	return b
}

// rawFrame builds a whole frame, length prefix included.
func rawFrame(typ byte, flags uint32, sid, fid uint64, payload []byte) []byte {
	body := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(body[1:], flags)
	body = putVarint(body, sid)
	body = putVarint(body, fid)
	body = append(body, payload...)
	out := make([]byte, 4, 4+len(body))
	binary.BigEndian.PutUint32(out, uint32(len(body)))
	return append(out, body...)
}

func helloFrame(healthcheck bool) []byte {
	kvs := []kvp{{"supported-versions", "2.0"}, {"max-frame-size", uint32(16380)}, {"capabilities", "pipelining,async"}, {"engine-id", "test-engine"}}
	if healthcheck {
		kvs = append(kvs, kvp{"healthcheck", true})
	}
	return rawFrame(frameHAProxyHello, flagFin, 0, 0, putKVs(nil, kvs))
}

func notifyFrame(sid, fid uint64, msg string, args []kvp) []byte {
	return rawFrame(frameNotify, flagFin, sid, fid, notifyPayload(msg, args))
}

// notifyPayload is one message of a NOTIFY: its name, count and arguments.
func notifyPayload(msg string, args []kvp) []byte {
	p := putString(nil, msg)
	p = append(p, byte(len(args)))
	return putKVs(p, args)
}

func TestValidateFrame(t *testing.T) {
	good := notifyFrame(7, 1, MessageName, []kvp{{"backend", "mqtt"}, {"client_id", []byte("dev-1")}, {"up_n1", true}})
	tests := []struct {
		name  string
		frame []byte
		ok    bool
	}{
		{"hello", helloFrame(false), true},
		{"hello healthcheck", helloFrame(true), true},
		{"notify", good, true},
		{"notify two messages", rawFrame(frameNotify, flagFin, 1, 1, append(append(putString(nil, "a"), 0), append(putString(nil, "b"), 0)...)), true},
		{"disconnect", rawFrame(frameHAProxyDisconnect, flagFin, 0, 0, putKVs(nil, []kvp{{"status-code", uint32(0)}, {"message", "bye"}})), true},
		{"unknown type", rawFrame(42, flagFin, 0, 0, nil), false},
		{"agent frame type", rawFrame(103, flagFin, 0, 0, nil), false},
		{"not final", notifyFrame(1, 1, "x", nil)[:0], false},
		{"fragment", rawFrame(frameNotify, 0, 1, 1, append(putString(nil, "m"), 0)), false},
		{"abort", rawFrame(frameNotify, flagFin|flagAbort, 1, 1, append(putString(nil, "m"), 0)), false},
		{"message name without arg count", rawFrame(frameNotify, flagFin, 1, 1, putString(nil, "m")), false},
		{"arg count beyond data", rawFrame(frameNotify, flagFin, 1, 1, append(putString(nil, "m"), 3)), false},
		{"name length beyond end", rawFrame(frameNotify, flagFin, 1, 1, []byte{0x20, 'a'}), false},
		{"bad data type", rawFrame(frameNotify, flagFin, 1, 1, append(putString(append(putString(nil, "m"), 1), "k"), 0x0e)), false},
		{"truncated ipv6", rawFrame(frameNotify, flagFin, 1, 1, append(putString(append(putString(nil, "m"), 1), "k"), typeIPv6, 1, 2)), false},
		{"hello healthcheck not bool", rawFrame(frameHAProxyHello, flagFin, 0, 0, putKVs(nil, []kvp{{"healthcheck", "yes"}})), false},
		{"hello max-frame-size not uint32", rawFrame(frameHAProxyHello, flagFin, 0, 0, putKVs(nil, []kvp{{"max-frame-size", "big"}})), false},
		{"endless varint", rawFrame(frameNotify, flagFin, 1, 1, bytes.Repeat([]byte{0xff}, 20)), false},
		{"short", []byte{0, 0, 0, 2, 3, 0}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.frame) < 4 {
				return
			}
			_, err := validateFrame(tc.frame[4:])
			if tc.ok && err != nil {
				t.Fatalf("want ok, got %v", err)
			}
			if !tc.ok && !errors.Is(err, ErrBadFrame) {
				t.Fatalf("want ErrBadFrame, got %v", err)
			}
		})
	}
}

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
		_, err := frameLen(tc.hdr, 16384)
		if (err == nil) != tc.ok {
			t.Errorf("frameLen(% x): err=%v, want ok=%v", tc.hdr, err, tc.ok)
		}
	}
}

// FuzzValidateFrame checks that the validator never panics and that every
// frame it accepts is also decoded by the negasus library without a panic:
// the validator is what keeps the library's unchecked indexing safe.
func FuzzValidateFrame(f *testing.F) {
	f.Add(helloFrame(false)[4:])
	f.Add(helloFrame(true)[4:])
	f.Add(notifyFrame(1, 1, MessageName, []kvp{{"backend", "mqtt"}, {"client_id", []byte("c")}, {"session_expiry", int64(3600)}, {"up_n1", false}})[4:])
	f.Add(rawFrame(frameHAProxyDisconnect, flagFin, 0, 0, putKVs(nil, []kvp{{"status-code", uint32(2)}}))[4:])
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > 1<<16 {
			return
		}
		fi, err := validateFrame(body)
		if err != nil {
			return
		}
		if fi.Type != frameHAProxyHello && fi.Type != frameHAProxyDisconnect && fi.Type != frameNotify {
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
