# berth: `make up` runs it, `make test` tests it, `make bench` measures it.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(HOME)/go/bin:$(PATH)
export CGO_ENABLED := 1

BIN      := bin/berth
DATA_DIR ?= /var/lib/berth
# The commit goes into the binary (berth version) when built from a checkout
# git can read; elsewhere (a tarball, a checkout git calls unsafe) it is left out.
GOFLAGS_BUILD := -trimpath $(shell git status --porcelain >/dev/null 2>&1 && echo -buildvcs=auto || echo -buildvcs=false)
TEST_TIMEOUT ?= 15m

.PHONY: all deps build up test test-unit lint fuzz bench demo-image clean

all: build

deps:
	@bash scripts/deps.sh

build: deps
	go build $(GOFLAGS_BUILD) -o $(BIN) ./cmd/berth

# The demo image is made offline from Debian's busybox-static, by berth itself.
demo-image: build
	@bash scripts/demo-image.sh $(BIN) $(DATA_DIR)

up: demo-image
	@bash scripts/up.sh $(BIN) $(DATA_DIR)

test: build
	go vet ./...
	go test -count=1 -timeout $(TEST_TIMEOUT) -p 2 ./...
	$(MAKE) fuzz

# Each fuzz target runs its seeds in go test, then here for a bounded time.
FUZZTIME ?= 10s
fuzz:
	go test -run '^$$' -fuzz '^FuzzPlanRoundTrip$$' -fuzztime $(FUZZTIME) ./internal/runtime/launch/
	go test -run '^$$' -fuzz '^FuzzPlanReadC$$' -fuzztime $(FUZZTIME) ./internal/runtime/launch/

lint: deps
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt: $$out"; exit 1; fi
	go vet ./...
	staticcheck ./...

bench: build
	@bash scripts/deps.sh bench
	@bash scripts/bench.sh $(BIN)

clean:
	rm -rf bin build
