#!/bin/sh
# Build the libFuzzer targets (clang, --enable-fuzzing) in build-fuzz/ and
# run each for FUZZ_SECONDS (default 60) on a copy of its seed corpus in
# fuzz/corpus/<target>/.  A crash, leak, timeout or sanitizer report
# fails the run; the reproducer is kept as build-fuzz/crashes/<target>-*
# and can be replayed with: build-fuzz/fuzz/fuzz_<target> <file>
# Usage: [FUZZ_SECONDS=n] [FUZZ_TARGETS="money jwt"] [FUZZ_BUILDDIR=dir]
#     scripts/fuzz.sh
set -e
top=$(cd "$(dirname "$0")/.." && pwd)
dir=${FUZZ_BUILDDIR:-"$top/build-fuzz"}
secs=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-"jwt event refund money config page readback"}

"$top/scripts/deps.sh" test
"$top/scripts/build.sh" "$dir" --enable-fuzzing CC=clang
cd "$dir"
progs=""
for t in $targets; do
	progs="$progs fuzz/fuzz_$t"
done
# shellcheck disable=SC2086
make -j"$(nproc)" $progs >make-fuzz.out 2>&1 || { cat make-fuzz.out; exit 1; }

mkdir -p crashes work logs
passed=0
failed=0
summary=""
for t in $targets; do
	rm -rf "work/$t"
	mkdir -p "work/$t"
	cp "$top/fuzz/corpus/$t/"* "work/$t/"
	log="logs/$t.log"
	echo "fuzz: $t for ${secs}s"
	rc=0
	ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}" \
	UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
	    "fuzz/fuzz_$t" -max_total_time="$secs" -rss_limit_mb=2048 \
	    -timeout=10 -close_fd_mask=2 -print_final_stats=1 \
	    -artifact_prefix="$dir/crashes/$t-" "work/$t" >"$log" 2>&1 ||
	    rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" |
	    tail -n 1)
	[ -n "$execs" ] || execs=$(grep -E '^#[0-9]+' "$log" | tail -n 1 |
	    sed 's/^#\([0-9]*\).*/\1/')
	if [ "$rc" -eq 0 ]; then
		passed=$((passed + 1))
		summary="$summary
  $t: ok, ${execs:-?} executions"
	else
		failed=$((failed + 1))
		repro=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" |
		    tail -n 1)
		echo "fuzz: $t FAILED (exit $rc); log: $dir/$log"
		grep -E 'ERROR|SUMMARY|runtime error|==[0-9]+==' "$log" |
		    head -n 20 || true
		echo "fuzz: reproducer: ${repro:-none written}"
		echo "fuzz: replay with: $dir/fuzz/fuzz_$t ${repro:-FILE}"
		summary="$summary
  $t: FAILED, ${execs:-?} executions, reproducer ${repro:-none}"
	fi
done
echo "fuzz: $passed passed, $failed failed$summary"
[ "$failed" -eq 0 ]
