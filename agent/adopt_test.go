package agent

import (
	"context"
	"testing"
)

// A client with no binding that HAProxy already routed (its table's
// server, sent as "seen") keeps that server if it is eligible; otherwise
// rendezvous places it. An existing binding always wins.
func TestNewClientAdoptsWhereHAProxySentIt(t *testing.T) {
	ctx := context.Background()
	st := newFake()
	a := newAgent(t, st, 1, 1)
	other := func(id string) int {
		if a.Backend("mqtt").Place([]byte(id)) == "n1" {
			return 1
		}
		return 0
	}
	cases := []struct {
		name, id string
		seen     func(id string) int
		up       []bool
		drain    string
		want     func(id string) string
	}{
		{"adopted", "a1", other, []bool{true, true}, "", func(id string) string { return a.Backend("mqtt").Servers[other(id)].Name }},
		{"seen server down: rendezvous", "a2", other, []bool{true, true}, "", nil},
		{"seen server draining: rendezvous", "a3", other, []bool{true, true}, "", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q := query(c.id, c.up...)
			s := c.seen(c.id)
			switch c.name {
			case "seen server down: rendezvous":
				q.SetUp(s, false)
			case "seen server draining: rendezvous":
				if err := st.SetDraining(ctx, "mqtt", a.Backend("mqtt").Servers[s].Name, true); err != nil {
					t.Fatal(err)
				}
				if err := a.RefreshDraining(ctx); err != nil {
					t.Fatal(err)
				}
				defer func() {
					_ = st.SetDraining(ctx, "mqtt", a.Backend("mqtt").Servers[s].Name, false)
					_ = a.RefreshDraining(ctx)
				}()
			}
			q.SetSeen(s)
			d := a.Decide(ctx, q)
			want := a.Backend("mqtt").Servers[1-s].Name // rendezvous's choice
			if c.want != nil {
				want = c.want(c.id)
			}
			if d.Server != want || d.Outcome != OutcomePlaced {
				t.Fatalf("%+v, want %s placed", d, want)
			}
		})
	}
	t.Run("existing binding wins", func(t *testing.T) {
		first := a.Decide(ctx, query("a4", true, true))
		q := query("a4", true, true)
		q.SetSeen(1 - a.Backend("mqtt").ServerIndex(first.Server))
		if d := a.Decide(ctx, q); d.Server != first.Server || d.Outcome != OutcomeExisting {
			t.Fatalf("%+v, want %s existing", d, first.Server)
		}
	})
}
