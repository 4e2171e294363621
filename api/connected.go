package api

import "github.com/stickyd/stickyd/store"

// exportJSON is a binding as export writes it and import reads it: what
// the binding is, not whether its client happens to be connected.
type exportJSON struct {
	ClientID    string `json:"client_id"`
	ClientIDB64 string `json:"client_id_b64"`
	Server      string `json:"server"`
	TTLSeconds  int64  `json:"ttl_seconds"`
	Pinned      bool   `json:"pinned"`
}

func toExportJSON(b store.Binding) exportJSON {
	j := toBindingJSON(b)
	return exportJSON{ClientID: j.ClientID, ClientIDB64: j.ClientIDB64, Server: j.Server, TTLSeconds: j.TTLSeconds, Pinned: j.Pinned}
}
