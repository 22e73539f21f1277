#!/bin/bash
# make bench: ingest throughput of refundsync against a bare MHD server.
#
# In one run, alternating, ROUNDS times each:
#   (a) bench/bare-mhd: reads each POST and answers 200, nothing else;
#   (b) refundsync serve: verifies RS256, decodes, commits with
#       synchronous=FULL before each 200 (group commit).
# wrk POSTs distinct signed webhooks over keep-alive connections.
# Reports medians of requests/s, p50/p99 latency, RSS (idle and peak),
# the ratio b/a, and the commit batch sizes reached.
# Environment: ROUNDS (3), DURATION (8s), CONNS (64), WRK_THREADS (1),
# NTOKENS (120000).  Not more: wrk's Lua GC walks the token table, so a
# bigger one slows wrk and with it the bare baseline (200000 tokens cost
# bare-mhd 14%), which would flatter the ratio.  A round of (b) that
# outruns the tokens resends some; the duplicates are counted below.
set -e
. "$(dirname "$0")/lib.sh"
B=${1:?build dir}
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/deps.sh" bench
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
CONNS=${CONNS:-64}
WRK_THREADS=${WRK_THREADS:-1}
NTOKENS=${NTOKENS:-120000}
W="$B/bench-work"
mkdir -p "$W"
export WRK_THREADS

if [ ! -f "$W/wix-test-private.pem" ]; then
	"$B/tests/tools/wix-sign" keygen "$W" >/dev/null
fi
if [ "$(wc -l < "$W/tokens.txt" 2>/dev/null || echo 0)" -ne "$NTOKENS" ]; then
	echo "bench: signing $NTOKENS distinct webhooks (once, cached)..." >&2
	half=$((NTOKENS / 2))
	"$B/bench/gen-tokens" "$W/wix-test-private.pem" "$half" "$W/t1" 0 &
	"$B/bench/gen-tokens" "$W/wix-test-private.pem" $((NTOKENS - half)) \
	    "$W/t2" "$half"
	wait
	cat "$W/t1" "$W/t2" > "$W/tokens.txt"
	rm -f "$W/t1" "$W/t2"
fi
export TOKENS="$W/tokens.txt"

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
run_wrk() { # PORT PATH -> BENCH line
	wrk -t"$WRK_THREADS" -c"$CONNS" -d"$DURATION" --latency \
	    -s "$top/bench/post.lua" "http://127.0.0.1:$1$2" 2>&1 |
	    grep '^BENCH'
}

: > "$W/results.txt"
r=1
while [ "$r" -le "$ROUNDS" ]; do
	# (a) bare MHD
	"$B/bench/bare-mhd" 0 2 2> "$W/bare.log" &
	pid=$!
	port=$(wait_port "$W/bare.log" listener)
	line=$(run_wrk "$port" /webhooks)
	kill -TERM $pid; wait $pid || true
	echo "a $line" >> "$W/results.txt"

	# (b) refundsync
	rm -rf "$W/db"; mkdir -p "$W/db"
	cat > "$W/bench.conf" <<CONF
[server]
listen = 127.0.0.1:0
admin_listen = 127.0.0.1:0
threads = 2
max_connections_per_ip = 1024
max_connections = 1024
[store]
path = db/refundsync.db
[wix]
public_key_file = wix-test-public.pem
CONF
	"$B/refundsync" serve -c "$W/bench.conf" 2> "$W/serve.log" &
	pid=$!
	port=$(wait_port "$W/serve.log" "public listener")
	aport=$(wait_port "$W/serve.log" "admin listener")
	sleep 1
	idle=$(rss_kib $pid)
	line=$(run_wrk "$port" /webhooks)
	peak=$(hwm_kib $pid)
	wrk_line=$line
	metrics=$(exec 3<>/dev/tcp/127.0.0.1/"$aport" &&
	    printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && cat <&3 || true)
	applied=$(echo "$metrics" | sed -n 's/^refundsync_events_total{outcome="applied"} \([0-9]*\)/\1/p')
	dup=$(echo "$metrics" | sed -n 's/^refundsync_events_total{outcome="duplicate"} \([0-9]*\)/\1/p')
	bcount=$(echo "$metrics" | sed -n 's/^refundsync_commit_batch_size_count \([0-9]*\)/\1/p')
	bsum=$(echo "$metrics" | sed -n 's/^refundsync_commit_batch_size_sum \([0-9]*\)/\1/p')
	kill -TERM $pid; wait $pid || true
	echo "b $wrk_line idle_kib=$idle peak_kib=$peak applied=${applied:-0} duplicate=${dup:-0} commits=${bcount:-0} batched=${bsum:-0}" >> "$W/results.txt"
	r=$((r + 1))
done

awk -v rounds="$ROUNDS" '
function kv(s, k,   i, n, f) {
	n = split(s, f, " ")
	for (i = 1; i <= n; i++)
		if (index(f[i], k "=") == 1)
			return substr(f[i], length(k) + 2) + 0	# a number
	return 0
}
function median(arr, n,   i, j, t) {
	for (i = 1; i <= n; i++)
		for (j = i + 1; j <= n; j++)
			if (arr[j] < arr[i]) { t = arr[i]; arr[i] = arr[j]; arr[j] = t }
	return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
}
$1 == "a" { na++; ar[na] = kv($0, "requests") / (kv($0, "duration_us") / 1e6)
	ap50[na] = kv($0, "p50_us"); ap99[na] = kv($0, "p99_us") }
$1 == "b" { nb++; br[nb] = kv($0, "requests") / (kv($0, "duration_us") / 1e6)
	bp50[nb] = kv($0, "p50_us"); bp99[nb] = kv($0, "p99_us")
	kv2[nb] = bp99[nb] / 1000
	bidle[nb] = kv($0, "idle_kib"); bpeak[nb] = kv($0, "peak_kib")
	c = kv($0, "commits"); bb[nb] = c > 0 ? kv($0, "batched") / c : 0
	app[nb] = kv($0, "applied"); dupl[nb] = kv($0, "duplicate")
	berr[nb] = kv($0, "errors"); aerr[nb] = 0 }
END {
	a = median(ar, na); b = median(br, nb)
	printf "| server | req/s (median of %d) | p50 ms | p99 ms | idle RSS MiB | peak RSS MiB |\n", rounds
	printf "|---|---|---|---|---|---|\n"
	printf "| (a) bare libmicrohttpd | %.0f | %.2f | %.2f | - | - |\n", a, median(ap50, na) / 1000, median(ap99, na) / 1000
	printf "| (b) refundsync serve | %.0f | %.2f | %.2f | %.1f | %.1f |\n", b, median(bp50, nb) / 1000, median(bp99, nb) / 1000, median(bidle, nb) / 1024, median(bpeak, nb) / 1024
	printf "\nratio b/a = %.3f (target >= 0.4); p99(b) = %.2f ms (target <= 20)\n", b / a, median(bp99, nb) / 1000
	printf "mean commit batch (median over rounds) = %.1f webhooks per durable transaction\n", median(bb, nb)
	printf "events per round (applied / duplicate): "
	for (i = 1; i <= nb; i++) printf "%s/%s ", app[i], dupl[i]
	printf "\np99 of (b) per round, ms: "
	for (i = 1; i <= nb; i++) printf "%.2f ", kv2[i]
	printf "\nnon-2xx or socket errors in (b) per round: "
	for (i = 1; i <= nb; i++) printf "%s ", berr[i]
	printf "\n"
}' "$W/results.txt" | tee "$W/summary.md"
