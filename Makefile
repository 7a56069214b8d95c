# Thin wrapper around meson/ninja; the build itself is meson.build.
#
#   make          build build/ (gcc, debugoptimized)
#   make check    test in build/ and in build-asan/ (clang, ASan+UBSan);
#                 ends with "N passed, N failed"
#   make bench    release tree build-release/ and scripts/bench.sh
#   make demo     the end-to-end demo
#   make clean    remove every build tree
#   make deps     install missing Debian packages (every target does this)
#
# TESTARGS are passed to `meson test`, e.g. make check TESTARGS='--suite unit'.

SHELL := /bin/bash
TESTARGS ?=

.PHONY: all build check bench demo clean deps

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

demo: build
	@bash scripts/demo.sh build

clean: deps
	rm -rf build build-asan build-release
