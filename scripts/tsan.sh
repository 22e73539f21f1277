#!/bin/sh
# Run the check programs (the unit and integration tests and the crash
# harness: check_PROGRAMS in Makefile.am) under ThreadSanitizer.  A
# program fails on a failed check or on any ThreadSanitizer report (a
# data race, a use after free across threads, a lock-order inversion, a
# signal-unsafe call in a handler).
#
# It builds with clang, -fsanitize=thread -g -O1 and --enable-werror in
# its own directory (build-tsan/: TSan, ASan and valgrind cannot share a
# process), so after a first run it only runs.  The integration tests
# and the crash harness start that build's daemon and sandbox, so they
# run instrumented too; every process writes its reports to a file of
# its own.  halt_on_error=0: a run reports every race, not the first.
# No suppression file: the whole suite runs clean without one
# (docs/robustness.md says why the uninstrumented libraries report
# nothing).  Processes that are not this build (exec exporter scripts,
# hledger, bean-check, curl) are not checked.
#
# Prints one line per program and exits non-zero if any failed.  The
# reports are kept in BUILDDIR/tsan/<program>.<pid>, the tests' output
# in BUILDDIR/tsan/<program>.out.
# Usage: [TSAN_BUILDDIR=dir] [TSAN_TESTS="tests/unit/check_jwt ..."]
#     [TSAN_TIMEOUT=seconds] scripts/tsan.sh
# Extra TSAN_OPTIONS in the environment are added after this script's.
set -e
top=$(cd "$(dirname "$0")/.." && pwd)
dir=${TSAN_BUILDDIR:-"$top/build-tsan"}
limit=${TSAN_TIMEOUT:-1800}

# clang and its sanitizer runtimes come with the test packages.
"$top/scripts/deps.sh" test
"$top/scripts/build.sh" "$dir" --enable-werror CC=clang \
    CFLAGS='-fsanitize=thread -g -O1' LDFLAGS='-fsanitize=thread'
cd "$dir"

# The check programs and the files "make check" builds for them, as this
# build's Makefile names them (Makefile.am is the one list).
. "$top/scripts/checkrun.sh"
progs=${TSAN_TESTS:-$(mkvar check_PROGRAMS)}
# shellcheck disable=SC2046,SC2086
make -j"$(nproc)" $progs $(mkvar check_DATA) tests/sandbox/wix-sandbox \
    >make-tsan.out 2>&1 || { cat make-tsan.out; exit 1; }

# TSan maps its shadow memory at fixed addresses; a kernel that
# randomises mmap() more than clang 14's runtime expects ("unexpected
# memory mapping") needs the run without address randomisation, which
# the daemons the tests start inherit.
run=""
if ! ./refundsync --version >/dev/null 2>&1; then
	run="setarch $(uname -m) -R"
	$run ./refundsync --version >/dev/null
fi

# What AM_TESTS_ENVIRONMENT gives the tests under "make check".
RS_BINARY="$dir/refundsync"
RS_SRCDIR="$top"
RS_SHARED="${RS_SHARED_DIR:-$top/../shared}"
RS_BUILDDIR="$dir"
CK_DEFAULT_TIMEOUT=120
# Instrumented code runs 5 to 15 times slower: the per-test limits
# (CK_DEFAULT_TIMEOUT and tcase_set_timeout()) are stretched to match.
CK_TIMEOUT_MULTIPLIER=${CK_TIMEOUT_MULTIPLIER:-6}
export RS_BINARY RS_SRCDIR RS_SHARED RS_BUILDDIR CK_DEFAULT_TIMEOUT \
    CK_TIMEOUT_MULTIPLIER

logs="$dir/tsan"
rm -rf "$logs"
mkdir -p "$logs"
user_opts=${TSAN_OPTIONS:-}
passed=0
failed=0
for p in $progs; do
	name=$(basename "$p")
	start=$(date +%s)
	rc=0
	# exitcode=0: a report fails the program through its log below,
	# not through an exit status that check would take for a failed
	# test of its own.
	TSAN_OPTIONS="halt_on_error=0 exitcode=0 second_deadlock_stack=1"
	TSAN_OPTIONS="$TSAN_OPTIONS history_size=4 log_path=$logs/$name"
	TSAN_OPTIONS="$TSAN_OPTIONS $user_opts"
	export TSAN_OPTIONS
	# shellcheck disable=SC2086 # $run is a command line or empty
	timeout -k 10 "$limit" $run "./$p" >"$logs/$name.out" 2>&1 || rc=$?
	secs=$(($(date +%s) - start))
	reports=$(cat "$logs/$name".[0-9]* 2>/dev/null |
	    grep -c '^WARNING: ThreadSanitizer:' || true)
	check_verdict "$logs/$name.out" "$rc" "$limit"
	[ "$reports" -eq 0 ] || why="${why}$reports ThreadSanitizer reports; "
	[ "$rc" -eq 0 ] || [ -n "$why" ] || why="exit $rc; "
	if [ -z "$why" ]; then
		passed=$((passed + 1))
		echo "tsan: $name: ok, $checks checks, 0 reports (${secs}s)"
		continue
	fi
	failed=$((failed + 1))
	echo "tsan: $name: FAILED: ${why%; } (${secs}s)"
	grep -E ':[FE]:' "$logs/$name.out" | head -n 20 || true
	cat "$logs/$name".[0-9]* 2>/dev/null |
	    grep '^SUMMARY: ThreadSanitizer' | sort | uniq -c | head -n 20 ||
	    true
	echo "tsan: $name: full reports: $logs/$name.*"
done
echo "tsan: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
