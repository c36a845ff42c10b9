# ordertrack: six composable filters over one static library.
.SUFFIXES:

VERSION   = 0.1.0
# SPDX: no licence has been granted (the repository has no licence file), so all rights are
# reserved; the image's org.opencontainers.image.licenses label and its SBOM say the same.
LICENSE   = LicenseRef-Proprietary
PREFIX   ?= /usr/local
BINDIR    = $(PREFIX)/bin
MANDIR    = $(PREFIX)/share/man
PKGS      = rdkafka hiredis libpq jansson libmicrohttpd nettle libcurl grpc libprotobuf-c

CC       ?= cc
WARN      = -Wall -Wextra -Wpedantic -Wshadow -Wformat=2 -Wstrict-prototypes
# lib/ in folders by layer, lowest first: a folder's code includes only its own folder's
# headers and those of the folders before it (scripts/check-layers holds it to that).
#   core    errors, text, ids, time, logging, tracing, metrics, signals, config, pool, breaker
#   model   order states and statuses, record outcomes, the event envelope, event types, topics
#   store   PostgreSQL and its migrations, Redis, the cluster router, the pipe, the payment client
#   stream  stdio and Kafka in and out, the run loop, outbox, CDC, replay, topics, lag
#   saga    orders and inventory: the choreographed saga's steps
#   cache   the one order-status cache, its near cache and its one read order
#   http    the small server, health ports, the API and its routes, live streams, the page
#   rpc     the gRPC server (libgrpc, protobuf-c) and its services, from proto/
#   tool    what every tool does at start
LAYERS    = core model store stream saga cache http rpc tool
OT_CFLAGS = -std=c11 -D_GNU_SOURCE -O2 -g $(WARN) -MMD -MP -DOT_VERSION='"$(VERSION)"' \
            $(addprefix -Ilib/,$(LAYERS)) -Ibuild/proto $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
OT_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm
# Each tool loads only the libraries it calls: gRPC's are ot-serve's alone.
OT_LDFLAGS = -Wl,--as-needed
# Redis over TLS (rediss://) where hiredis has it: hiredis >= 1.0 with hiredis_ssl (Debian 12's
# 0.14 has not; such a build refuses rediss:// URLs with exit status 78). OpenSSL itself checks
# the server's name, which hiredis does not.
ifeq ($(shell pkg-config --exists hiredis_ssl openssl 2>/dev/null && echo yes),yes)
PKGS     += hiredis_ssl openssl
OT_CFLAGS += -DOT_HAVE_HIREDIS_SSL
endif
ifeq ($(WERROR),1)
OT_CFLAGS += -Werror
endif
ifneq ($(SANITIZE),)
OT_CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer
OT_LDFLAGS += -fsanitize=$(SANITIZE)
endif

