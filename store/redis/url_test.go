package redis

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

func TestClientOptions(t *testing.T) {
	o, err := clientOptions("redis://u:pw@h:1/3?pool_size=7&read_timeout=2s", 30*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if o.Addrs[0] != "h:1" || o.DB != 3 || o.Username != "u" || o.Password != "pw" ||
		o.PoolSize != 7 || o.ReadTimeout != 2*time.Second || o.WriteTimeout != 30*time.Millisecond ||
		o.PoolTimeout != 30*time.Millisecond || o.MaxRetries != 1 || !o.ContextTimeoutEnabled || !o.DisableIdentity ||
		o.MasterName != "" || o.IsClusterMode {
		t.Fatalf("options = %+v", o)
	}
	o, err = clientOptions("unix:///run/redis.sock?db=2", DefaultOpTimeout)
	if err != nil || o.Addrs[0] != "/run/redis.sock" || o.DB != 2 {
		t.Fatalf("unix options = %+v, %v", o, err)
	}
	o, err = clientOptions("unix:/run/redis.sock", DefaultOpTimeout)
	if err != nil || o.Addrs[0] != "/run/redis.sock" {
		t.Fatalf("unix: options = %+v, %v", o, err)
	}
	o, err = clientOptions("rediss://h:1/0", DefaultOpTimeout)
	if err != nil || o.TLSConfig == nil || o.TLSConfig.ServerName != "h" {
		t.Fatalf("rediss options = %+v, %v", o, err)
	}
}

func TestSentinelURL(t *testing.T) {
	o, err := clientOptions("redis-sentinel://u:p%40w@h1:1,h2:2,[::1]:3/2?master_name=mm"+
		"&sentinel_username=su&sentinel_password=s%26p&pool_size=5&dial_timeout=1s", 30*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.Addrs, []string{"h1:1", "h2:2", "[::1]:3"}) || o.MasterName != "mm" || o.DB != 2 ||
		o.Username != "u" || o.Password != "p@w" || o.SentinelUsername != "su" || o.SentinelPassword != "s&p" ||
		o.PoolSize != 5 || o.DialTimeout != time.Second || o.ReadTimeout != 30*time.Millisecond ||
		o.MaxRetries != 1 || !o.ContextTimeoutEnabled || o.TLSConfig != nil || o.IsClusterMode {
		t.Fatalf("options = %+v", o)
	}
	o, err = clientOptions("redis-sentinel://h1,h2?master_name=m", DefaultOpTimeout)
	if err != nil || !slices.Equal(o.Addrs, []string{"h1:26379", "h2:26379"}) || o.DB != 0 {
		t.Fatalf("default ports: %+v, %v", o, err)
	}
	o, err = clientOptions("rediss-sentinel://h1:1,h2:2?master_name=m&skip_verify=true", DefaultOpTimeout)
	if err != nil || o.TLSConfig == nil || o.TLSConfig.ServerName != "" || !o.TLSConfig.InsecureSkipVerify {
		t.Fatalf("rediss-sentinel options = %+v, %v", o, err)
	}
	s, err := New(context.Background(), Options{URL: "redis-sentinel://127.0.0.1:1/0?master_name=m"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := s.rdb.(*goredis.Client); !ok || s.cluster != nil {
		t.Fatalf("sentinel URL made a %T", s.rdb)
	}
}

func TestClusterURL(t *testing.T) {
	o, err := clientOptions("redis-cluster://u:pw@h1:1,h2:2?read_timeout=1s&max_retries=3", 30*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.Addrs, []string{"h1:1", "h2:2"}) || !o.IsClusterMode || o.Username != "u" || o.Password != "pw" ||
		o.ReadTimeout != time.Second || o.WriteTimeout != 30*time.Millisecond || o.MaxRetries != 3 ||
		o.MasterName != "" || o.TLSConfig != nil || o.DB != 0 {
		t.Fatalf("options = %+v", o)
	}
	o, err = clientOptions("Rediss-Cluster://h1/0", DefaultOpTimeout)
	if err != nil || !slices.Equal(o.Addrs, []string{"h1:6379"}) || o.TLSConfig == nil || o.TLSConfig.ServerName != "" {
		t.Fatalf("rediss-cluster options = %+v, %v", o, err)
	}
	// One seed host still makes a cluster client.
	s, err := New(context.Background(), Options{URL: "redis-cluster://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.cluster == nil {
		t.Fatalf("cluster URL made a %T", s.rdb)
	}
}

// Bad URLs fail with an error naming the problem, and never quote the
// password or the sentinel password.
func TestBadURLs(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"", "no URL"},
		{"http://h:1", `scheme "http"`},
		{"s3cret@h:1", "no scheme"},
		{"user:s3cret@h:1", "no scheme"},
		{"redis://user:s3cret@h:notaport/0", "port"},
		{"redis://user:s3cret@h:1/0?bogus=1", "bogus"},
		{"redis://user:s3cret@h:1/x", "database"},
		{"redis://user:s3cret@h:1/0\x7f", "bad URL"},
		{"redis-sentinel://user:s3cret@h1:1,h2:2/0", "master_name"},
		{"redis-sentinel://user:s3cret@/0?master_name=m", "no host"},
		{"redis-sentinel://user:s3cret@h1:1,,h2:2?master_name=m", "host 2 of 3 is empty"},
		{"redis-sentinel://user:s3cret@h1:99999?master_name=m", "bad port"},
		{"redis-sentinel://user:s3cret@h1:x?master_name=m", "bad port"},
		{"redis-sentinel://user:s3cret@h1:1?master_name=m&bogus=1", "bogus"},
		{"redis-sentinel://h1:1?master_name=m&sentinel_password=s3cret&read_timeout=zz", "read_timeout"},
		{"redis-sentinel://user:s3cret@h1:1/x?master_name=m", "database"},
		{"redis-sentinel://user:s3cret@h1:1?master_name=m&%zz", "query"},
		{"redis-cluster://user:s3cret@h1:1/3", "database 0"},
		{"redis-cluster://user:s3cret@h1:1/0/1", "path"},
		{"redis-cluster://user:s3cret@h1:1?master_name=m", "redis-sentinel"},
		{"redis-cluster://user:s3cret@h1:1?sentinel_password=s3cret", "redis-sentinel"},
		{"redis-cluster://user:s3cret@h1:1#x", "fragment"},
		{"redis-cluster://user:s3#cret@h1:1", "percent-encode"},
		{"redis-cluster://user:s3/cret@h1:1", "percent-encode"},
		{"redis-sentinel://user:s3?cret@h1:1", "percent-encode"},
		{"redis://user:s3/cret@h1:1", "percent-encode"},
		{"rediss://user:s3?cret@h1:1", "percent-encode"},
		{"redis-cluster://user:s3cret@a b:1", "want host:port"},
		{"redis-cluster://user:s3cret@h1:1,[::1:2", "want host:port"},
	} {
		_, err := clientOptions(tc.url, DefaultOpTimeout)
		if err == nil {
			t.Errorf("clientOptions(%q) succeeded", tc.url)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("clientOptions(%q) = %v, want it to mention %q", tc.url, err, tc.want)
		}
		if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "cret") {
			t.Errorf("clientOptions(%q): error leaks the password: %v", tc.url, err)
		}
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"redis://u:pw@h:1/0":                   "redis://u:xxxxx@h:1/0",
		"redis://h:1/0?pool_size=3":            "redis://h:1/0?pool_size=3",
		"unix:///run/r.sock?db=1":              "unix:///run/r.sock?db=1",
		"redis-cluster://u:pw@[::1]:1,[::1]:2": "redis-cluster://u:xxxxx@[::1]:1,[::1]:2",
		"redis-sentinel://:pw@h1,h2/0?master_name=m&sentinel_password=sp&x=1": "redis-sentinel://:xxxxx@h1,h2/0?master_name=m&sentinel_password=xxxxx&x=1",
		"redis-sentinel://h1?Sentinel_Password=sp":                            "redis-sentinel://h1?Sentinel_Password=xxxxx",
		"redis://u:p/w@h:1/0": "redis://xxxxx@h:1/0",
		"redis://u:p#w@h:1":   "redis://xxxxx@h:1",
		"not a url":           "(unparsable URL)",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}
