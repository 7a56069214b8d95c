# Thin wrapper around meson/ninja; the build itself is meson.build.
#
#   make          build build/ (gcc, debugoptimized)
#   make check    test in build/ and in build-asan/ (clang, ASan+UBSan);
#                 ends with "N passed, N failed"
#   make bench    release tree build-release/ and scripts/bench.sh
#   make fuzz     libFuzzer tree build-fuzz/; run every target FUZZ_SECONDS
#                 (default 60) seconds, FUZZ_TARGETS to pick some; fails on
#                 any crash, leak, timeout or sanitizer report (fuzz/README.md)
#   make fuzz-corpus  regenerate the seed corpora in fuzz/corpus/
#   make demo     the end-to-end demo
#   make clean    remove every build tree
#   make deps     install missing Debian packages (every target does this)
#
# TESTARGS are passed to `meson test`, e.g. make check TESTARGS='--suite unit'.

SHELL := /bin/bash
TESTARGS ?=
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=

.PHONY: all build check bench demo clean deps fuzz fuzz-corpus

all: build

deps:
	@bash scripts/deps.sh

build: deps
	@CC=gcc bash scripts/build.sh build -Dbuildtype=debugoptimized

check: deps
	@bash scripts/check.sh $(TESTARGS)

bench: deps
	@CC=gcc bash scripts/build.sh build-release -Dbuildtype=release -Dwerror=false
	@bash scripts/bench.sh

fuzz: deps
	@FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/fuzz.sh $(FUZZ_TARGETS)

fuzz-corpus: deps
	@bash fuzz/gen-corpus.sh

demo: build
	@bash scripts/demo.sh build

clean: deps
	rm -rf build build-asan build-release build-fuzz
