#!/bin/bash
# make bench: reconcile throughput and memory (issue #8), against
# tests/sandbox/wix-sandbox on loopback.
#
# Part 1, against the backfill.  A sandbox holds NREFUNDS (100,000)
# refunds for one instance, with no rate limit; refundsync runs with
# requests_per_minute = 100000 and page_size = 100.  ROUNDS (3) times,
# alternating: `refundsync backfill` into a fresh database (the
# baseline: the same full Query Refunds pass, plus the writes), then
# `refundsync reconcile --json` of that database (the Wix pass, the
# store read back, the comparison and the report; nothing to heal).
# Both run under /usr/bin/time: wall time, refunds/s, refundsync's CPU
# (user + sys), its peak RSS (maximum resident set size, VmHWM), and the
# sandbox's CPU over the same run (it builds every page; on a 2-core
# machine the two processes compete for the cores).  Each reconcile must
# say "clean" with wix_refunds = store_refunds = NREFUNDS, or the bench
# fails.  The summary row is the median over rounds, and the ratio is
# reconcile's refunds/s over the backfill's, per round, then the median.
#
# Part 2, with files.  The last round's database gets a ledger exporter
# and a csv exporter; the daemon (`refundsync serve`) runs until `export
# status --json` says both hold every change, and stops.  Then ROUNDS
# more reconciles, which now also read both files back (readback.h) and
# build the per-day ledger totals.  Same columns.
#
# Run time: about ROUNDS x (3-10 s + 3-10 s), then the export (a few
# seconds) and ROUNDS x 3-10 s.
# Environment: ROUNDS (3), NREFUNDS (100000), FILES (1; 0 skips part 2).
# Needs /usr/bin/time (Debian package "time") and, for part 2, openssl
# (a key for the daemon's config).  Use an optimised build
# (the default CFLAGS, -g -O2), not a sanitizer build.
set -e
. "$(dirname "$0")/lib.sh"
B=${1:?build dir}
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/deps.sh" bench
ROUNDS=${ROUNDS:-3}
NREFUNDS=${NREFUNDS:-100000}
FILES=${FILES:-1}
PAGE=100
INST=bench-instance
W="$B/bench-work/reconcile"
SANDBOX="$B/tests/sandbox/wix-sandbox"
RS="$B/refundsync"
TIME=/usr/bin/time

if [ ! -x "$TIME" ]; then
	echo "bench: $TIME is missing (apt-get install time)" >&2
	exit 1
fi
for f in "$RS" "$SANDBOX"; do
	if [ ! -x "$f" ]; then
		echo "bench: $f is missing; make refundsync" \
		    "tests/sandbox/wix-sandbox first" >&2
		exit 1
	fi
done
if [ "$FILES" -ne 0 ] && ! command -v openssl > /dev/null; then
	echo "bench: openssl is missing (the daemon of part 2 needs a key;" \
	    "apt-get install openssl, or FILES=0)" >&2
	exit 1
fi
if [ "$ROUNDS" -lt 1 ]; then
	echo "bench: ROUNDS must be at least 1" >&2
	exit 1
fi
sandbox_setup "$B" "$W"
hz=$(getconf CLK_TCK)

