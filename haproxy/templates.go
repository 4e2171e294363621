package haproxy

import (
	"embed"
	"strings"
	"text/template"

	"github.com/stickyd/stickyd/config"
)

// The generated files are assembled from one template per section, so each
// concern (frontend rules, backend, fallback, agents, SPOE) reads alone.
//
//go:embed templates/*.tmpl
var templateFS embed.FS

var funcs = template.FuncMap{
	"ms":  ms,
	"add": func(a, b int) int { return a + b },
	"keyField": func(b config.Backend) string {
		if b.Key == config.KeyUsername {
			return "username"
		}
		return "client_identifier"
	},
	"join": strings.Join,
	// A unix socket agent needs no name resolution.
	"isUnix": func(a string) bool { return config.UnixPath(a) != "" },
	"rank":   failOpenRank,
}

// mainLayout orders the sections of haproxy.cfg.
const mainLayout = `{{define "haproxy.cfg"}}{{template "global" .}}{{template "defaults" .}}
{{- range .Backends}}
{{template "frontend" ($.ForBackend .)}}{{template "backend" ($.ForBackend .)}}{{template "fallback" ($.ForBackend .)}}{{template "connected" ($.ForBackend .)}}
{{- end}}
{{template "agents" .}}{{end}}`

var templates = template.Must(template.Must(template.New("").Funcs(funcs).ParseFS(templateFS, "templates/*.tmpl")).Parse(mainLayout))
