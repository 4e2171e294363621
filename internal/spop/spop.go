// Package spop encodes and decodes the frames of SPOP, the protocol HAProxy
// speaks to SPOE agents (haproxy doc/SPOE.txt §3). It knows nothing of
// connections or of what the messages mean.
package spop

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// A bounds-checked reader of SPOP frames (haproxy doc/SPOE.txt §3). The
// negasus library indexes frames without bounds checks and trusts their
// length, so every frame is validated here before the library sees it.

// SPOP frame types sent by HAProxy.
const (
	FrameHAProxyHello      = 1
	FrameHAProxyDisconnect = 2
	FrameNotify            = 3
)

// Typed data kinds.
const (
	TypeNull   = 0
	TypeBool   = 1
	TypeInt32  = 2
	TypeUint32 = 3
	TypeInt64  = 4
	TypeUint64 = 5
	TypeIPv4   = 6
	TypeIPv6   = 7
	TypeString = 8
	TypeBinary = 9
)

const (
	flagFin   = 0x01
	flagAbort = 0x02
)

// HeaderLen is the 4-byte length that precedes every frame.
const HeaderLen = 4

// ErrBadFrame wraps every reason a frame is refused.
var ErrBadFrame = errors.New("bad SPOP frame")

func badFrame(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadFrame, fmt.Sprintf(format, args...))
}

// FrameLen reads the length prefix and checks it against max before
// anything is allocated for the body.
func FrameLen(hdr []byte, max int) (int, error) {
	n := binary.BigEndian.Uint32(hdr)
	// type(1) + flags(4) + stream-id(>=1) + frame-id(>=1)
	if n < 7 {
		return 0, badFrame("length %d is shorter than a frame header", n)
	}
	if uint64(n) > uint64(max) {
		return 0, badFrame("length %d exceeds max-frame-size %d", n, max)
	}
	return int(n), nil
}

// FrameInfo is what the validator learnt of a frame.
type FrameInfo struct {
	Type         byte
	Healthcheck  bool
	MaxFrameSize uint32
}

// ValidateFrame checks a whole frame body (everything after the length).
// It accepts only frames HAProxy may send, fully decodable, unfragmented.
func ValidateFrame(b []byte) (FrameInfo, error) {
	var fi FrameInfo
	if len(b) < 7 {
		return fi, badFrame("frame of %d bytes", len(b))
	}
	fi.Type = b[0]
	flags := binary.BigEndian.Uint32(b[1:5])
	r := Reader{B: b[5:]}
	if _, err := r.Varint(); err != nil {
		return fi, badFrame("stream-id: %v", err)
	}
	if _, err := r.Varint(); err != nil {
		return fi, badFrame("frame-id: %v", err)
	}
	if flags&flagFin == 0 || flags&flagAbort != 0 {
		// Fragmentation is never negotiated, so every frame must be final.
		return fi, badFrame("fragmented or aborted frame (flags %#x)", flags)
	}
	switch fi.Type {
	case FrameHAProxyHello, FrameHAProxyDisconnect:
		return fi, r.KVList(func(name string, t byte, v Value) error {
			want, known := wellKnown[name]
			if !known {
				return nil
			}
			if t != want {
				return badFrame("%s: %s is type %d, want %d", frameName(fi.Type), name, t, want)
			}
			switch name {
			case "healthcheck":
				fi.Healthcheck = v.B
			case "max-frame-size":
				fi.MaxFrameSize = uint32(v.U)
			}
			return nil
		})
	case FrameNotify:
		for len(r.B) > 0 {
			if _, err := r.Bytes(); err != nil {
				return fi, badFrame("message name: %v", err)
			}
			if len(r.B) == 0 {
				return fi, badFrame("message without argument count")
			}
			nargs := int(r.B[0])
			r.B = r.B[1:]
			for i := 0; i < nargs; i++ {
				if _, err := r.Bytes(); err != nil {
					return fi, badFrame("argument name: %v", err)
				}
				if _, _, err := r.Typed(); err != nil {
					return fi, badFrame("argument Value: %v", err)
				}
			}
		}
		return fi, nil
	default:
		return fi, badFrame("unexpected frame type %d", fi.Type)
	}
}

// wellKnown types the keys of HELLO and DISCONNECT frames (doc/SPOE.txt
// §3.2). The library type-asserts healthcheck, max-frame-size and engine-id
// in both frame types without checking, so any of them mistyped would panic
// there; the others are checked so nothing odd passes as HAProxy.
var wellKnown = map[string]byte{
	"supported-versions": TypeString,
	"max-frame-size":     TypeUint32,
	"capabilities":       TypeString,
	"healthcheck":        TypeBool,
	"engine-id":          TypeString,
	"status-code":        TypeUint32,
	"message":            TypeString,
}

func frameName(t byte) string {
	if t == FrameHAProxyHello {
		return "hello"
	}
	return "disconnect"
}

// Value is a decoded typed datum: B for booleans, U for integers, S for
// strings and binaries (aliasing the frame).
type Value struct {
	B bool
	U uint64
	S []byte
}

// Reader decodes SPOP primitives from B, consuming what it reads.
type Reader struct{ B []byte }

var errShort = errors.New("truncated")

