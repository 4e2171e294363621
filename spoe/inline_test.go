package spoe

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/stickyd/stickyd/agent"
	"github.com/stickyd/stickyd/internal/spop"
	"github.com/stickyd/stickyd/internal/spoptest"
)

// inlineDecider answers inline ids starting with "warm-" (as a warm cache
// would) and sends every other one to the worker, which waits for release
// when it is set.
type inlineDecider struct {
	realBackends
	mu       sync.Mutex
	inline   []string
	worker   []string
	release  chan struct{}
	panicOn  string
	answerIn string // the server answered inline
}

func (d *inlineDecider) TryDecide(q *agent.Query) (agent.Decision, bool) {
	id := string(q.ClientID)
	if id == d.panicOn {
		panic("boom inline")
	}
	if !strings.HasPrefix(id, "warm-") {
		return agent.Decision{}, false
	}
	d.mu.Lock()
	d.inline = append(d.inline, id)
	d.mu.Unlock()
	return agent.Decision{Server: d.answerIn, Outcome: agent.OutcomeExisting}, true
}

func (d *inlineDecider) Decide(_ context.Context, q *agent.Query) agent.Decision {
	if d.release != nil {
		<-d.release
	}
	d.mu.Lock()
	d.worker = append(d.worker, string(q.ClientID))
	d.mu.Unlock()
	return agent.Decision{Server: "n2", Outcome: agent.OutcomePlaced}
}

func TestInlineAndWorkerFramesAreAllAnswered(t *testing.T) {
	d := &inlineDecider{release: make(chan struct{}), answerIn: "n1"}
	_, addr := startServer(t, d)
	c := dialHello(t, addr)
	// One write: a frame that needs the store, then two warm ones. The warm
	// ones must not wait behind the first.
	var burst bytes.Buffer
	burst.Write(spoptest.Notify(1, 1, MessageName, connectMsg([]byte("cold-1"))))
	burst.Write(spoptest.Notify(2, 1, MessageName, connectMsg([]byte("warm-2"))))
	burst.Write(spoptest.Notify(3, 1, MessageName, connectMsg([]byte("warm-3"))))
	if _, err := c.Write(burst.Bytes()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []uint64{2, 3} {
		if sid, _, srv := ackServer(t, readFrame(t, c)); sid != want || srv != "n1" {
			t.Fatalf("ACK stream %d server %q, want stream %d from n1 (answered inline)", sid, srv, want)
		}
	}
	close(d.release)
	if sid, _, srv := ackServer(t, readFrame(t, c)); sid != 1 || srv != "n2" {
		t.Fatalf("ACK stream %d server %q, want stream 1 from n2 (the worker)", sid, srv)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if strings.Join(d.inline, ",") != "warm-2,warm-3" || strings.Join(d.worker, ",") != "cold-1" {
		t.Fatalf("inline %v, worker %v", d.inline, d.worker)
	}
}

func TestInlineMessagesResumeOnTheWorker(t *testing.T) {
	// Two stickyd messages in one frame: the first answered inline, the
	// second needs the worker, which decides it alone (not the first again).
	d := &inlineDecider{answerIn: "n1"}
	_, addr := startServer(t, d)
	c := dialHello(t, addr)
	payload := append(spoptest.Message(MessageName+"-a", connectMsg([]byte("warm-a"))), spoptest.Message(MessageName+"-b", connectMsg([]byte("cold-b")))...)
	if _, err := c.Write(spoptest.Frame(spop.FrameNotify, flagFin, 5, 1, payload)); err != nil {
		t.Fatal(err)
	}
	if sid, _, srv := ackServer(t, readFrame(t, c)); sid != 5 || srv != "n2" {
		t.Fatalf("ACK stream %d server %q, want the last message's answer (n2)", sid, srv)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if strings.Join(d.inline, ",") != "warm-a" || strings.Join(d.worker, ",") != "cold-b" {
		t.Fatalf("inline %v, worker %v", d.inline, d.worker)
	}
}

func TestInlinePanicIsAnsweredWithoutActions(t *testing.T) {
	d := &inlineDecider{panicOn: "warm-boom", answerIn: "n1"}
	s, addr := startServer(t, d)
	c := dialHello(t, addr)
	if _, err := c.Write(spoptest.Notify(1, 1, MessageName, connectMsg([]byte("warm-boom")))); err != nil {
		t.Fatal(err)
	}
	if sid, _, srv := ackServer(t, readFrame(t, c)); sid != 1 || srv != "" {
		t.Fatalf("ACK stream %d server %q, want an empty ACK", sid, srv)
	}
	// The connection still serves.
	if _, err := c.Write(spoptest.Notify(2, 1, MessageName, connectMsg([]byte("warm-ok")))); err != nil {
		t.Fatal(err)
	}
	if sid, _, srv := ackServer(t, readFrame(t, c)); sid != 2 || srv != "n1" {
		t.Fatalf("ACK stream %d server %q", sid, srv)
	}
	if s.Stats().Panics != 1 {
		t.Fatalf("panics %d, want 1", s.Stats().Panics)
	}
}
