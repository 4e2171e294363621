package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadToken(t *testing.T) {
	base := strings.Replace(example, `api_token: ""`, `api_token: "admin-token-0123456789"`, 1)
	p := filepath.Join(t.TempDir(), "read")
	if err := os.WriteFile(p, []byte("reader-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(strings.NewReader(base+"api_read_token_file: "+p+"\n"), noEnv)
	if err != nil || cfg.APIReadToken != "reader-token-0123456789" {
		t.Fatalf("read token %q, %v", cfg.APIReadToken, err)
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"without admin token", example + "api_read_token: r\n", "api_read_token: needs api_token too"},
		{"same as admin", base + "api_read_token: admin-token-0123456789\n", "api_read_token: must differ from api_token"},
		{"too short", base + "api_read_token: short\n", "api_read_token: the token is 5 bytes, want at least 16"},
		{"both forms", base + "api_read_token: r\napi_read_token_file: " + p + "\n", "set api_read_token or api_read_token_file, not both"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tc.yaml), noEnv)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}
