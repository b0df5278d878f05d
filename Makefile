# stripe-token-broker — build, run, test.
#
#   make          build build/stripe-token-broker
#   make run      install what is needed, start Redis and the Stripe simulator, serve the broker
#   make test     install what is needed, build (plain and ASan+UBSan), run every test
#   make fuzz     run every libFuzzer target for a few minutes (clang)
#
# BUILD selects the output folder so that several builds can coexist.

VERSION   := 0.1.0
BUILD     ?= build
CC        ?= cc
PYTHON    ?= /usr/bin/python3
PKGS      := libh2o-evloop hiredis libcurl jansson openssl
SAN       ?=

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS  ?= -O2 -g
override CFLAGS  += -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wformat=2 \
           -DH2O_USE_LIBUV=0 -DBROKER_VERSION='"$(VERSION)"' -D_GNU_SOURCE \
           -Ibroker $(PKG_CFLAGS) -pthread $(SAN)
override LDLIBS  += $(PKG_LIBS) -lpthread -lm
override LDFLAGS += $(SAN)

SRCS      := $(shell find broker -name '*.c' | sort)
OBJS      := $(SRCS:%.c=$(BUILD)/obj/%.o)
LIB_OBJS  := $(filter-out $(BUILD)/obj/broker/main.o,$(OBJS))
CORE_OBJS := $(filter $(BUILD)/obj/broker/core/%,$(OBJS)) $(BUILD)/obj/broker/config.o

UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/unit/%)

.PHONY: all deps run test unit asan fuzz bench soak clean image image-test k8s-check
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

run: deps all
	@sh deploy/scripts/run-demo.sh

# tests/run.sh ends with the one summary line; the container image test runs first
# (when podman and buildah are installed, as .ci/run does) and is counted there.
test:
	@sh deploy/scripts/install-deps.sh test
	@$(MAKE) --no-print-directory all unit
	@$(MAKE) --no-print-directory asan
	@sh tests/run.sh

# The container image (podman, from the Dockerfile unchanged) and its smoke test.
image:
	@sh deploy/image/build.sh

image-test: image
	@sh deploy/image/test.sh

k8s-check: all
	@sh tests/k8s/run.sh

fuzz:
	@sh tests/fuzz/run.sh 180

bench: deps all
	@sh tests/bench/run.sh

# 10 minutes of mixed traffic on three replicas (one under ASan) with Redis restarts
soak: deps all asan
	@SOAK_SECONDS=$${SOAK_SECONDS:-600} sh tests/soak/run.sh

clean:
	rm -rf build build-*
