package spoe

import (
	"context"
	"sync"
	"testing"

	"github.com/stickyd/stickyd/agent"
	"github.com/stickyd/stickyd/internal/spoptest"
)

// certDecider records the CN of each query (copied: it aliases the frame).
type certDecider struct {
	realBackends
	mu  sync.Mutex
	cns []string
}

func (d *certDecider) TryDecide(*agent.Query) (agent.Decision, bool) { return agent.Decision{}, false }

func (d *certDecider) Decide(_ context.Context, q *agent.Query) agent.Decision {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cns = append(d.cns, string(q.CertCN))
	return agent.Decision{Server: "n1", Outcome: agent.OutcomeExisting}
}

// The cert_cn argument (ssl_c_s_dn(cn), a string) reaches the agent as
// Query.CertCN; a message without it leaves CertCN empty.
func TestCertCNArgument(t *testing.T) {
	d := &certDecider{}
	_, addr := startServer(t, d)
	c := dialHello(t, addr)
	msgs := [][]kvp{
		append(connectMsg([]byte("any-id")), kvp{"cert_cn", "device-7"}),
		connectMsg([]byte("any-id")),
		append(connectMsg([]byte("any-id")), kvp{"cert_cn", []byte("binary-cn")}),
	}
	for i, m := range msgs {
		if _, err := c.Write(spoptest.Notify(uint64(i+1), 1, MessageName, m)); err != nil {
			t.Fatal(err)
		}
		if _, _, srv := ackServer(t, readFrame(t, c)); srv != "n1" {
			t.Fatalf("message %d: ack server %q", i, srv)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.cns) != 3 || d.cns[0] != "device-7" || d.cns[1] != "" || d.cns[2] != "binary-cn" {
		t.Fatalf("CNs %q", d.cns)
	}
}