TOOLS   = ot-place ot-reserve ot-consume ot-relay ot-cache ot-serve ot-pay
BINS    = $(addprefix bin/,$(TOOLS))
LIBSRC  = $(wildcard $(addsuffix /*.c,$(addprefix lib/,$(LAYERS))))
PROTO   = $(wildcard proto/*.proto)
PROTOOBJ = $(patsubst proto/%.proto,build/proto/%.pb-c.o,$(PROTO))
LIBOBJ  = $(patsubst lib/%.c,build/lib/%.o,$(LIBSRC)) build/lib/ot_sql.o build/lib/ot_page.o $(PROTOOBJ)
SQL     = $(sort $(wildcard lib/store/sql/*/*.sql))
UNITSRC = $(wildcard test/unit/test_*.c)
UNITS   = $(patsubst test/unit/%.c,build/test/%,$(UNITSRC))
FUZZSRC = $(wildcard test/fuzz/fuzz_*.c)
FUZZERS = $(patsubst test/fuzz/%.c,build/fuzz/%,$(FUZZSRC))
MANS    = $(wildcard man/*.1)
MANS7   = $(wildcard man/*.7)

all: $(BINS)

build/libordertrack.a: $(LIBOBJ)
	@mkdir -p $(@D)
	$(AR) rcs $@ $^

build/lib/%.o: lib/%.c
	@mkdir -p $(@D)
	$(CC) $(OT_CFLAGS) $(CFLAGS) -c -o $@ $<

# gRPC messages: C from proto/ by protoc-c (protobuf-c), compiled without our warnings (the
# generated code is not ours to change). What includes them waits for the headers.
build/proto/%.pb-c.c build/proto/%.pb-c.h: proto/%.proto
	@mkdir -p $(@D)
	protoc-c --c_out=build/proto -Iproto $<

build/proto/%.pb-c.o: build/proto/%.pb-c.c
	$(CC) -std=c11 -O2 -g $(shell pkg-config --cflags libprotobuf-c 2>/dev/null) $(CFLAGS) -c -o $@ $<

$(patsubst lib/%.c,build/lib/%.o,$(wildcard lib/rpc/*.c)): $(PROTOOBJ:.o=.h)

# Migrations live as .sql files and are compiled in, so a binary never looks for them at run time.
build/lib/ot_sql.c: $(SQL) scripts/embed-sql
	@mkdir -p $(@D)
	scripts/embed-sql $(SQL) > $@

build/lib/ot_sql.o: build/lib/ot_sql.c
	$(CC) $(OT_CFLAGS) $(CFLAGS) -c -o $@ $<

build/lib/ot_page.c: lib/http/page/index.html scripts/embed-page
	@mkdir -p $(@D)
	scripts/embed-page lib/http/page/index.html > $@

build/lib/ot_page.o: build/lib/ot_page.c
	$(CC) $(OT_CFLAGS) $(CFLAGS) -c -o $@ $<

build/cmd/%.o: cmd/%.c
	@mkdir -p $(@D)
	$(CC) $(OT_CFLAGS) $(CFLAGS) -c -o $@ $<

bin/%: build/cmd/%.o build/libordertrack.a
	@mkdir -p $(@D)
	$(CC) $(OT_LDFLAGS) $(LDFLAGS) -o $@ $^ $(OT_LIBS)

# The headers a test depends on (from its .d file) are prerequisites, not inputs.
build/test/%: test/unit/%.c build/libordertrack.a
	@mkdir -p $(@D)
	$(CC) $(OT_CFLAGS) $(CFLAGS) $(OT_LDFLAGS) $(LDFLAGS) -o $@ $(filter %.c %.a,$^) $(OT_LIBS) -lcmocka

# libFuzzer harnesses: the library again, built by clang with the fuzzer's coverage and
# ASan+UBSan, in a tree of its own so the gcc build is untouched.
FUZZ_CC    ?= clang
FUZZ_TIME  ?= 180
FUZZ       ?=
FUZZ_SAN    = -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
# clang also flags what gcc lets pass: the format MHD hands its log callback, and the GNU
# statement expressions inside librdkafka's RD_KAFKA_V_* macros.
FUZZ_CFLAGS = $(filter-out -O2,$(OT_CFLAGS)) -O1 -Wno-format-nonliteral -Wno-gnu-statement-expression \
              $(FUZZ_SAN)
FUZZLIBOBJ  = $(patsubst build/lib/%.o,build/fuzz/lib/%.o,$(LIBOBJ))

build/fuzz/lib/%.o: lib/%.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

build/fuzz/lib/ot_sql.o: build/lib/ot_sql.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

build/fuzz/lib/ot_page.o: build/lib/ot_page.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

build/fuzz/libordertrack.a: $(FUZZLIBOBJ)
	$(AR) rcs $@ $^

build/fuzz/fuzz_%: test/fuzz/fuzz_%.c build/fuzz/libordertrack.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< build/fuzz/libordertrack.a $(OT_LIBS)

fuzzers: $(FUZZERS)

# Clients the benchmarks drive (scripts/bench-sse): C, no library of ours.
build/tools/%: test/tools/%.c
	@mkdir -p $(@D)
	$(CC) $(OT_CFLAGS) $(CFLAGS) $(OT_LDFLAGS) $(LDFLAGS) -o $@ $<

# The gRPC fan-out client speaks through the gRPC core library, as ot-serve does.
build/tools/grpc-fanout: test/tools/grpc-fanout.c build/proto/ordertrack.pb-c.o
	@mkdir -p $(@D)
	$(CC) $(OT_CFLAGS) $(CFLAGS) $(OT_LDFLAGS) $(LDFLAGS) -o $@ $^ $(OT_LIBS)

# The payment client's command line (the bats tests drive lib/store/ot_stripe through it).
build/tools/stripe-call: test/tools/stripe-call.c build/libordertrack.a
	@mkdir -p $(@D)
	$(CC) $(OT_CFLAGS) $(CFLAGS) $(OT_LDFLAGS) $(LDFLAGS) -o $@ $(filter %.c %.a,$^) $(OT_LIBS)

tools: build/tools/fanout build/tools/grpc-fanout build/tools/stripe-call

# Each harness for FUZZ_TIME seconds, one after the other (scripts/fuzz run); the saved
# corpus of each, once through, in seconds and without services (scripts/fuzz replay).
# FUZZ=NAME... picks harnesses (ws, envelope, ...).
fuzz: $(FUZZERS)
	@FUZZ_TIME=$(FUZZ_TIME) scripts/fuzz run $(FUZZ)

fuzz-replay: $(FUZZERS)
	@scripts/fuzz replay $(FUZZ)

deps:
	@scripts/deps

units: $(UNITS)

check: deps
	@$(MAKE) --no-print-directory all units fuzzers build/tools/stripe-call
	@OT_LAYERS='$(LAYERS)' scripts/check $(UNITS)

demo: deps
	@$(MAKE) --no-print-directory all
	@scripts/demo

# The container image (Containerfile) with podman; the base from Debian's packages, once.
image:
	@scripts/image build

lint:
	mandoc -Tlint -Wwarning $(MANS) $(MANS7)

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man7
	install -m 0755 $(BINS) scripts/ot-courier $(DESTDIR)$(BINDIR)
	install -m 0644 $(MANS) $(DESTDIR)$(MANDIR)/man1
	$(if $(MANS7),install -m 0644 $(MANS7) $(DESTDIR)$(MANDIR)/man7)

clean:
	rm -rf build bin

.PHONY: all deps units check demo image lint install clean fuzzers fuzz fuzz-replay tools
-include $(wildcard build/*/*.d build/*/*/*.d build/fuzz/*/*.d build/fuzz/*/*/*.d)
