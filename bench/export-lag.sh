#!/bin/bash
# export-lag.sh BUILD_DIR: delivery lag of the exporters under a fixed
# webhook rate (issue #4; BENCHMARKS.md).
#
# RUNS times (3), each with a fresh database and fresh exporter files:
#   refundsync serve (as bench/run.sh starts it: loopback, ports picked by
#   the kernel, a scratch folder BUILD_DIR/bench-lag-work/run) with a
#   jsonl exporter (and a ledger one with EXPORTERS="jsonl ledger"), and
#   bench/lag-load posting distinct signed Refund Created webhooks at RATE
#   per second for DURATION seconds, open loop: request i is due at
#   t0 + i/RATE whatever became of the others (wrk2's model; Debian has
#   only wrk), on CONNS keep-alive connections used in turn.  A thread of
#   lag-load tails the jsonl file meanwhile (inotify).
# After the load, every exporter is left to catch up, the daemon stops,
# and lag-load joins its log with the store.  Per record, from the moment
# the client read the webhook's 200:
#   on disk (jsonl): until the tailer's own fdatasync() of the file,
#     issued once it had read the line, returned: an upper bound of the
#     time to "durably in the exporter's file", within one fsync;
#   readable (jsonl): until the tailer read the line: a lower bound;
#   recorded (every exporter): until the engine's delivery log row
#     (delivered_at, ms, +1 ms for the cut), written after the exporter's
#     fsync once the worker holds the store's write lock;
#   and stored-to-recorded: delivered_at minus changed_at (daemon only).
# The summary gives medians over the runs of each run's p50/p99/max and
# of the achieved rate.  A rate counts as sustained when every request
# got its 200 and the achieved rate (200s over the time from the first
# due request to the last 200) is at least 98% of RATE; if the median run
# is not sustained, the rates of FALLBACK_RATES are tried in turn.  Each
# run's raw line is in bench-lag-work/results.txt, the daemon's log in
# bench-lag-work/serve-RATE-RUN.log.
#
# Environment: RATE (5000), DURATION (20, seconds), RUNS (3), CONNS (256),
# EXPORTERS ("jsonl"), FALLBACK_RATES ("4000 3000 2000 1000").
set -e
. "$(dirname "$0")/lib.sh"
B=${1:?build dir}
B=$(cd "$B" && pwd)
RATE=${RATE:-5000}
DURATION=${DURATION:-20}
DURATION=${DURATION%s}
RUNS=${RUNS:-3}
CONNS=${CONNS:-256}
EXPORTERS=${EXPORTERS:-jsonl}
FALLBACK_RATES=${FALLBACK_RATES-4000 3000 2000 1000}
W="$B/bench-lag-work"
mkdir -p "$W"

for t in refundsync bench/lag-load bench/gen-tokens tests/tools/wix-sign; do
	if [ ! -x "$B/$t" ]; then
		echo "export-lag: $B/$t is missing (make $t)" >&2
		exit 1
	fi
done
case " $EXPORTERS " in
*" jsonl "*) ;;
*) echo "export-lag: EXPORTERS must include jsonl" >&2; exit 1 ;;
esac

# Distinct signed webhooks, line i for refund bench-refund-<i>; cached.
max=$RATE
for r in $FALLBACK_RATES; do [ "$r" -gt "$max" ] && max=$r; done
need=$((max * DURATION))
if [ ! -f "$W/wix-test-private.pem" ]; then
	"$B/tests/tools/wix-sign" keygen "$W" >/dev/null
	rm -f "$W/tokens.txt"
fi
if [ "$(wc -l < "$W/tokens.txt" 2>/dev/null || echo 0)" -lt "$need" ]; then
	echo "export-lag: signing $need distinct webhooks (once, cached)..." >&2
	half=$((need / 2))
	"$B/bench/gen-tokens" "$W/wix-test-private.pem" "$half" "$W/t1" 0 &
	"$B/bench/gen-tokens" "$W/wix-test-private.pem" $((need - half)) \
	    "$W/t2" "$half"
	wait
	cat "$W/t1" "$W/t2" > "$W/tokens.txt"
	rm -f "$W/t1" "$W/t2"
fi

metrics() { # ADMIN_PORT
	(exec 3<>/dev/tcp/127.0.0.1/"$1" &&
	    printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && cat <&3) || true
}
metric() { # TEXT NAME{LABELS} -> value or empty
	echo "$1" | awk -v k="$2" '$1 == k { print $2; exit }'
}

