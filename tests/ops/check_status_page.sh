#!/bin/sh
# check_status_page.sh: the admin GET /status page as a person sees it.
# Starts the daemon just built ($RS_BINARY) on loopback with a temporary
# config and store, posts signed webhooks (tests/tools/wix-sign), then
# renders the page in headless Chromium (Debian's "chromium"): the DOM it
# built must hold the expected figures, and the screenshot is kept as a
# test artifact, tests/ops/status.png under the build directory.
#
# Chromium comes with "scripts/deps.sh test"; if it is missing and cannot
# be installed here, the test is skipped (exit 77), never passed.
# Run by "make check"; by hand, from the build directory:
#   RS_SRCDIR=/path/to/source sh tests/ops/check_status_page.sh
set -u

srcdir=${RS_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
builddir=${RS_BUILDDIR:-$PWD}
binary=${RS_BINARY:-$builddir/refundsync}
sign="$builddir/tests/tools/wix-sign"
shot="$builddir/tests/ops/status.png"
pass=0
fail=0
pid=""

ok() {
	pass=$((pass + 1))
	echo "PASS: $*"
}
bad() {
	fail=$((fail + 1))
	echo "FAIL: $*"
}
has() {	# has WHAT FILE DESCRIPTION
	if grep -qF -- "$1" "$2"; then
		ok "$3"
	else
		bad "$3: no '$1' in $2"
	fi
}

find_chromium() {
	for c in chromium chromium-browser; do
		if command -v "$c" >/dev/null 2>&1; then
			command -v "$c"
			return 0
		fi
	done
	return 1
}

if ! chromium=$(find_chromium); then
	echo "chromium is missing: installing it with scripts/deps.sh test"
	sh "$srcdir/scripts/deps.sh" test >/dev/null 2>&1 || true
	if ! chromium=$(find_chromium); then
		echo "SKIP: chromium is not installed and scripts/deps.sh test" \
		    "could not install it"
		exit 77
	fi
fi
for f in "$binary" "$sign"; do
	if [ ! -x "$f" ]; then
		echo "FAIL: $f is missing (make it first)"
		exit 1
	fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/rs-statuspage.XXXXXX") || exit 1
cleanup() {
	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# keygen makes the directory when it is not there yet.
"$sign" keygen "$tmp/keys" >/dev/null || exit 1
cat > "$tmp/refundsync.conf" <<EOF
[server]
listen = 127.0.0.1:0
admin_listen = 127.0.0.1:0
[store]
path = $tmp/refundsync.db
[wix]
public_key_file = $tmp/keys/wix-test-public.pem
[backfill]
on_install = no
[exporter books]
type = jsonl
path = $tmp/out.jsonl
poll_ms = 20
[exporter crm]
type = http
url = http://127.0.0.1:9/down
poll_ms = 20
retry_initial_ms = 50
retry_max_ms = 200
timeout = 2
EOF

"$binary" serve -c "$tmp/refundsync.conf" > "$tmp/daemon.log" 2>&1 &
pid=$!
port=""
admin=""
i=0
while [ $i -lt 100 ] && { [ -z "$port" ] || [ -z "$admin" ]; }; do
	port=$(sed -n 's/.*public listener on 127\.0\.0\.1:\([0-9]*\).*/\1/p' \
	    "$tmp/daemon.log" | head -n 1)
	admin=$(sed -n 's/.*admin listener on 127\.0\.0\.1:\([0-9]*\).*/\1/p' \
	    "$tmp/daemon.log" | head -n 1)
	i=$((i + 1))
	sleep 0.1
done
if [ -z "$port" ] || [ -z "$admin" ]; then
	echo "FAIL: the daemon did not start:"
	cat "$tmp/daemon.log"
	exit 1
fi
ok "daemon listening (public $port, admin $admin)"

url="http://127.0.0.1:$port/webhooks"
if "$sign" app-installed --key "$tmp/keys/wix-test-private.pem" \
    --instance shop-alpha --post "$url" >/dev/null &&
    "$sign" refund --key "$tmp/keys/wix-test-private.pem" --instance shop-alpha \
    --id rf-page-1 --amount 12.34 --currency EUR --post "$url" >/dev/null &&
    "$sign" refund --key "$tmp/keys/wix-test-private.pem" --instance shop-alpha \
    --id rf-page-2 --amount 0.66 --currency EUR --post "$url" >/dev/null
then
	ok "webhooks posted"
else
	bad "webhooks were not all accepted"
fi
sleep 1

chrome_run() {	# chrome_run OUTFILE ARGS...: one headless run, bounded
	out=$1
	shift
	timeout 90 "$chromium" --headless --no-sandbox --disable-gpu \
	    --disable-quic --no-first-run --disable-background-networking \
	    --disable-component-update --disable-sync \
	    --user-data-dir="$(mktemp -d "$tmp/profile.XXXXXX")" \
	    "$@" "http://127.0.0.1:$admin/status" > "$out" 2>"$out.err"
}

mkdir -p "$(dirname "$shot")"
rm -f "$shot"
if chrome_run "$tmp/dom.html" --dump-dom && [ -s "$tmp/dom.html" ]; then
	ok "chromium rendered the page (--dump-dom)"
else
	bad "chromium --dump-dom failed: $(tail -n 3 "$tmp/dom.html.err")"
fi
has "refundsync status" "$tmp/dom.html" "title and heading"
has "<td>shop-alpha</td>" "$tmp/dom.html" "the instance row"
has '<span class="state">pending</span>' "$tmp/dom.html" \
    "the backfill state"
has "<td>books</td>" "$tmp/dom.html" "the exporter row"
has "<td>EUR</td><td class=\"n\">2</td><td class=\"n\">13.00</td>" \
    "$tmp/dom.html" "today's refunds and total"
has 'id="refunds">2<' "$tmp/dom.html" "the refund count"
# The crm exporter's target is down: it lags, and says why.
has "<td>crm</td><td class=\"n\">0</td><td class=\"n warn\">2</td>" \
    "$tmp/dom.html" "the lag of a failing exporter"
has '<ol class="log" id="errors">' "$tmp/dom.html" "recent warnings"

if chrome_run "$tmp/shot.out" --screenshot="$shot" --window-size=1200,900 \
    && [ -s "$shot" ]; then
	ok "screenshot kept in $shot"
else
	bad "no screenshot: $(tail -n 3 "$tmp/shot.out.err")"
fi
# A PNG starts with \211PNG.
if [ -s "$shot" ] && [ "$(head -c 4 "$shot" | tail -c 3)" = "PNG" ]; then
	ok "the screenshot is a PNG"
else
	bad "the screenshot is not a PNG"
fi

echo "status-page: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
