package hashflood

import "testing"

func TestIDsShareOneFNVBucket(t *testing.T) {
	ids := IDs("x/", 2000)
	seen := map[string]bool{}
	for _, id := range ids {
		if b := FNVBucket(id); b != 0 {
			t.Fatalf("FNVBucket(%q) = %#x, want 0", id, b)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
	}
	if len(ids) != 2000 {
		t.Fatalf("%d ids", len(ids))
	}
	// The first layout's documented example: "c/1 x" is in bucket e29a.
	if b := FNVBucket("c/1 x"); b != 0xe29a {
		t.Fatalf("FNVBucket(c/1 x) = %#x", b)
	}
}