write_conf() { # [EXTRA-FILE] -> $W/bench.conf
	cat > "$W/bench.conf" <<CONF
[store]
path = db/refundsync.db
[wix]
app_id = sandbox-app
app_secret_file = app-secret
api_base = http://127.0.0.1:$port
[backfill]
page_size = $PAGE
requests_per_minute = 100000
CONF
	if [ -n "$1" ]; then
		cat "$1" >> "$W/bench.conf"
	fi
}
# Run refundsync ARGS... under /usr/bin/time; TAG names the files:
# $W/time.TAG holds "wall user sys maxrss_kib", $W/out.TAG and
# $W/err.TAG the output.  Sets rc.
timed() {
	tag=$1
	shift
	rc=0
	"$TIME" -f '%e %U %S %M' -o "$W/time.$tag" "$RS" "$@" \
	    > "$W/out.$tag" 2> "$W/err.$tag" || rc=$?
}
# One measured command: KIND TAG N ARGS... appends a result line.
measure() {
	kind=$1
	tag=$2
	n=$3
	shift 3
	sb0=$(cpu_ticks "$sbpid")
	timed "$tag" "$@"
	sb1=$(cpu_ticks "$sbpid")
	read -r wall user sys maxrss < "$W/time.$tag"
	echo "$kind n=$n wall=$wall user=$user sys=$sys maxrss=$maxrss" \
	    "sbcpu=$(awk -v a="$sb0" -v b="$sb1" -v hz="$hz" \
	    'BEGIN { printf "%.2f", (b - a) / hz }')" >> "$W/results.txt"
}
fail() { # TAG WHAT
	echo "bench: $1: $2 (exit $rc):" >&2
	head -c 2000 "$W/out.$1" >&2
	tail -20 "$W/err.$1" >&2
	exit 1
}
# The backfill of a fresh database.
backfill() { # TAG
	rm -rf "$W/db"
	mkdir -p "$W/db"
	measure b "$1" "$NREFUNDS" backfill -c "$W/bench.conf" \
	    --instance "$INST"
	if [ "$rc" -ne 0 ] ||
	    ! grep -q "done: .* $NREFUNDS refunds" "$W/out.$1"; then
		fail "$1" "backfill failed"
	fi
}
# A reconcile that must find the books clean.
reconcile() { # KIND TAG
	measure "$1" "$2" "$NREFUNDS" reconcile -c "$W/bench.conf" --json
	if [ "$rc" -ne 0 ] ||
	    ! grep -Eq '"outcome":[[:space:]]*"clean"' "$W/out.$2" ||
	    ! grep -Eq "\"wix_refunds\":[[:space:]]*${NREFUNDS}[,[:space:]]" \
	    "$W/out.$2" ||
	    ! grep -Eq "\"store_refunds\":[[:space:]]*${NREFUNDS}[,[:space:]]" \
	    "$W/out.$2"; then
		fail "$2" "reconcile did not report $NREFUNDS refunds clean"
	fi
}

: > "$W/results.txt"
"$SANDBOX" --listen 127.0.0.1:0 --instances "$INST" --seed "$NREFUNDS" \
    --max-seconds 1800 -q 2> "$W/sandbox.log" &
sbpid=$!
port=$(wait_port "$W/sandbox.log" "wix-sandbox listening")
write_conf ""

# ---- part 1: against the backfill -----------------------------------------
echo "bench: reconcile vs backfill, $ROUNDS rounds of $NREFUNDS" \
    "refunds..." >&2
r=1
while [ "$r" -le "$ROUNDS" ]; do
	backfill "b$r"
	reconcile r "r$r"
	r=$((r + 1))
done

# ---- part 2: with a ledger and a csv file ------------------------------------
if [ "$FILES" -ne 0 ]; then
	echo "bench: exporting $NREFUNDS changes to a ledger and a csv" \
	    "file..." >&2
	openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
	    -out "$W/wix.key" 2>/dev/null
	openssl pkey -in "$W/wix.key" -pubout -out "$W/wix.pem" 2>/dev/null
	cat > "$W/files.conf" <<CONF
[server]
listen = 127.0.0.1:0
admin_listen =
[exporter books]
type = ledger
path = books.journal
[exporter rows]
type = csv
path = rows.csv
CONF
	write_conf "$W/files.conf"
	sed -i "s|^\[wix\]$|[wix]\npublic_key_file = wix.pem|" "$W/bench.conf"
	rm -f "$W/books.journal" "$W/rows.csv"
	"$RS" serve -c "$W/bench.conf" 2> "$W/serve.log" &
	rspid=$!
	t0=$(date +%s)
	until "$RS" export -c "$W/bench.conf" status --json 2>/dev/null |
	    grep -Eq "^\{\"last_change\":$NREFUNDS,.*\"position\":$NREFUNDS,.*\"position\":$NREFUNDS,"; do
		if ! kill -0 "$rspid" 2>/dev/null; then
			echo "bench: the daemon died:" >&2
			tail -20 "$W/serve.log" >&2
			exit 1
		fi
		if [ $(($(date +%s) - t0)) -gt 600 ]; then
			echo "bench: the export did not finish in 600 s" >&2
			exit 1
		fi
		sleep 0.5
	done
	kill -TERM "$rspid"
	wait "$rspid" || true
	rspid=""
	echo "files ledger=$(stat -c %s "$W/books.journal")" \
	    "csv=$(stat -c %s "$W/rows.csv")" >> "$W/results.txt"
	r=1
	while [ "$r" -le "$ROUNDS" ]; do
		reconcile f "f$r"
		r=$((r + 1))
	done
fi
kill -TERM "$sbpid"
wait "$sbpid" || true
sbpid=""

