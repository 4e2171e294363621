// Package spoptest speaks HAProxy's side of SPOP (haproxy doc/SPOE.txt §3)
// for tests and the benchmark: it builds the frames HAProxy sends to an
// agent. It is an encoder of its own, apart from the agent's, so that tests
// of the agent's decoder do not check it against itself.
package spoptest

import (
	"encoding/binary"
	"fmt"
)

// Frame types HAProxy sends, and the flag every unfragmented frame has.
const (
	FrameHAProxyHello      = 1
	FrameHAProxyDisconnect = 2
	FrameNotify            = 3
	FlagFin                = 1
)

// Typed-data kinds.
const (
	typeNull   = 0
	typeBool   = 1
	typeUint32 = 3
	typeInt64  = 4
	typeString = 8
	typeBinary = 9
)

// KV is one key-value of a frame or argument of a message. Value is nil,
// bool, uint32, int64, string (STRING) or []byte (BINARY). An alias of a
// plain struct, so tests may write {"backend", "mqtt"}.
type KV = struct {
	Name  string
	Value any
}

// AppendVarint appends HAProxy's variable-length integer.
func AppendVarint(b []byte, v uint64) []byte {
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

// AppendString appends a length-prefixed string.
func AppendString(b []byte, s string) []byte {
	return append(AppendVarint(b, uint64(len(s))), s...)
}

// AppendTyped appends a typed value; it panics on a type SPOP has no
// encoding for here (a test's mistake).
func AppendTyped(b []byte, v any) []byte {
	switch t := v.(type) {
	case nil:
		return append(b, typeNull)
	case bool:
		if t {
			return append(b, typeBool|0x10)
		}
		return append(b, typeBool)
	case uint32:
		return AppendVarint(append(b, typeUint32), uint64(t))
	case int64:
		return AppendVarint(append(b, typeInt64), uint64(t))
	case string:
		return AppendString(append(b, typeString), t)
	case []byte:
		return append(AppendVarint(append(b, typeBinary), uint64(len(t))), t...)
	}
	panic(fmt.Sprintf("spoptest: no encoding for %T", v))
}

// AppendKVs appends key-values.
func AppendKVs(b []byte, kvs []KV) []byte {
	for _, kv := range kvs {
		b = AppendTyped(AppendString(b, kv.Name), kv.Value)
	}
	return b
}

// AppendFrame appends a whole frame, length prefix included.
func AppendFrame(b []byte, typ byte, flags uint32, sid, fid uint64, payload []byte) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0, typ)
	b = binary.BigEndian.AppendUint32(b, flags)
	b = AppendVarint(b, sid)
	b = AppendVarint(b, fid)
	b = append(b, payload...)
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	return b
}

// Frame is AppendFrame into a new slice.
func Frame(typ byte, flags uint32, sid, fid uint64, payload []byte) []byte {
	return AppendFrame(nil, typ, flags, sid, fid, payload)
}

// Hello is the HAPROXY-HELLO HAProxy 2.6 sends (a health check's when
// healthcheck is set).
func Hello(engineID string, healthcheck bool) []byte {
	kvs := []KV{{"supported-versions", "2.0"}, {"max-frame-size", uint32(16380)}, {"capabilities", "pipelining,async"}, {"engine-id", engineID}}
	if healthcheck {
		kvs = append(kvs, KV{"healthcheck", true})
	}
	return Frame(FrameHAProxyHello, FlagFin, 0, 0, AppendKVs(nil, kvs))
}

// Message is one message of a NOTIFY: its name, argument count and
// arguments.
func Message(name string, args []KV) []byte {
	return AppendKVs(append(AppendString(nil, name), byte(len(args))), args)
}

// Notify is a NOTIFY frame carrying one message.
func Notify(sid, fid uint64, name string, args []KV) []byte {
	return Frame(FrameNotify, FlagFin, sid, fid, Message(name, args))
}
