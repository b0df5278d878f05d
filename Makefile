# stripe-token-broker — build, run, test.
#
#   make          build build/stripe-token-broker
#   make run      install what is needed, start Redis and the Stripe simulator, serve the broker
#   make test     install what is needed, build (plain and ASan+UBSan), run every test
#   make fuzz     run every libFuzzer target for a few minutes (clang)
#   make sf-check the Salesforce metadata through the Salesforce CLI and Lightning Flow Scanner
#
# BUILD selects the output folder so that several builds can coexist.

VERSION   := 0.1.0
BUILD     ?= build
CC        ?= cc
PYTHON    ?= /usr/bin/python3
PKGS      := libh2o-evloop hiredis libcurl jansson openssl
SAN       ?=

# pkg-config is asked when a recipe first needs the flags, not when this file is parsed: on a
# fresh machine `make run` installs the -dev packages (deps) after parsing and before compiling.
# Each is evaluated once (the eval turns it into a simple variable); failing is a clear error.
pkg_config = $(or $(shell pkg-config $(1) $(PKGS) 2>/dev/null),$(error pkg-config cannot \
    find $(PKGS): run 'make deps' (or sh deploy/scripts/install-deps.sh) first))
PKG_CFLAGS = $(eval PKG_CFLAGS := $$(call pkg_config,--cflags))$(PKG_CFLAGS)
PKG_LIBS   = $(eval PKG_LIBS := $$(call pkg_config,--libs))$(PKG_LIBS)

CFLAGS  ?= -O2 -g
override CFLAGS  += -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wformat=2 \
           -DH2O_USE_LIBUV=0 -DBROKER_VERSION='"$(VERSION)"' -D_GNU_SOURCE \
           -Ibroker $(PKG_CFLAGS) -pthread $(SAN)
override LDLIBS  += $(PKG_LIBS) -lpthread -lm
# every symbol bound at start (full RELRO): the dynamic linker's lazy binding saves the vector
# registers on the stack when a function is first called, which can leave a request's bytes there
override LDFLAGS += $(SAN) -Wl,-z,relro,-z,now

SRCS      := $(shell find broker -name '*.c' | sort)
OBJS      := $(SRCS:%.c=$(BUILD)/obj/%.o)
LIB_OBJS  := $(filter-out $(BUILD)/obj/broker/main.o,$(OBJS))
CORE_OBJS := $(filter $(BUILD)/obj/broker/core/%,$(OBJS)) $(BUILD)/obj/broker/config.o

UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/unit/%)

.PHONY: all deps run test unit asan fuzz bench soak clean image image-test k8s-check sf-check
all: $(BUILD)/stripe-token-broker

# V=1 shows the full commands
Q := $(if $(V),,@)

$(BUILD)/stripe-token-broker: $(OBJS)
	@echo "  LD  $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/obj/%.o: %.c $(shell find broker -name '*.h')
	@mkdir -p $(dir $@)
	@echo "  CC  $<"
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<

# /openapi.yaml is compiled into the binary
$(BUILD)/obj/broker/routes/ops.o: proto/openapi.yaml

$(BUILD)/unit/%: tests/unit/%.c $(LIB_OBJS)
	@mkdir -p $(dir $@)
	@echo "  CC  $@"
	$(Q)$(CC) $(CFLAGS) -Itests/unit -o $@ $< $(LIB_OBJS) $(LDFLAGS) $(LDLIBS) -lcmocka

unit: $(UNIT_BINS)

# test_wipe scans every block the broker's own code frees or reallocs for a secret
$(BUILD)/unit/test_wipe: override LDFLAGS += -Wl,--wrap=malloc,--wrap=free,--wrap=realloc

# The same binary under AddressSanitizer and UndefinedBehaviorSanitizer.
asan:
	$(MAKE) BUILD=build-asan CFLAGS='-O1 -g -fno-omit-frame-pointer' \
	    SAN='-fsanitize=address,undefined -fno-sanitize-recover=undefined' all unit

deps:
	@sh deploy/scripts/install-deps.sh

# run, bench and soak install first, then build in a new make (as test does), so that nothing
# of the build depends on what was installed while this one ran; DEMO_SMOKE=1 make run starts
# everything, checks the setup page and getAccessToken, and stops (tests/firstrun).
run: deps
	@$(MAKE) --no-print-directory all
	@BROKER_BIN='$(abspath $(BUILD))/stripe-token-broker' sh deploy/scripts/run-demo.sh

# tests/run.sh ends with the one summary line; the container image test runs first
# (when podman and buildah are installed, as .ci/run does) and is counted there.
NPROC := $(shell nproc 2>/dev/null || echo 1)

test:
	@sh deploy/scripts/install-deps.sh test
	@$(MAKE) --no-print-directory -j$(NPROC) all unit
	@$(MAKE) --no-print-directory -j$(NPROC) asan
	@sh tests/run.sh

# The container image (podman, from the Dockerfile unchanged) and its smoke test.
image:
	@sh deploy/image/build.sh

image-test: image
	@sh deploy/image/test.sh

k8s-check: all
	@sh tests/k8s/run.sh

# The Salesforce metadata through the Salesforce CLI and Lightning Flow Scanner (installs them
# with npm into tests/salesforce/node_modules: about 2 minutes cold; CI runs it after make test).
sf-check:
	@sh tests/salesforce/sf-check.sh

fuzz:
	@sh tests/fuzz/run.sh 180

bench: deps
	@$(MAKE) --no-print-directory all
	@sh tests/bench/run.sh

# Only the Stripe proxy phase of `make bench` (h2o playing Stripe, direct and behind nginx),
# on ORGS orgs (default 100): writes tests/bench/proxy-results.md
.PHONY: bench-proxy
bench-proxy: deps
	@$(MAKE) --no-print-directory all
	@BENCH_ONLY=proxy ORGS=$${ORGS:-100} sh tests/bench/run.sh

# 10 minutes of mixed traffic on three replicas (one under ASan) with Redis restarts
soak: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory asan
	@SOAK_SECONDS=$${SOAK_SECONDS:-600} sh tests/soak/run.sh

# The mutation score (not part of `make test`): every mutant of tests/mutants/mutants.txt
# built in a scratch copy and run against the test that must catch it (tests/mutants/run.py;
# MUTANTS="name …" runs some, MUTANTS_JOBS=N runs N at a time).
.PHONY: mutants
mutants: all unit
	@$(PYTHON) tests/mutants/run.py -j $${MUTANTS_JOBS:-1} $${MUTANTS:-}

clean:
	rm -rf build build-*
