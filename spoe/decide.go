package spoe

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/negasus/haproxy-spoe-go/message"
	"github.com/negasus/haproxy-spoe-go/payload/kv"

	"github.com/stickyd/stickyd/agent"
)

// queries recycles Query values: the decider is an interface, so a Query
// passed to it would otherwise escape to the heap at every message.
var queries = sync.Pool{New: func() any { return new(agent.Query) }}

// decideMessages decides the stickyd messages of a NOTIFY from index from
// on and returns the server to set ("" for none; the last message wins, as
// successive set-var actions would in HAProxy), starting from server. With
// inline set it decides only through TryDecide, and stops at the first
// message that needs I/O: next is its index, to resume from, or -1 when
// every message was decided.
func (s *Server) decideMessages(msgs *message.Messages, from int, server string, inline bool) (result string, next int) {
	defer func() {
		if r := recover(); r != nil {
			s.counters.panics.Add(1)
			s.log.Error("spoe: panic in handler; answered without actions", "panic", r)
			result, next = "", -1
		}
	}()
	q := queries.Get().(*agent.Query)
	defer queries.Put(q)
	for i := from; i < msgs.Len(); i++ {
		msg, err := msgs.GetByIndex(i)
		if err != nil || !strings.HasPrefix(msg.Name, MessageName) {
			continue
		}
		q.Reset()
		if err := s.fillQuery(q, msg.KV.Data()); err != nil {
			s.counters.messages.Add(1)
			s.counters.badMessages.Add(1)
			s.log.Debug("spoe: message ignored", "err", err)
			continue
		}
		var d agent.Decision
		if inline {
			var ok bool
			if d, ok = s.decider.TryDecide(q); !ok {
				return server, i
			}
		} else {
			d = s.decider.Decide(s.ctx, q)
		}
		s.counters.messages.Add(1)
		if d.Server != "" {
			server = d.Server
		}
	}
	return server, -1
}

type kvItem = kv.Item

func (s *Server) fillQuery(q *agent.Query, items []kvItem) error {
	var be *agent.Backend
	for _, it := range items {
		switch it.Name {
		case argBackend:
			// str(<backend>) arrives as a string: use it as is, no copy.
			switch v := it.Value.(type) {
			case string:
				q.Backend = v
			case []byte:
				q.Backend = string(v)
			default:
				return fmt.Errorf("%s: want string, got %T", argBackend, it.Value)
			}
			be = s.decider.Backend(q.Backend)
		case argClientID:
			if b, ok := asBytes(it.Value); ok {
				q.ClientID = b
			}
		case argUsername:
			if b, ok := asBytes(it.Value); ok {
				q.Username = b
			}
		case argSeen:
			if n, ok := asUint(it.Value); ok && n > 0 && n <= agent.MaxServers {
				q.SetSeen(int(n) - 1)
			}
		case argCertCN:
			if b, ok := asBytes(it.Value); ok {
				q.CertCN = b
			}
		case argSessionExpiry:
			if secs, ok := asUint(it.Value); ok {
				q.SessionExpiry = time.Duration(min(secs, math.MaxUint32)) * time.Second
			}
		}
	}
	if q.Backend == "" {
		return errors.New("no backend argument")
	}
	if be != nil {
		for _, it := range items {
			if len(it.Name) > len(argUpPrefix) && it.Name[:len(argUpPrefix)] == argUpPrefix {
				if up, ok := it.Value.(bool); ok {
					q.SetUp(be.ServerIndex(it.Name[len(argUpPrefix):]), up)
				}
			}
		}
	}
	return nil
}

// asBytes accepts STRING and BINARY: mqtt_field_value yields BINARY.
func asBytes(v any) ([]byte, bool) {
	switch t := v.(type) {
	case []byte:
		return t, true
	case string:
		return []byte(t), true
	}
	return nil, false
}

// asUint reads the session expiry. HAProxy's mqtt_field_value renders
// every MQTT integer property as decimal text (mqtt_uint2str, src/mqtt.c,
// 2.6 to 3.3), typed BINARY as the converter's input is; never the raw
// four bytes of the MQTT wire, so "3600" is 3600 whatever its length.
// Integer types are accepted too, for a configuration that converts it.
func asUint(v any) (uint64, bool) {
	switch t := v.(type) {
	case int32:
		return uint64(max(t, 0)), true
	case uint32:
		return uint64(t), true
	case int64:
		return uint64(max(t, 0)), true
	case uint64:
		return t, true
	case string:
		return decimal(t)
	case []byte:
		return decimal(t)
	}
	return 0, false
}

// decimal parses unsigned decimal text without allocating; at most 19
// digits, so it cannot overflow.
func decimal[T string | []byte](s T) (uint64, bool) {
	if len(s) == 0 || len(s) > 19 {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}