# One run at rate $1, run number $2: appends a line to $W/results.txt.
one_run() {
	rate=$1
	R="$W/run"
	rm -rf "$R"
	mkdir -p "$R/db" "$R/out"
	{
		cat <<CONF
[server]
listen = 127.0.0.1:0
admin_listen = 127.0.0.1:0
threads = 2
max_connections_per_ip = 1024
max_connections = 1024
[store]
path = db/refundsync.db
[wix]
public_key_file = $W/wix-test-public.pem
CONF
		for x in $EXPORTERS; do
			printf '[exporter lag-%s]\ntype = %s\npath = out/lag.%s\n' \
			    "$x" "$x" "$x"
		done
	} > "$R/bench.conf"
	"$B/refundsync" serve -c "$R/bench.conf" 2> "$R/serve.log" &
	pid=$!
	port=$(wait_port "$R/serve.log" "public listener")
	aport=$(wait_port "$R/serve.log" "admin listener")
	sleep 1
	la0=$(cut -d' ' -f1 /proc/loadavg)
	c0=$(cpu_ticks $pid)
	set +e
	load=$("$B/bench/lag-load" run -p "$port" -t "$W/tokens.txt" \
	    -r "$rate" -s "$DURATION" -c "$CONNS" -f "$R/out/lag.jsonl" \
	    -o "$R/load.txt" | grep '^LOAD')
	set -e
	# Let every exporter catch up (jsonl has already).
	names=""
	for x in $EXPORTERS; do names="$names lag-$x"; done
	i=0
	while :; do
		m=$(metrics "$aport")
		applied=$(metric "$m" 'refundsync_events_total{outcome="applied"}')
		behind=0
		for n in $names; do
			d=$(metric "$m" "refundsync_export_delivered_total{exporter=\"$n\"}")
			[ "${d:-0}" -lt "${applied:-0}" ] && behind=1
		done
		[ $behind -eq 0 ] && break
		i=$((i + 1))
		if [ $i -ge 300 ]; then
			echo "export-lag: exporters still behind after 30 s" >&2
			break
		fi
		sleep 0.1
	done
	c1=$(cpu_ticks $pid)
	la1=$(cut -d' ' -f1 /proc/loadavg)
	kill -TERM $pid
	wait $pid || true
	cp "$R/serve.log" "$W/serve-$rate-$2.log"
	lines=$(wc -l < "$R/out/lag.jsonl")
	report=$("$B/bench/lag-load" report "$R/load.txt" \
	    "$R/db/refundsync.db" $names | tr '\n' ' ')
	cpu=$(awk -v a="$c0" -v b="$c1" -v t="$(getconf CLK_TCK)" \
	    'BEGIN { printf "%.1f", (b - a) / t }')
	echo "run=$2 rate=$rate $load applied=${applied:-0}" \
	    "jsonl_lines=$lines daemon_cpu_s=$cpu loadavg=$la0/$la1" \
	    "$report" >> "$W/results.txt"
	echo "export-lag: run $2 at $rate/s: $(tail -1 "$W/results.txt" |
	    grep -o 'achieved_rps=[0-9.]*\|[a-z]*_p99_us=[-0-9]*' |
	    tr '\n' ' ')" >&2
}

