package spoe

import (
	"testing"

	"github.com/stickyd/stickyd/internal/spop"
	"github.com/stickyd/stickyd/internal/spoptest"
)

// The agent's own frames, read back with the validator's reader.

// agentKVs decodes the key-values of an AGENT-HELLO or AGENT-DISCONNECT body.
func agentKVs(t *testing.T, body []byte, typ byte) map[string]spop.Value {
	t.Helper()
	if body[0] != typ {
		t.Fatalf("frame type %d, want %d", body[0], typ)
	}
	r := spop.Reader{B: body[5:]}
	if _, err := r.Varint(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Varint(); err != nil {
		t.Fatal(err)
	}
	out := map[string]spop.Value{}
	if err := r.KVList(func(name string, _ byte, v spop.Value) error { out[name] = v; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAgentHelloAnnouncesTheSmallerFrameSize(t *testing.T) {
	// HAProxy offers 16380 (helloFrame); the agent's cap is smaller.
	_, addr := startServerMax(t, &fakeDecider{}, 8192)
	c := dialRaw(t, addr)
	if _, err := c.Write(helloFrame(false)); err != nil {
		t.Fatal(err)
	}
	kv := agentKVs(t, readFrame(t, c), spop.FrameAgentHello)
	if string(kv["version"].S) != "2.0" || kv["max-frame-size"].U != 8192 || string(kv["capabilities"].S) != "pipelining,async" {
		t.Fatalf("AGENT-HELLO: %+v", kv)
	}
}

func TestDisconnectIsAnsweredAfterInFlightFrames(t *testing.T) {
	d := &fakeDecider{answer: "n1", block: make(chan struct{})}
	_, addr := startServer(t, d)
	c := dialHello(t, addr)
	if _, err := c.Write(spoptest.Notify(9, 1, MessageName, connectMsg([]byte("dev-1")))); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(spoptest.Frame(spop.FrameHAProxyDisconnect, flagFin, 0, 0, spoptest.AppendKVs(nil, []kvp{{"status-code", uint32(0)}, {"message", "bye"}}))); err != nil {
		t.Fatal(err)
	}
	close(d.block)
	if sid, _, srv := ackServer(t, readFrame(t, c)); sid != 9 || srv != "n1" {
		t.Fatalf("ACK sid %d server %q", sid, srv)
	}
	if kv := agentKVs(t, readFrame(t, c), spop.FrameAgentDisconnect); kv["status-code"].U != 0 {
		t.Fatalf("AGENT-DISCONNECT: %+v", kv)
	}
	if n, _ := c.Read(make([]byte, 1)); n != 0 {
		t.Fatal("connection should close after AGENT-DISCONNECT")
	}
}

func TestAckWithoutServerHasNoAction(t *testing.T) {
	body := spop.AppendAck(nil, 300, 2, VarServer, "")[spop.HeaderLen:]
	if sid, fid, srv := ackServer(t, body); sid != 300 || fid != 2 || srv != "" {
		t.Fatalf("sid %d fid %d server %q", sid, fid, srv)
	}
}

func TestAgentFramesAppendAfterOthers(t *testing.T) {
	// Inline ACKs are encoded one after the other into one buffer: each
	// frame's length must cover that frame only.
	b := spop.AppendAck(nil, 1, 1, VarServer, "n1")
	b = spop.AppendAck(b, 300, 2, VarServer, "")
	b = spop.AppendAgentDisconnect(b)
	var types []byte
	for len(b) > 0 {
		n, err := spop.FrameLen(b, 1<<16)
		if err != nil || len(b) < spop.HeaderLen+n {
			t.Fatalf("frame %d: length %d of %d bytes left, %v", len(types), n, len(b), err)
		}
		types = append(types, b[spop.HeaderLen])
		b = b[spop.HeaderLen+n:]
	}
	if string(types) != string([]byte{spop.FrameAck, spop.FrameAck, spop.FrameAgentDisconnect}) {
		t.Fatalf("frame types %v", types)
	}
}
