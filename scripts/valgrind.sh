#!/bin/sh
# Run every unit test program (UNIT_TESTS in Makefile.am) under valgrind
# memcheck.  A program fails on a failed check, on any memcheck error
# (invalid read or write, use of uninitialised memory, bad free, fd or
# syscall misuse) or on a definite leak; "possibly lost" and "still
# reachable" blocks are reported in the logs but do not fail it.
#
# It builds like scripts/test (gcc, --enable-werror, no sanitizers: ASan
# and valgrind cannot share a process) in the same build/ directory, so
# after scripts/test it only runs.  The tests run with CK_FORK=no: check
# then runs every test in the one process valgrind watches, and the leak
# check at exit covers the whole program.  Processes the tests or the
# code under test start (exec exporter scripts, hledger, the daemon) are
# not traced; a fork that does not exec stays under valgrind and is
# checked too.
#
# Prints one line per program and exits non-zero if any failed.  The
# full reports are kept in BUILDDIR/valgrind/<program>.<pid>.log.
# Usage: [VALGRIND_BUILDDIR=dir] [VALGRIND_TESTS="check_util check_jwt"]
#     [VALGRIND_TIMEOUT=seconds] scripts/valgrind.sh
set -e
top=$(cd "$(dirname "$0")/.." && pwd)
dir=${VALGRIND_BUILDDIR:-"$top/build"}
limit=${VALGRIND_TIMEOUT:-1800}

"$top/scripts/deps.sh" test
"$top/scripts/build.sh" "$dir" --enable-werror
cd "$dir"

# The unit test programs and the files "make check" builds for them,
# as this build's Makefile names them (Makefile.am is the one list).
. "$top/scripts/checkrun.sh"
progs=""
if [ -n "${VALGRIND_TESTS:-}" ]; then
	for t in $VALGRIND_TESTS; do
		progs="$progs tests/unit/$t"
	done
else
	progs=$(mkvar UNIT_TESTS)
fi
# shellcheck disable=SC2046,SC2086
make -j"$(nproc)" $progs $(mkvar check_DATA) >make-valgrind.out 2>&1 ||
    { cat make-valgrind.out; exit 1; }

# What AM_TESTS_ENVIRONMENT gives the tests under "make check".
RS_BINARY="$dir/refundsync"
RS_SRCDIR="$top"
RS_SHARED="${RS_SHARED_DIR:-$top/../shared}"
RS_BUILDDIR="$dir"
CK_FORK=no
# Tests that bound how long something takes allow for valgrind's
# slowness when this is set (CPU-bound library work runs 20-50 times
# slower under it).
RS_VALGRIND=1
export RS_BINARY RS_SRCDIR RS_SHARED RS_BUILDDIR CK_FORK RS_VALGRIND

logs="$dir/valgrind"
rm -rf "$logs"
mkdir -p "$logs"
passed=0
failed=0
for p in $progs; do
	name=$(basename "$p")
	start=$(date +%s)
	rc=0
	timeout -k 10 "$limit" valgrind --tool=memcheck --error-exitcode=1 \
	    --leak-check=full --errors-for-leak-kinds=definite \
	    --track-origins=no --num-callers=30 \
	    --log-file="$logs/$name.%p.log" \
	    "$p" >"$logs/$name.out" 2>&1 || rc=$?
	secs=$(($(date +%s) - start))
	# Every process of the program (the test and any fork that did not
	# exec) wrote its own log: add up their errors and definite leaks.
	errors=$(cat "$logs/$name".*.log |
	    sed -n 's/.*ERROR SUMMARY: \([0-9,]*\) error.*/\1/p' |
	    tr -d , | awk '{ n += $1 } END { print n + 0 }')
	lost=$(cat "$logs/$name".*.log |
	    sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' |
	    tr -d , | awk '{ n += $1 } END { print n + 0 }')
	check_verdict "$logs/$name.out" "$rc" "$limit"
	[ "$errors" -eq 0 ] || why="${why}$errors memcheck errors; "
	[ "$lost" -eq 0 ] || why="${why}$lost bytes definitely lost; "
	[ "$rc" -eq 0 ] || [ -n "$why" ] || why="exit $rc; "
	if [ -z "$why" ]; then
		passed=$((passed + 1))
		echo "valgrind: $name: ok, $checks checks, 0 errors," \
		    "0 bytes definitely lost (${secs}s)"
		continue
	fi
	failed=$((failed + 1))
	echo "valgrind: $name: FAILED: ${why%; } (${secs}s)"
	# The failed checks, then memcheck's reports (a failed check
	# leaks what its test held: look at those first).
	grep -E ':[FE]:' "$logs/$name.out" | head -n 20 || true
	for f in "$logs/$name".*.log; do
		grep -q 'ERROR SUMMARY: [1-9]' "$f" || continue
		awk '/^==[0-9]+== (Invalid|Conditional|Syscall|Use of)/ ||
		    /^==[0-9]+== (Mismatched|Source and dest|Argument)/ ||
		    /^==[0-9]+== (Jump to|Process terminating)/ ||
		    /are definitely lost in loss record/ { p = 1 }
		    p { print }
		    /^==[0-9]+== $/ { p = 0 }' "$f" | head -n 80
	done
	echo "valgrind: $name: full logs: $logs/$name.*"
done
echo "valgrind: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