summarize() { # RATE -> the summary block; exit status 0 if sustained
	awk -v rate="$1" -v exps="$EXPORTERS" '
function kv(s, k,   i, n, f) {
	n = split(s, f, " ")
	for (i = 1; i <= n; i++)
		if (index(f[i], k "=") == 1)
			return substr(f[i], length(k) + 2)
	return ""
}
# The value of key k in the LAG part of exporter e.
function lagkv(s, e, k,   p) {
	p = index(s, "LAG exporter=" e " ")
	if (p == 0)
		return ""
	s = substr(s, p + 4)
	p = index(s, " LAG ")
	if (p > 0)
		s = substr(s, 1, p)
	p = index(s, " FILE ")
	if (p > 0)
		s = substr(s, 1, p)
	return kv(s, k)
}
function median(arr, n,   i, j, t, c) {
	for (i = 1; i <= n; i++) c[i] = arr[i]
	for (i = 1; i <= n; i++)
		for (j = i + 1; j <= n; j++)
			if (c[j] < c[i]) { t = c[i]; c[i] = c[j]; c[j] = t }
	return (n % 2) ? c[(n + 1) / 2] : (c[n / 2] + c[n / 2 + 1]) / 2
}
function ms(us) { return sprintf("%.1f", us / 1000) }
function list(arr, n, scale,   i, s) {
	s = ""
	for (i = 1; i <= n; i++)
		s = s (i > 1 ? ", " : "") sprintf("%.1f", arr[i] / scale)
	return s
}
# One table row from per-run arrays a (p50), b (p99), c (max), in us.
function row(name, a, b, c, n) {
	printf "| %s | %s | %s | %s | %s |\n", name, ms(median(a, n)),
	    ms(median(b, n)), ms(median(c, n)), list(b, n, 1000)
}
kv($0, "rate") == rate {
	n++
	ach[n] = kv($0, "achieved_rps") + 0
	ok[n] = kv($0, "ok") + 0; req[n] = kv($0, "requests") + 0
	bad[n] = kv($0, "non200") "/" kv($0, "err_write") "/" \
	    kv($0, "err_closed") "/" kv($0, "err_bad")
	clat[n] = kv($0, "clat_p99_us") + 0; lat50[n] = kv($0, "lat_p50_us") + 0
	lat99[n] = kv($0, "lat_p99_us") + 0
	late[n] = kv($0, "late_p99_us") + 0
	v50[n] = kv($0, "visible_p50_us") + 0
	v99[n] = kv($0, "visible_p99_us") + 0
	vmax[n] = kv($0, "visible_max_us") + 0
	f50[n] = kv($0, "durable_p50_us") + 0
	f99[n] = kv($0, "durable_p99_us") + 0
	fmax[n] = kv($0, "durable_max_us") + 0
	fn[n] = kv($0, "durable_records") + 0
	cpu[n] = kv($0, "daemon_cpu_s") + 0
	la[n] = kv($0, "loadavg")
	ne = split(exps, ex, " ")
	for (e = 1; e <= ne; e++) {
		x = "lag-" ex[e]
		r50[e, n] = lagkv($0, x, "recorded_p50_us") + 0
		r99[e, n] = lagkv($0, x, "recorded_p99_us") + 0
		rmax[e, n] = lagkv($0, x, "recorded_max_us") + 0
		s99[e, n] = lagkv($0, x, "stored_p99_us") + 0
		und[e, n] = lagkv($0, x, "undelivered") + 0
	}
	sustained[n] = (ok[n] == req[n] && ach[n] >= 0.98 * rate)
}
END {
	if (n == 0) { print "no runs at rate " rate; exit 2 }
	for (i = 1; i <= n; i++) s[i] = sustained[i]
	sus = median(s, n) >= 1
	printf "==== export-lag summary: %d webhooks/s offered for %s s, %d runs, medians of the runs ====\n", rate, dur, n
	printf "achieved %.0f webhooks/s (per run: %s): %s\n", median(ach, n), list(ach, n, 1), sus ? "sustained" : "NOT sustained"
	printf "webhook latency p50 %s ms, p99 %s ms from send; p99 %s ms from due time; send lateness p99 %s ms\n\n", ms(median(lat50, n)), ms(median(lat99, n)), ms(median(clat, n)), ms(median(late, n))
	printf "| lag from the webhook'"'"'s 200 to ... | p50 ms | p99 ms | max ms | p99 per run, ms |\n"
	printf "|---|---|---|---|---|\n"
	row("jsonl: on disk in the file (upper bound)", f50, f99, fmax, n)
	row("jsonl: readable in the file (lower bound)", v50, v99, vmax, n)
	for (e = 1; e <= ne; e++) {
		for (i = 1; i <= n; i++) {
			a[i] = r50[e, i]; b[i] = r99[e, i]; c[i] = rmax[e, i]
			st[i] = s99[e, i]
		}
		row(ex[e] ": delivery recorded by the engine", a, b, c, n)
		stp[e] = ms(median(st, n))
	}
	printf "\nstored (changed_at) to delivery recorded, p99 ms:"
	for (e = 1; e <= ne; e++) printf " %s %s;", ex[e], stp[e]
	printf "\nper run: 200s/requests"
	for (i = 1; i <= n; i++) printf " %d/%d", ok[i], req[i]
	printf "; non-200/write/closed/bad"
	for (i = 1; i <= n; i++) printf " %s", bad[i]
	printf "; jsonl lines on disk"
	for (i = 1; i <= n; i++) printf " %d", fn[i]
	printf "; undelivered"
	for (i = 1; i <= n; i++) { u = 0; for (e = 1; e <= ne; e++) u += und[e, i]; printf " %d", u }
	printf "\ndaemon CPU s per run"
	for (i = 1; i <= n; i++) printf " %.1f", cpu[i]
	printf "; load average before/after each run"
	for (i = 1; i <= n; i++) printf " %s", la[i]
	printf "\n==== end ====\n"
	exit sus ? 0 : 1
}' dur="$DURATION" "$W/results.txt"
}

: > "$W/results.txt"
nproc_=$(nproc)
echo "export-lag: $nproc_ cores; RATE=$RATE DURATION=$DURATION RUNS=$RUNS CONNS=$CONNS EXPORTERS=\"$EXPORTERS\"" >&2
rc=1
for rate in $RATE $FALLBACK_RATES; do
	if [ "$rate" -gt "$RATE" ]; then
		continue
	fi
	r=1
	while [ "$r" -le "$RUNS" ]; do
		one_run "$rate" "$r"
		r=$((r + 1))
	done
	st=0
	summarize "$rate" > "$W/summary-$rate.md" || st=$?
	cat "$W/summary-$rate.md"
	if [ $st -eq 0 ]; then
		rc=0
		break
	fi
	echo "export-lag: $rate/s was not sustained; trying the next rate" >&2
done
exit $rc