# ---- the tables ----------------------------------------------------------------
awk -v rounds="$ROUNDS" '
function kv(s, k,   i, c, f) {
	c = split(s, f, " ")
	for (i = 1; i <= c; i++)
		if (index(f[i], k "=") == 1)
			return substr(f[i], length(k) + 2) + 0	# a number
	return 0
}
function median(arr, c,   i, j, t, s) {
	for (i = 1; i <= c; i++)
		s[i] = arr[i]
	for (i = 1; i <= c; i++)
		for (j = i + 1; j <= c; j++)
			if (s[j] < s[i]) { t = s[i]; s[i] = s[j]; s[j] = t }
	return (c % 2) ? s[(c + 1) / 2] : (s[c / 2] + s[c / 2 + 1]) / 2
}
# One table row; sets the last_* values for the medians.
function row(name, s,   nr, cpu) {
	nr = kv(s, "n"); cpu = kv(s, "user") + kv(s, "sys")
	last_wall = kv(s, "wall"); last_rate = nr / last_wall
	last_cpu = cpu; last_per = 1e6 * cpu / nr
	last_sb = kv(s, "sbcpu"); last_peak = kv(s, "maxrss") / 1024
	return sprintf("| %s | %d | %.1f | %.0f | %.1f (%.1f + %.1f) | %.1f | %.1f | %.1f |", \
	    name, nr, last_wall, last_rate, cpu, kv(s, "user"), kv(s, "sys"), \
	    last_per, last_sb, last_peak)
}
function keep(kind, k) {
	wall[kind, k] = last_wall; rate[kind, k] = last_rate
	cpus[kind, k] = last_cpu; per[kind, k] = last_per
	sb[kind, k] = last_sb; peak[kind, k] = last_peak
}
function medrow(kind, c, name,   i, a, b, d, e, f, g) {
	for (i = 1; i <= c; i++) {
		a[i] = wall[kind, i]; b[i] = rate[kind, i]; d[i] = cpus[kind, i]
		e[i] = per[kind, i]; f[i] = sb[kind, i]; g[i] = peak[kind, i]
	}
	mrate[kind] = median(b, c); mpeak[kind] = median(g, c)
	return sprintf("| **%s, median of %d** | | %.1f | **%.0f** | %.1f | %.1f | %.1f | **%.1f** |", \
	    name, c, median(a, c), mrate[kind], median(d, c), median(e, c), \
	    median(f, c), mpeak[kind])
}
$1 == "b" { nb++; tb[nb] = row("backfill " nb, $0); keep("b", nb); n = kv($0, "n") }
$1 == "r" { nr++; tr[nr] = row("reconcile " nr, $0); keep("r", nr)
	ratio[nr] = rate["r", nr] / rate["b", nr] }
$1 == "f" { nf++; tf[nf] = row("reconcile with files " nf, $0); keep("f", nf) }
$1 == "files" { files = $0 }
END {
	printf "Reconcile of %d refunds, page_size 100, no rate limit (sandbox on the same 2 cores):\n\n", n
	printf "| run | refunds | wall s | refunds/s | refundsync CPU s (user + sys) | CPU ms per 1000 refunds | sandbox CPU s | peak RSS MiB |\n"
	printf "|---|---|---|---|---|---|---|---|\n"
	for (i = 1; i <= nb; i++) {
		print tb[i]
		print tr[i]
	}
	print medrow("b", nb, "backfill")
	print medrow("r", nr, "reconcile")
	for (i = 1; i <= nf; i++)
		print tf[i]
	if (nf > 0)
		print medrow("f", nf, "reconcile with files")
	printf "\nReconcile vs backfill (refunds/s, per round): "
	for (i = 1; i <= nr; i++)
		printf "%s%.2fx", (i > 1 ? ", " : ""), ratio[i]
	printf "; median %.2fx.\n", median(ratio, nr)
	printf "Peak RSS above the backfill'"'"'s (which holds one page at a time): %.1f MiB, %.0f bytes per refund.\n", \
	    mpeak["r"] - mpeak["b"], (mpeak["r"] - mpeak["b"]) * 1048576 / n
	if (nf > 0) {
		printf "With files (ledger %.1f MiB, csv %.1f MiB, read back in full each run): %.0f refunds/s, %.2fx the reconcile without, peak RSS %.1f MiB.\n", \
		    kv(files, "ledger") / 1048576, kv(files, "csv") / 1048576, \
		    mrate["f"], mrate["f"] / mrate["r"], mpeak["f"]
	}
}' "$W/results.txt" | tee "$W/summary.md"
