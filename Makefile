# tokenpolicy build.  `make` builds the C core for every Lua in LUA_VERSIONS;
# `make test`, `make demo`, `make bench` and `make asan` install what is
# missing first (see `deps`), so each works on a fresh Debian machine.

LUA_VERSIONS := 5.4 5.3
CC      ?= cc
WARN    := -std=c99 -Wall -Wextra -pedantic -Wshadow -Wmissing-prototypes -Werror
CFLAGS  ?= -O2 -g
DEFS    := -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE
LIBS    := -lcjose -ljansson -lyajl -lcurl -lhiredis -lssl -lcrypto
SOURCES := $(wildcard csrc/*.c)
HEADERS := $(wildcard csrc/*.h)

# Debian packages the build, the specs and the demo need.
DEB_PACKAGES := liblua5.4-dev liblua5.3-dev lua5.4 lua5.3 libcjose-dev \
	libjansson-dev libyajl-dev libcurl4-openssl-dev libssl-dev lua-busted lua-check luarocks openssl nodejs lua-yaml \
	lua-argparse bsdutils postgresql lua-dbi-postgresql haproxy curl groff-base libhiredis-dev redis-server lua-ldoc \
	$(CI_PACKAGES)

BUILD   ?= build
MODULES := $(foreach v,$(LUA_VERSIONS),$(BUILD)/$(v)/tokenpolicy/core.so)

.PHONY: all deps test spec spec-valgrind-skipped lint docs asan valgrind werror cppcheck fuzz fuzz-build bench \
	bench-migrate bench-haproxy bench-fleet demo clean install uninstall

all: $(MODULES)

# One rule per Lua version: the same sources, that version's headers.
define module_rule
$(BUILD)/$(1)/tokenpolicy/core.so: $(SOURCES) $(HEADERS) Makefile
	@mkdir -p $$(dir $$@)
	$(CC) $(WARN) $(CFLAGS) $(EXTRA_CFLAGS) $(DEFS) -fPIC -shared -I/usr/include/lua$(1) \
		-o $$@ $(SOURCES) $(LIBS) $(EXTRA_LDFLAGS)
endef
$(foreach v,$(LUA_VERSIONS),$(eval $(call module_rule,$(v))))

# Installs only what is missing; as a non-root user it prints the command.
deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; \
	done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "missing packages; run: sudo apt-get install -y" $$missing; exit 1; \
	fi; \
	echo "installing:" $$missing; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null

# ---- CI: `make test` is what .ci/run runs (docs/ci.md says what and why).
# The packages only CI's checks need.
CI_PACKAGES := valgrind clang cppcheck

# Every part below in turn, each timed, and one last line "N passed,
# N failed" over all of them (.ci/test).
test: deps
	@bash .ci/test

# Busted processes at once: most specs wait on peers and servers, so more
# than the cores; valgrind's are CPU-bound, so about the cores.
SPEC_JOBS     ?= 4
ASAN_JOBS     ?= 4
VALGRIND_JOBS ?= 3

# The whole suite, both Lua versions, in parallel (spec/run.sh).
spec: deps all
	@bash spec/run.sh -j $(SPEC_JOBS) $(BUILD) $(LUA_VERSIONS)

# Every Lua file in the repository, luacheck clean (.luacheckrc), and the
# command, whose Lua part follows the sh part it keeps in the global `_`.
LUA_FILES = $$(git ls-files '*.lua' 2>/dev/null | grep . || find . -name '*.lua' -not -path './build*' -not -path '*/node_modules/*')
lint: deps
	@luacheck -q --no-color $(LUA_FILES)
	@luacheck -q --no-color --globals _ -- bin/tokenpolicy

# The API reference: LDoc (config.ld) reads the doc comments of csrc/ and
# lua/tokenpolicy/ into $(BUILD)/docs.  LDoc reports most problems as
# warnings and still succeeds, so any line it prints beyond its three
# progress lines fails the target (spec/43-reference_spec.lua checks that
# every public function is in the result).
LDOC_PROGRESS := ^(reading configuration from |found master module|output written to )
docs: deps
	@rm -rf $(BUILD)/docs
	@out=$$(ldoc --fatalwarnings --testing -d $(BUILD)/docs . 2>&1); rc=$$?; \
	bad=$$(printf '%s\n' "$$out" | grep -Ev '$(LDOC_PROGRESS)' | grep .); \
	if [ $$rc != 0 ] || [ -n "$$bad" ]; then \
		printf '%s\n' "$$bad"; echo "make docs: LDoc warnings (status $$rc)"; exit 1; \
	fi; \
	echo "API reference: $(BUILD)/docs/index.html"

# The whole suite with AddressSanitizer and UBSan; the runtime is preloaded
# because the Lua interpreters themselves are not instrumented.
asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan CFLAGS='-O1 -g -fno-omit-frame-pointer' \
		EXTRA_CFLAGS='-fsanitize=address,undefined -fno-sanitize-recover=all' all
	@CC=$(CC) bash spec/run.sh -m asan -j $(ASAN_JOBS) -t "ASan+UBSan" build-asan $(LUA_VERSIONS)

# The whole suite under valgrind memcheck (definite leaks are errors), the
# suppressions in .ci/valgrind.supp, the specs it skips in .ci/valgrind-skip.txt.
valgrind: deps all
	@bash spec/run.sh -m valgrind -j $(VALGRIND_JOBS) $(BUILD) $(LUA_VERSIONS)

# The specs valgrind skips (.ci/valgrind-skip.txt), on the same normal build:
# with `make valgrind` every spec runs on that build once (CI runs these two,
# not `make spec`, and every spec again under `make asan`).
spec-valgrind-skipped: deps all
	@bash spec/run.sh -o .ci/valgrind-skip.txt -j $(SPEC_JOBS) -t "valgrind-skipped specs, plain" \
		$(BUILD) $(LUA_VERSIONS)

# gcc and clang, warnings as errors (WARN has -Werror): gcc builds $(BUILD),
# clang build/clang.
werror: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory CC=clang BUILD=build/clang all

# cppcheck (Debian's 2.10) on csrc/, once with each Lua's headers.  Its
# findings are fixed or suppressed with a reason: inline where they are
# (`cppcheck-suppress id ; why`), or for a whole check in .ci/cppcheck.supp.
# limits.h is a system header cppcheck does not read, and luaconf.h stops
# without LLONG_MAX: hence the two -D.
CPPCHECK_FLAGS := -q --error-exitcode=1 --enable=warning,style,performance,portability --std=c99 \
	--library=posix --platform=unix64 --inline-suppr --suppressions-list=.ci/cppcheck.supp \
	-DLLONG_MAX=9223372036854775807LL '-DLLONG_MIN=(-LLONG_MAX-1)'
cppcheck: deps
	@for v in $(LUA_VERSIONS); do \
		cppcheck $(CPPCHECK_FLAGS) $(DEFS) -Icsrc -I/usr/include/lua$$v csrc || exit 1; \
	done

# libFuzzer targets (docs/fuzzing.md): each fuzz/<target>.lua is one binary,
# fuzz/harness.c with the C core's sources under ASan and UBSan, run for
# FUZZ_SECONDS each on a copy of fuzz/corpus/<target>/ (FUZZ_JOBS at once);
# any crash fails.  Its own packages: clang, and libFuzzer's runtime.
FUZZ_PACKAGES := clang libclang-rt-14-dev
FUZZ_SECONDS  ?= 30
FUZZ_JOBS     ?= 2
FUZZ_TARGETS  ?= decode verify keys json duration rucio_cfg classify arvados denylist http cli
FUZZ_CC       := clang
FUZZ_FLAGS    := -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ_BINS     := $(foreach t,$(FUZZ_TARGETS),$(BUILD)/fuzz/$(t))

fuzz: deps
	@$(MAKE) --no-print-directory deps DEB_PACKAGES='$(FUZZ_PACKAGES)'
	@$(MAKE) --no-print-directory -j$(FUZZ_JOBS) fuzz-build
	@sh fuzz/run.sh $(BUILD)/fuzz $(FUZZ_SECONDS) $(FUZZ_JOBS) $(FUZZ_TARGETS)

# The core's objects once, then one small harness object and link per target.
FUZZ_OBJS := $(patsubst csrc/%.c,$(BUILD)/fuzz/obj/%.o,$(SOURCES))
fuzz-build: $(FUZZ_BINS)
.SECONDARY: $(FUZZ_OBJS)
$(BUILD)/fuzz/obj/%.o: csrc/%.c $(HEADERS) Makefile
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(WARN) $(FUZZ_FLAGS:-fsanitize=fuzzer,%=-fsanitize=fuzzer-no-link,%) $(DEFS) \
		-I/usr/include/lua5.4 -c -o $@ $<
$(BUILD)/fuzz/%: fuzz/harness.c $(FUZZ_OBJS) $(HEADERS) Makefile
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(WARN) $(FUZZ_FLAGS) $(DEFS) -I/usr/include/lua5.4 -DFUZZ_TARGET='"$*"' \
		-DFUZZ_ROOT='"$(CURDIR)"' -o $@ fuzz/harness.c $(FUZZ_OBJS) -llua5.4 $(LIBS)

bench: deps all $(BUILD)/bench/raw_openssl $(BUILD)/bench/decode_floor
	@LUA_PATH='lua/?.lua;lua/?/init.lua;bench/?.lua;;' LUA_CPATH='$(BUILD)/5.4/?.so;;' \
		lua5.4 bench/run.lua $(BUILD)/bench/raw_openssl $(BUILD)/bench/decode_floor

# The PostgreSQL store against a throw-away server: ROWS tokens (default
# 1,000,000), compared with psql and with the rake tasks' row-by-row way.
bench-migrate: deps all
	@LUA_PATH='lua/?.lua;lua/?/init.lua;spec/?.lua;bench/?.lua;;' LUA_CPATH='$(BUILD)/5.4/?.so;;' \
		lua5.4 bench/migrate.lua

# tokenpolicy in HAProxy against HAProxy's jwt_verify and Lua gateways
# (bench/haproxy/run.lua; DURATION=seconds per run, ROUNDS, EXPERIMENTS=1).
# Its own packages (gnuplot-nox: Debian's gnuplot without X, for the SVG).
BENCH_HAPROXY_PACKAGES := haproxy wrk lua-luaossl lua-cjson gnuplot-nox curl

bench-haproxy: deps all
	@$(MAKE) --no-print-directory deps DEB_PACKAGES='$(BENCH_HAPROXY_PACKAGES)'
	@LUA_PATH='lua/?.lua;lua/?/init.lua;bench/?.lua;;' LUA_CPATH='$(BUILD)/5.4/?.so;;' \
		lua5.4 bench/haproxy/run.lua $(BUILD)

# Revocation across a fleet of HAProxy gateways sharing one Redis denylist
# (bench/fleet.lua; ONLY=prmf, REVOCATIONS, DURATION, ROUNDS, ENTRIES).
BENCH_FLEET_PACKAGES := haproxy wrk redis-server lua-socket curl

bench-fleet: deps all $(BUILD)/bench/raw_openssl $(BUILD)/bench/decode_floor
	@$(MAKE) --no-print-directory deps DEB_PACKAGES='$(BENCH_FLEET_PACKAGES)'
	@LUA_PATH='lua/?.lua;lua/?/init.lua;bench/?.lua;;' LUA_CPATH='$(BUILD)/5.4/?.so;;' \
		lua5.4 bench/fleet.lua $(BUILD)

$(BUILD)/bench/raw_openssl: bench/raw_openssl.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) -O2 $(DEFS) -o $@ $< -lcrypto

# What base64url and JSON alone cost a token, for the ceiling bench prints.
$(BUILD)/bench/decode_floor: bench/decode_floor.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) -O2 $(DEFS) -o $@ $< -lcrypto -lyajl

demo: deps all
	@LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='$(BUILD)/5.4/?.so;;' lua5.4 examples/demo.lua

clean:
	rm -rf build build-asan

# ---- Install (docs/install.md).  The C core for every Lua in LUA_VERSIONS,
# every lua/tokenpolicy/**/*.lua, the command, the man pages (man/*.[0-9])
# and the docs, under $(DESTDIR)$(PREFIX): for PREFIX=/usr/local, the places
# Debian's lua5.4 and lua5.3 search by default, so the installed command
# needs no LUA_PATH.  Nothing is fetched and no path is compiled in.
# install writes every file it puts and every directory it creates to
# INSTALL_MANIFEST (paths without DESTDIR, so a staged tree can be moved);
# uninstall removes exactly those, directories only when empty.
PREFIX       ?= /usr/local
DESTDIR      ?=
BINDIR       ?= $(PREFIX)/bin
LUA_CMODDIR  ?= $(PREFIX)/lib/lua
LUA_MODDIR   ?= $(PREFIX)/share/lua
MANDIR       ?= $(PREFIX)/share/man
DOCDIR       ?= $(PREFIX)/share/doc/tokenpolicy
INSTALL_MANIFEST ?= $(PREFIX)/share/tokenpolicy/install-manifest
INSTALL_LUA  = $(shell cd lua && find tokenpolicy -type f -name '*.lua' | LC_ALL=C sort)
INSTALL_MAN  = $(wildcard man/*.[0-9])
INSTALL_DOCS = $(wildcard docs/*.md docs/*.svg)

# Shell functions of the install recipe: mkd DIR makes $(DESTDIR)DIR and
# lists each directory it had to create; put MODE SRC DIR [NAME] installs
# SRC as $(DESTDIR)DIR/NAME and lists it.
INSTALL_FUNCS = dest='$(DESTDIR)'; \
	mkd() { p=$$1; while [ -n "$$p" ] && [ ! -d "$$dest$$p" ]; do echo "d $$p" >>"$$list"; p=$${p%/*}; done; \
		mkdir -p "$$dest$$1"; }; \
	put() { n=$${4:-$$(basename "$$2")}; mkd "$$3"; install -m "$$1" "$$2" "$$dest$$3/$$n"; echo "f $$3/$$n" >>"$$list"; }

install: all
	@set -e; list=$$(mktemp); trap 'rm -f "$$list"' EXIT; $(INSTALL_FUNCS); \
	manifest='$(DESTDIR)$(INSTALL_MANIFEST)'; \
	if [ -f "$$manifest" ]; then cat "$$manifest" >>"$$list"; fi; \
	for v in $(LUA_VERSIONS); do \
		put 644 $(BUILD)/$$v/tokenpolicy/core.so '$(LUA_CMODDIR)'/$$v/tokenpolicy; \
		for f in $(INSTALL_LUA); do \
			put 644 lua/$$f '$(LUA_MODDIR)'/$$v/$$(dirname $$f); \
		done; \
	done; \
	put 755 bin/tokenpolicy '$(BINDIR)'; \
	for f in $(INSTALL_MAN); do put 644 $$f '$(MANDIR)'/man$${f##*.}; done; \
	for f in $(INSTALL_DOCS); do put 644 $$f '$(DOCDIR)'; done; \
	mkd "$$(dirname '$(INSTALL_MANIFEST)')"; echo 'f $(INSTALL_MANIFEST)' >>"$$list"; \
	LC_ALL=C sort -u "$$list" >"$$manifest"; chmod 644 "$$manifest"; \
	echo "installed tokenpolicy under $(DESTDIR)$(PREFIX) (the list: $$manifest)"

# Files first, then the directories install created, deepest first, each
# only if nothing else has been put in it since.
uninstall:
	@set -e; dest='$(DESTDIR)'; manifest="$$dest"'$(INSTALL_MANIFEST)'; \
	if [ ! -f "$$manifest" ]; then echo "tokenpolicy is not installed under $$dest$(PREFIX) (no $$manifest)"; exit 0; fi; \
	entries=$$(cat "$$manifest"); \
	echo "$$entries" | sed -n 's/^f //p' | while IFS= read -r f; do rm -f "$$dest$$f"; done; \
	echo "$$entries" | sed -n 's/^d //p' | LC_ALL=C sort -r | while IFS= read -r d; do \
		rmdir "$$dest$$d" 2>/dev/null || true; done; \
	echo "removed tokenpolicy from $$dest$(PREFIX)"
