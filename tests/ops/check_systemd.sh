#!/bin/sh
# check_systemd.sh: systemd/refundsync.service is a valid unit
# ("systemd-analyze verify" prints nothing) and a well-sandboxed one
# ("systemd-analyze security --offline=true" scores at most 2.0).
#
# Needs neither root nor a running systemd: both commands read the file
# alone.  verify wants ExecStart='s binary to exist and the man pages in
# Documentation= to be found, so the test checks a copy whose ExecStart
# names the binary just built ($RS_BINARY) and points MANPATH at the
# pages in docs/.  Run by "make check"; by hand, from the build
# directory: RS_SRCDIR=/path/to/source sh tests/ops/check_systemd.sh
#
# systemd-analyze comes with Debian's "systemd" package, which
# "scripts/deps.sh test" installs.
set -u

srcdir=${RS_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
binary=${RS_BINARY:-$PWD/refundsync}
unit="$srcdir/systemd/refundsync.service"
# The highest exposure level accepted, in tenths (systemd's --threshold).
max=20
pass=0
fail=0

ok() {
	pass=$((pass + 1))
	echo "PASS: $*"
}
bad() {
	fail=$((fail + 1))
	echo "FAIL: $*"
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/rs-systemd.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

if ! command -v systemd-analyze >/dev/null 2>&1; then
	bad "verify: systemd-analyze is missing (scripts/deps.sh test)"
	bad "security: systemd-analyze is missing (scripts/deps.sh test)"
elif [ ! -f "$unit" ]; then
	bad "verify: $unit is missing"
	bad "security: $unit is missing"
else
	case $binary in
	/*) ;;
	*) binary="$PWD/$binary" ;;
	esac
	mkdir -p "$tmp/man/man5" "$tmp/man/man8"
	cp "$srcdir/docs/refundsync.8" "$tmp/man/man8/" 2>/dev/null
	cp "$srcdir/docs/refundsync.conf.5" "$tmp/man/man5/" 2>/dev/null
	sed "s|^ExecStart=[^ ]*|ExecStart=$binary|" "$unit" \
	    > "$tmp/refundsync.service"

	# 1. verify: exit 0 and not one line of complaint.
	if [ ! -x "$binary" ]; then
		bad "verify: the binary $binary is missing"
	elif out=$(MANPATH="$tmp/man" SYSTEMD_LOG_LEVEL=notice \
	    systemd-analyze verify "$tmp/refundsync.service" 2>&1) &&
	    [ -z "$out" ]; then
		ok "verify: systemd-analyze verify is clean"
	else
		printf '%s\n' "$out" | sed 's/^/  /'
		bad "verify: systemd-analyze verify complained"
	fi

	# 2. security: the overall exposure level, at most max/10.
	out=$(systemd-analyze security --offline=true --threshold=$max \
	    --no-pager "$tmp/refundsync.service" 2>&1)
	rc=$?
	score=$(printf '%s\n' "$out" |
	    sed -n 's/.*Overall exposure level for refundsync\.service: \([0-9][0-9]*\.[0-9]\).*/\1/p')
	if [ $rc -eq 0 ] && [ -n "$score" ]; then
		ok "security: exposure level $score (at most $((max / 10)).$((max % 10)))"
	else
		printf '%s\n' "$out" | grep -E '✗|Overall' | sed 's/^/  /'
		bad "security: exposure level ${score:-unknown} (at most $((max / 10)).$((max % 10)))"
	fi
fi

echo "systemd: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
