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

.PHONY: all deps build up test test-nonroot test-guest guest-image lint lint-funclen bench demo-image deb clean fuzz

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

# The guest's image (minutes from Debian's archive, the first time) is
# built while the Go tests run; the guest test boots it once they pass.
test: build test-nonroot
	go vet ./...
	@mkdir -p build; ( $(GUEST_IMAGE_BUILD) ) >build/guest-image.log 2>&1 & img=$$!; \
	go test -count=1 -timeout $(TEST_TIMEOUT) -p 2 ./...; rc=$$?; \
	if ! wait $$img; then echo "guest image build failed:"; tail -40 build/guest-image.log; exit 1; fi; exit $$rc
	$(MAKE) --no-print-directory test-guest

# berth installed from its package on a Debian 12 guest with systemd and
# pure cgroup v2, under qemu (test/guest).
test-guest: build
	go test -tags guest -count=1 -timeout $(GUEST_TIMEOUT) -v ./test/guest/

# The image is named by its script's hash, as test/guest looks it up.
GUEST_IMAGE = build/guest/$(shell sha256sum scripts/guest-image.sh | cut -c1-12)
GUEST_IMAGE_BUILD = if [ -e $(GUEST_IMAGE)/disk.img ]; then echo "guest image: cached in $(GUEST_IMAGE)"; \
	else sh scripts/guest-image.sh $(GUEST_IMAGE); fi
guest-image: deps
	@$(GUEST_IMAGE_BUILD)

# A Debian package: berth, its systemd units, /etc/berth/berth.env, bash completion.
deb: build
	@bash scripts/deb.sh $(BIN) build/deb

# The agent's sync loop over the simulated runtime needs no privilege:
# run as nobody, proving it (CI runs as root).
test-nonroot:
	@d=$$(mktemp -d) && chmod 755 $$d && go test -c -o $$d/agent.test ./internal/agent/ && \
	if [ "$$(id -u)" = 0 ]; then as="setpriv --reuid=65534 --regid=65534 --clear-groups"; else as=; fi; \
	(cd / && $$as $$d/agent.test -test.run '^TestSimAgent' -test.count=1); rc=$$?; rm -rf $$d; exit $$rc

lint: deps
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt: $$out"; exit 1; fi
	go vet ./...
	go vet -tags guest ./test/guest/ ./internal/runtime/
	staticcheck ./...
	staticcheck -tags guest ./test/guest/ ./internal/runtime/
	go run ./scripts/funclen $$(git ls-files '*.go')

# No function over 80 lines without a reason in its comment ("Long because ...").
lint-funclen:
	go run ./scripts/funclen $$(git ls-files '*.go')

# Fuzz targets as package:Target:budget. Plain `go test` runs each one's
# seed corpus; `make fuzz` (run by CI) fuzzes each for its budget, or for
# FUZZTIME when given. The budgets count executions (a few seconds each
# here): Go 1.26 can fail a time-bounded run with a spurious "context
# deadline exceeded" as it ends (go.dev/issue/75804).
FUZZ_TARGETS := ./api:FuzzParseSpecs:30000x ./internal/image/unpack:FuzzLayer:600x ./internal/image/unpack:FuzzLayerTar:600x \
	./internal/runtime/launch:FuzzPlanRoundTrip:5000x ./internal/runtime/launch:FuzzPlanReadC:5000x
FUZZTIME ?=

fuzz: deps
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; rest=$${t#*:}; fn=$${rest%%:*}; budget=$(if $(FUZZTIME),$(FUZZTIME),$${rest#*:}); \
		echo "fuzz: $$pkg $$fn for $$budget"; \
		go test $$pkg -run '^$$' -fuzz "^$$fn\$$" -fuzztime $$budget; \
	done

bench: build
	@bash scripts/deps.sh bench
	@bash scripts/bench.sh $(BIN)

clean:
	rm -rf bin build
