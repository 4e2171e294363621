package haproxy

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
	frameHAProxyHello      = 1
	frameHAProxyDisconnect = 2
	frameNotify            = 3
)

// Typed data kinds.
const (
	typeNull   = 0
	typeBool   = 1
	typeInt32  = 2
	typeUint32 = 3
	typeInt64  = 4
	typeUint64 = 5
	typeIPv4   = 6
	typeIPv6   = 7
	typeString = 8
	typeBinary = 9
)

const (
	flagFin   = 0x01
	flagAbort = 0x02
)

// frameHeaderLen is the 4-byte length that precedes every frame.
const frameHeaderLen = 4

// ErrBadFrame wraps every reason a frame is refused.
var ErrBadFrame = errors.New("bad SPOP frame")

func badFrame(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadFrame, fmt.Sprintf(format, args...))
}

// frameLen reads the length prefix and checks it against max before
// anything is allocated for the body.
func frameLen(hdr []byte, max int) (int, error) {
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

// frameInfo is what the validator learnt of a frame.
type frameInfo struct {
	Type         byte
	Healthcheck  bool
	MaxFrameSize uint32
}

// validateFrame checks a whole frame body (everything after the length).
// It accepts only frames HAProxy may send, fully decodable, unfragmented.
func validateFrame(b []byte) (frameInfo, error) {
	var fi frameInfo
	if len(b) < 7 {
		return fi, badFrame("frame of %d bytes", len(b))
	}
	fi.Type = b[0]
	flags := binary.BigEndian.Uint32(b[1:5])
	r := reader{b: b[5:]}
	if _, err := r.varint(); err != nil {
		return fi, badFrame("stream-id: %v", err)
	}
	if _, err := r.varint(); err != nil {
		return fi, badFrame("frame-id: %v", err)
	}
	if flags&flagFin == 0 || flags&flagAbort != 0 {
		// Fragmentation is never negotiated, so every frame must be final.
		return fi, badFrame("fragmented or aborted frame (flags %#x)", flags)
	}
	switch fi.Type {
	case frameHAProxyHello:
		return fi, r.kvList(func(name string, t byte, v value) error {
			switch name {
			case "healthcheck":
				if t != typeBool {
					return badFrame("hello: healthcheck is type %d, want bool", t)
				}
				fi.Healthcheck = v.b
			case "max-frame-size":
				if t != typeUint32 {
					return badFrame("hello: max-frame-size is type %d, want uint32", t)
				}
				fi.MaxFrameSize = uint32(v.u)
			case "engine-id", "supported-versions", "capabilities":
				if t != typeString {
					return badFrame("hello: %s is type %d, want string", name, t)
				}
			}
			return nil
		})
	case frameHAProxyDisconnect:
		return fi, r.kvList(func(string, byte, value) error { return nil })
	case frameNotify:
		for len(r.b) > 0 {
			if _, err := r.bytes(); err != nil {
				return fi, badFrame("message name: %v", err)
			}
			if len(r.b) == 0 {
				return fi, badFrame("message without argument count")
			}
			nargs := int(r.b[0])
			r.b = r.b[1:]
			for i := 0; i < nargs; i++ {
				if _, err := r.bytes(); err != nil {
					return fi, badFrame("argument name: %v", err)
				}
				if _, _, err := r.typed(); err != nil {
					return fi, badFrame("argument value: %v", err)
				}
			}
		}
		return fi, nil
	default:
		return fi, badFrame("unexpected frame type %d", fi.Type)
	}
}

type value struct {
	b bool
	u uint64
	s []byte
}

type reader struct{ b []byte }

var errShort = errors.New("truncated")

// varint decodes HAProxy's variable-length integer: values below 240 fit
// one byte; larger ones continue in 7-bit groups (doc/SPOE.txt §3.1).
func (r *reader) varint() (uint64, error) {
	if len(r.b) == 0 {
		return 0, errShort
	}
	v := uint64(r.b[0])
	if v < 240 {
		r.b = r.b[1:]
		return v, nil
	}
	shift := uint(4)
	for i := 1; ; i++ {
		if i >= len(r.b) {
			return 0, errShort
		}
		if i > 10 {
			return 0, errors.New("varint too long")
		}
		c := uint64(r.b[i])
		v += c << shift
		shift += 7
		if c < 128 {
			r.b = r.b[i+1:]
			return v, nil
		}
	}
}

func (r *reader) bytes() ([]byte, error) {
	n, err := r.varint()
	if err != nil {
		return nil, err
	}
	if n > uint64(len(r.b)) {
		return nil, fmt.Errorf("length %d beyond end (%d left)", n, len(r.b))
	}
	s := r.b[:n]
	r.b = r.b[n:]
	return s, nil
}

func (r *reader) typed() (byte, value, error) {
	var v value
	if len(r.b) == 0 {
		return 0, v, errShort
	}
	t, flags := r.b[0]&0x0f, r.b[0]>>4
	r.b = r.b[1:]
	var err error
	switch t {
	case typeNull:
	case typeBool:
		v.b = flags&1 != 0
	case typeInt32, typeUint32, typeInt64, typeUint64:
		v.u, err = r.varint()
	case typeIPv4, typeIPv6:
		n := 4
		if t == typeIPv6 {
			n = 16
		}
		if len(r.b) < n {
			return t, v, errShort
		}
		r.b = r.b[n:]
	case typeString, typeBinary:
		v.s, err = r.bytes()
	default:
		return t, v, fmt.Errorf("unknown data type %d", t)
	}
	return t, v, err
}

func (r *reader) kvList(fn func(name string, t byte, v value) error) error {
	for len(r.b) > 0 {
		name, err := r.bytes()
		if err != nil {
			return badFrame("key: %v", err)
		}
		t, v, err := r.typed()
		if err != nil {
			return badFrame("value of %q: %v", name, err)
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
	frameAgentHello      = 101
	frameAgentDisconnect = 102
	frameAck             = 103

	actionSetVar = 1
	scopeSession = 1

	// agentCapabilities are those the agent announces: the frames of one
	// connection may be answered out of order.
	agentCapabilities = "pipelining,async"
	spopVersion       = "2.0"
)

// appendVarint encodes HAProxy's variable-length integer.
func appendVarint(b []byte, v uint64) []byte {
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

func appendBytes(b []byte, s string) []byte { return append(appendVarint(b, uint64(len(s))), s...) }

// beginFrame appends a frame header with a placeholder length and returns
// where the frame starts; endFrame fills its length in. Frames may follow
// others in b.
func beginFrame(b []byte, typ byte, sid, fid uint64) ([]byte, int) {
	start := len(b)
	b = append(b, 0, 0, 0, 0, typ, 0, 0, 0, flagFin)
	b = appendVarint(b, sid)
	return appendVarint(b, fid), start
}

func endFrame(b []byte, start int) []byte {
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-frameHeaderLen))
	return b
}

// appendAck is an ACK with, when server is set, the one action the agent
// ever sends: set-var(sess.<prefix>.server) to a string.
func appendAck(b []byte, sid, fid uint64, server string) []byte {
	b, start := beginFrame(b, frameAck, sid, fid)
	if server != "" {
		b = append(b, actionSetVar, 3, scopeSession)
		b = appendBytes(b, VarServer)
		b = appendBytes(append(b, typeString), server)
	}
	return endFrame(b, start)
}

// appendAgentHello answers HAPROXY-HELLO with the frame size the agent
// accepts (at most HAProxy's).
func appendAgentHello(b []byte, maxFrame uint32) []byte {
	b, start := beginFrame(b, frameAgentHello, 0, 0)
	b = appendBytes(append(appendBytes(b, "version"), typeString), spopVersion)
	b = appendVarint(append(appendBytes(b, "max-frame-size"), typeUint32), uint64(maxFrame))
	b = appendBytes(append(appendBytes(b, "capabilities"), typeString), agentCapabilities)
	return endFrame(b, start)
}

// appendAgentDisconnect answers HAPROXY-DISCONNECT: a normal close.
func appendAgentDisconnect(b []byte) []byte {
	b, start := beginFrame(b, frameAgentDisconnect, 0, 0)
	b = appendVarint(append(appendBytes(b, "status-code"), typeUint32), 0)
	b = appendBytes(append(appendBytes(b, "message"), typeString), "connection closed by server")
	return endFrame(b, start)
}
