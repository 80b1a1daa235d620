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
# The guest test builds a Debian guest from the archive on its first run (cached in build/guest/).
GUEST_TIMEOUT ?= 40m

.PHONY: all deps build up test test-unit test-guest lint bench demo-image deb clean

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
	$(MAKE) test-guest

# berth installed from its package on a Debian 12 guest with systemd and
# pure cgroup v2, under qemu (test/guest).
test-guest: build
	go test -tags guest -count=1 -timeout $(GUEST_TIMEOUT) -v ./test/guest/

# A Debian package: berth, its systemd units, /etc/berth/berth.env, bash completion.
deb: build
	@bash scripts/deb.sh $(BIN) build/deb

lint: deps
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt: $$out"; exit 1; fi
	go vet ./...
	go vet -tags guest ./test/guest/
	staticcheck ./...
	staticcheck -tags guest ./test/guest/

bench: build
	@bash scripts/deps.sh bench
	@bash scripts/bench.sh $(BIN)

clean:
	rm -rf bin build
