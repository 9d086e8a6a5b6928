#!/bin/sh
# Collect every layer the suite's layer builders make (ocibuild.build with
# STRATA_SAVE_LAYERS) into corpus.tar.gz, the seeds of the differential
# test against Go's archive/tar. Run after adding hostile-layer tests:
#   tests/gotar/harvest.sh        (needs a build, like tests/run.sh)
set -eu
cd "$(dirname "$0")/../.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mkdir "$out/layers" "$out/tmp"
STRATA_SAVE_LAYERS="$out/layers" TMPDIR="$out/tmp" \
STRATA_BUILD=${STRATA_BUILD:-$PWD/build-asan} \
	/usr/bin/python3 -m pytest -q -p no:cacheprovider \
	tests/integration/test_hostile_layers.py \
	tests/integration/test_p9_grafts.py \
	tests/integration/test_verify.py \
	tests/integration/test_whiteout_tables.py >/dev/null || true
# the tars, not their gzip or zstd blobs (the crafted cases cover gzip
# framing); none over 1 MiB (a few bomb tests: zeros, slow to compare)
find "$out/layers" -type f -size -1025k | sort | tar --sort=name --mtime=@0 \
	--owner=0 --group=0 --numeric-owner -C "$out/layers" \
	-cf - --transform 's,.*/,,' -T - | gzip -9n > tests/gotar/corpus.tar.gz
echo "$(tar tzf tests/gotar/corpus.tar.gz | wc -l) layers in tests/gotar/corpus.tar.gz"
