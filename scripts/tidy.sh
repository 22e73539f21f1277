#!/bin/sh
# Run clang-tidy, with the checks in .clang-tidy, over every C file under
# src/ and exit non-zero on any finding (.clang-tidy makes every warning
# an error).  Each file is compiled with the flags automake gives it
# (DEFS, the includes, the libraries' pkg-config cflags, -std=c11, the
# build's -W flags), read from the Makefile of a configured build: the
# default is build/, as scripts/test uses, which also supplies config.h.
# Files run in parallel, one clang-tidy per CPU.
# Usage: [TIDY_BUILDDIR=dir] [CLANG_TIDY=clang-tidy-14] scripts/tidy.sh [file.c...]
set -e
top=$(cd "$(dirname "$0")/.." && pwd)
dir=${TIDY_BUILDDIR:-"$top/build"}
tidy=${CLANG_TIDY:-clang-tidy}

"$top/scripts/deps.sh" test
"$top/scripts/build.sh" "$dir" --enable-werror
cd "$dir"

# automake's COMPILE for a library source, minus $(CC) and the user's
# CFLAGS (-g -O2 change nothing for the checks).  Paths in it are
# relative to the build directory, where clang-tidy runs.
# shellcheck disable=SC2016 # $(...) is make's, not the shell's
flags=$(printf 'rs-print-var:\n\t@echo %s\n' \
    '$(DEFS) $(DEFAULT_INCLUDES) $(INCLUDES) $(AM_CPPFLAGS) $(CPPFLAGS) $(AM_CFLAGS)' |
    make -s -f Makefile -f - rs-print-var)

if [ $# -gt 0 ]; then
	files=""
	for f in "$@"; do
		case "$f" in
		/*) files="$files $f" ;;
		*) files="$files $top/$f" ;;
		esac
	done
else
	files=$(find "$top/src" -name '*.c' | LC_ALL=C sort)
fi

logs="$dir/tidy"
rm -rf "$logs"
mkdir -p "$logs"
start=$(date +%s)
# One log per file (src/core/cli.c -> src_core_cli.c.log); the exit
# status of each run is its log's last line.
# shellcheck disable=SC2016,SC2086 # the sh -c script expands its own
printf '%s\n' $files | xargs -P "$(nproc)" -I{} sh -c '
	top=$1 logs=$2 tidy=$3 f=$4
	shift 4
	log=$logs/$(printf "%s" "${f#"$top"/}" | tr / _).log
	rc=0
	"$tidy" --quiet "$f" -- "$@" >"$log" 2>&1 || rc=$?
	echo "rc=$rc" >>"$log"
' sh "$top" "$logs" "$tidy" {} $flags
secs=$(($(date +%s) - start))

nfiles=0
bad=0
for f in $files; do
	nfiles=$((nfiles + 1))
	log="$logs/$(printf '%s' "${f#"$top"/}" | tr / _).log"
	if [ "$(tail -n 1 "$log")" != "rc=0" ]; then
		bad=$((bad + 1))
		echo "==== ${f#"$top"/}"
		sed '$d' "$log" | grep -v '^[0-9]* warnings\? generated\.$' ||
		    true
	fi
done
if [ "$bad" -eq 0 ]; then
	echo "tidy: $nfiles files clean (${secs}s)"
else
	echo "tidy: $bad of $nfiles files have findings (${secs}s);" \
	    "logs: $logs/"
	exit 1
fi