// varint decodes HAProxy's variable-length integer: values below 240 fit
// one byte; larger ones continue in 7-bit groups (doc/SPOE.txt §3.1).
func (r *Reader) Varint() (uint64, error) {
	if len(r.B) == 0 {
		return 0, errShort
	}
	v := uint64(r.B[0])
	if v < 240 {
		r.B = r.B[1:]
		return v, nil
	}
	shift := uint(4)
	for i := 1; ; i++ {
		if i >= len(r.B) {
			return 0, errShort
		}
		if i > 10 {
			return 0, errors.New("varint too long")
		}
		c := uint64(r.B[i])
		v += c << shift
		shift += 7
		if c < 128 {
			r.B = r.B[i+1:]
			return v, nil
		}
	}
}

func (r *Reader) Bytes() ([]byte, error) {
	n, err := r.Varint()
	if err != nil {
		return nil, err
	}
	if n > uint64(len(r.B)) {
		return nil, fmt.Errorf("length %d beyond end (%d left)", n, len(r.B))
	}
	s := r.B[:n]
	r.B = r.B[n:]
	return s, nil
}

func (r *Reader) Typed() (byte, Value, error) {
	var v Value
	if len(r.B) == 0 {
		return 0, v, errShort
	}
	t, flags := r.B[0]&0x0f, r.B[0]>>4
	r.B = r.B[1:]
	var err error
	switch t {
	case TypeNull:
	case TypeBool:
		v.B = flags&1 != 0
	case TypeInt32, TypeUint32, TypeInt64, TypeUint64:
		v.U, err = r.Varint()
	case TypeIPv4, TypeIPv6:
		n := 4
		if t == TypeIPv6 {
			n = 16
		}
		if len(r.B) < n {
			return t, v, errShort
		}
		r.B = r.B[n:]
	case TypeString, TypeBinary:
		v.S, err = r.Bytes()
	default:
		return t, v, fmt.Errorf("unknown data type %d", t)
	}
	return t, v, err
}

func (r *Reader) KVList(fn func(name string, t byte, v Value) error) error {
	for len(r.B) > 0 {
		name, err := r.Bytes()
		if err != nil {
			return badFrame("key: %v", err)
		}
		t, v, err := r.Typed()
		if err != nil {
			return badFrame("Value of %q: %v", name, err)
		}
		if err := fn(string(name), t, v); err != nil {
			return err
		}
	}
	return nil
}

// Frames the agent sends (doc/SPOE.txt §3.2): each is encoded whole and
// written with one write(), as HAProxy 3.2 resets on a frame split across
// segments.

const (
	FrameAgentHello      = 101
	FrameAgentDisconnect = 102
	FrameAck             = 103

	actionSetVar = 1
	scopeSession = 1

	// agentCapabilities are those the agent announces: the frames of one
	// connection may be answered out of order.
	agentCapabilities = "pipelining,async"
	spopVersion       = "2.0"
)

// AppendVarint encodes HAProxy's variable-length integer.
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

func AppendBytes(b []byte, s string) []byte { return append(AppendVarint(b, uint64(len(s))), s...) }

// beginFrame appends a frame header with a placeholder length and returns
// where the frame starts; endFrame fills its length in. Frames may follow
// others in b.
func beginFrame(b []byte, typ byte, sid, fid uint64) ([]byte, int) {
	start := len(b)
	b = append(b, 0, 0, 0, 0, typ, 0, 0, 0, flagFin)
	b = AppendVarint(b, sid)
	return AppendVarint(b, fid), start
}

func endFrame(b []byte, start int) []byte {
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-HeaderLen))
	return b
}

// AppendAck is an ACK with, when server is set, the one action the agent
// ever sends: set-var(sess.<prefix>.server) to a string.
func AppendAck(b []byte, sid, fid uint64, varName, server string) []byte {
	b, start := beginFrame(b, FrameAck, sid, fid)
	if server != "" {
		b = append(b, actionSetVar, 3, scopeSession)
		b = AppendBytes(b, varName)
		b = AppendBytes(append(b, TypeString), server)
	}
	return endFrame(b, start)
}

// AppendAgentHello answers HAPROXY-HELLO with the frame size the agent
// accepts (at most HAProxy's).
func AppendAgentHello(b []byte, maxFrame uint32) []byte {
	b, start := beginFrame(b, FrameAgentHello, 0, 0)
	b = AppendBytes(append(AppendBytes(b, "version"), TypeString), spopVersion)
	b = AppendVarint(append(AppendBytes(b, "max-frame-size"), TypeUint32), uint64(maxFrame))
	b = AppendBytes(append(AppendBytes(b, "capabilities"), TypeString), agentCapabilities)
	return endFrame(b, start)
}

// AppendAgentDisconnect answers HAPROXY-DISCONNECT: a normal close.
func AppendAgentDisconnect(b []byte) []byte {
	b, start := beginFrame(b, FrameAgentDisconnect, 0, 0)
	b = AppendVarint(append(AppendBytes(b, "status-code"), TypeUint32), 0)
	b = AppendBytes(append(AppendBytes(b, "message"), TypeString), "connection closed by server")
	return endFrame(b, start)
}
