# stickyd: sticky sessions for MQTT behind HAProxy.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN     := bin/stickyd
export PATH := $(PATH):/usr/sbin:/sbin

STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.6.1

.PHONY: all build deps test test-haproxy-debian test-haproxy-versions test-short lint vet fuzz bench demo clean

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) .

# Installs haproxy, redis-server, redis-tools, mosquitto, mosquitto-clients,
# curl, openssl (TLS tests) and chromium (dashboard browser test) when missing.
deps:
	@deploy/install-deps.sh

# Everything: lint (tracked files, gofmt, vet, staticcheck), unit, contract and end-to-end tests against the real
# haproxy, redis-server and mosquitto. A missing program fails, never skips.
# Then the HAProxy-dependent tests again on Debian trixie's HAProxy 3.0.11.
test: deps lint
	STICKYD_REQUIRE_BINARIES=1 $(GO) test -race -count=1 -timeout 30m ./...
	$(MAKE) test-haproxy-debian

# ./haproxy and ./internal/e2e (no -race) with HAProxy 3.0.11 first on
# PATH, built once from Debian trixie's source package through apt
# (deploy/haproxy-debian.sh: adds the deb-src entry, verifies the tarball
# against the signed index, installs missing build tools, caches the build).
test-haproxy-debian:
	bin=$$(deploy/haproxy-debian.sh) && deploy/haproxy-versions.sh "$$bin"

# The same against any HAProxy builds: make test-haproxy-versions
# HAPROXY_BINS="/opt/haproxy-2.8/haproxy /opt/haproxy-3.2/haproxy"
HAPROXY_BINS ?=
test-haproxy-versions:
	deploy/haproxy-versions.sh $(HAPROXY_BINS)

# Unit tests only: no external programs needed.
test-short:
	$(GO) test -short -count=1 ./...

# No build output in git, gofmt, vet and staticcheck (pinned; `go run`
# fetches it through the module proxy, checksums verified).
lint:
	deploy/check-tracked.sh
	@test -z "$$(gofmt -l .)" || (gofmt -l . && echo "gofmt needed" && exit 1)
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

vet: lint

# Coverage-guided fuzzing of every decoder of outside bytes, FUZZTIME each
# (their seed corpora run in `make test`): SPOE frames, SPOE messages and
# arguments, API client-id paths, the configuration loader, the Runtime
# API's answers.
FUZZTIME ?= 60s
FUZZ_TARGETS := ./internal/spop:FuzzValidateFrame ./spoe:FuzzFillQuery ./spoe:FuzzDecideMessages \
	./api:FuzzClientIDPath ./config:FuzzParse ./haproxy:FuzzParseServersState
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "== $${t#*:} ($${t%%:*}, $(FUZZTIME))"; \
		$(GO) test $${t%%:*} -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME); \
	done

# Benchmarks (deploy/bench/README.md), about 6 minutes: the hot-path
# micro-benchmarks (ns/op, allocs/op, into bench.out: compare runs with
# benchstat), then HAProxy's native stick table, stickyd on memory and on
# Redis, and round robin side by side under a reconnect storm, and memory at
# a million bindings: a table on stdout and in bin/bench-results.md.
# BENCH_ARGS passes flags to the latter, e.g. BENCH_ARGS="--scale 0 --cycles 2".
bench: deps build
	STICKYD_REQUIRE_BINARIES=1 $(GO) test -run '^$$' -bench . -benchmem -count 6 -benchtime 200ms ./agent ./store/... ./haproxy | tee bench.out
	$(GO) run ./deploy/bench --stickyd $(BIN) --out bin/bench-results.md $(BENCH_ARGS)

# The whole stack in the foreground: two mosquitto brokers, stickyd on the
# embedded store, HAProxy on the generated configuration. Ctrl-C stops it.
demo: deps build
	deploy/local/run.sh

clean:
	rm -rf bin bench.out
