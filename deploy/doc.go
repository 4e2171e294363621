// Package deploy holds no code: its tests check the packaging files beside
// it (docker/, systemd/, kubernetes/) against the configuration loader, the
// HAProxy config generator and, where installed, haproxy -c,
// systemd-analyze and kubectl kustomize. See README.md in this directory.
package deploy
