#!/bin/sh
# Fuzz strata's parsers with libFuzzer (tests/fuzz/README.md).
#   tests/fuzz/run.sh [SECONDS] [NAME...]
# Builds build-fuzz/ with clang (-Dfuzz=true, ASAN+UBSAN) and runs each
# harness NAME (default: all in tests/fuzz/meson.build) for SECONDS each
# (default 0: until stopped), starting from the saved corpus
# tests/fuzz/corpus/NAME/. New inputs go to $FUZZ_FINDINGS/NAME/corpus,
# crashes to $FUZZ_FINDINGS/NAME/crashes (default build-fuzz/findings);
# the saved corpus is never written. Exits non-zero if a harness crashed.
# FUZZ_SEED fixes libFuzzer's -seed (0: random); FUZZ_JOBS runs that many
# workers per harness; FUZZ_PARALLEL runs that many harnesses at once.
set -eu
cd "$(dirname "$0")/../.."
secs=${1:-0}
[ $# -gt 0 ] && shift
build=${FUZZ_BUILD:-build-fuzz}
findings=${FUZZ_FINDINGS:-$build/findings}
if [ $# -eq 0 ]; then
	set -- $(sed -n "/^fuzz_harnesses = \[/,/^\]/s/^ *'\([a-z0-9_-]*\)',*$/\1/p" \
		tests/fuzz/meson.build)
fi
if [ ! -f "$build/build.ninja" ]; then
	CC=clang meson setup "$build" -Dfuzz=true -Db_sanitize=address,undefined \
		-Db_lundef=false --buildtype=debugoptimized >/dev/null
fi
targets=
for h in "$@"; do
	targets="$targets tests/fuzz/fuzz-$h"
done
ninja -C "$build" $targets >/dev/null
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fuzz_one() {
	mkdir -p "$findings/$1/corpus" "$findings/$1/crashes"
	echo "fuzz-$1: ${secs}s (0 = until stopped), findings in $findings/$1" >&2
	"$build/tests/fuzz/fuzz-$1" -max_total_time="$secs" \
		-seed="${FUZZ_SEED:-0}" -timeout=10 -rss_limit_mb=2048 \
		-max_len=65536 -print_final_stats=1 \
		${FUZZ_JOBS:+-jobs=$FUZZ_JOBS -workers=$FUZZ_JOBS} \
		-artifact_prefix="$findings/$1/crashes/" \
		"$findings/$1/corpus" "tests/fuzz/corpus/$1" || {
		echo "fuzz-$1: CRASH, input saved in $findings/$1/crashes/" >&2
		return 1
	}
}
# FUZZ_PARALLEL harnesses at a time (default 1), each for SECONDS
status=0
par=${FUZZ_PARALLEL:-1}
pids=
n=0
for h in "$@"; do
	fuzz_one "$h" &
	pids="$pids $!"
	n=$((n + 1))
	if [ "$n" -ge "$par" ]; then
		for p in $pids; do
			wait "$p" || status=1
		done
		pids=
		n=0
	fi
done
for p in $pids; do
	wait "$p" || status=1
done
exit $status
