#!/bin/sh
# The whole test suite: C unit tests, a short fuzzing run (build-fuzz/, clang)
# and pytest integration tests, against a build with AddressSanitizer and
# UndefinedBehaviorSanitizer (build-asan/).
#   tests/run.sh [PYTEST_ARGS...]
# Needs root (mounts) and the packages in tests/packages.txt.
set -eu
cd "$(dirname "$0")/.."
build=${STRATA_TEST_BUILD:-build-asan}
if [ ! -f "$build/build.ninja" ]; then
	meson setup "$build" -Db_sanitize=address,undefined -Db_lundef=false \
		--buildtype=debug >/dev/null
fi
ninja -C "$build" >/dev/null
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export STRATA_BUILD="$PWD/$build"
# every test works under its own temporary directory, so the mounts it
# leaves behind are told apart from other people's on a shared machine
# (lower case: podman takes oci:PATH apart as an image name; 0755: some
# tests mount as nobody below it)
TMPDIR=${TMPDIR:-/tmp}/strata-tests-$(date +%s)-$$
mkdir -m 0755 "$TMPDIR"
export TMPDIR
count_mounts() {
	awk -v d="$TMPDIR/" '$3 ~ /^fuse/ && index($2, d) == 1' /proc/self/mounts |
		grep -c stratafs || true
}
before=$(count_mounts)
status=0
meson test -C "$build" --print-errorlogs || status=1
# a short fuzzing run of every harness from its saved corpus (tests/fuzz),
# two harnesses at a time (one core each on a 2-core machine)
fuzz_secs=${STRATA_FUZZ_SECONDS:-8}
if [ "$fuzz_secs" -gt 0 ]; then
	rm -rf build-fuzz/findings-run
	FUZZ_SEED=1 FUZZ_FINDINGS=build-fuzz/findings-run FUZZ_PARALLEL=2 \
		tests/fuzz/run.sh "$fuzz_secs" 2>"$TMPDIR/fuzz.log" || {
		grep -v '^#' "$TMPDIR/fuzz.log" >&2
		status=1
	}
fi
# pytest-xdist (python3-pytest-xdist): STRATA_TEST_JOBS workers (default
# 2), each taking whole files (--dist loadfile: a file's module fixtures are
# made once); much of the time is spent waiting on podman, umoci, fsync.
# STRATA_TEST_JOBS=0, or no xdist, runs the files one after another.
jobs=${STRATA_TEST_JOBS:-2}
xdist=
if [ "$jobs" -gt 0 ]; then
	if /usr/bin/python3 -c 'import xdist' 2>/dev/null; then
		xdist="-n $jobs --dist loadfile"
	else
		echo "pytest-xdist is missing: the tests run one at a time" >&2
	fi
fi
/usr/bin/python3 -m pytest tests/integration -q -p no:cacheprovider \
	--durations=25 $xdist "$@" || {
	rc=$?
	# 5 = no tests collected: that is a failure of the suite too
	status=1
	echo "pytest exited with $rc" >&2
}
leftover=$(( $(count_mounts) - before ))
if [ "$leftover" -gt 0 ]; then
	echo "tests left $leftover stratafs mounts behind:" >&2
	awk -v d="$TMPDIR/" '$3 ~ /^fuse/ && index($2, d) == 1 { print "  " $2 }' \
		/proc/self/mounts >&2
	status=1
else
	rm -rf "$TMPDIR"
fi
exit $status
