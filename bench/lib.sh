# bench/lib.sh: helpers every bench script sources (bash).

# The port a server wrote to its log as "NAME on 127.0.0.1:PORT", waiting
# up to 10 s for it; on failure the log goes to stderr.
wait_port() { # LOGFILE NAME -> port
	i=0
	while [ $i -lt 100 ]; do
		p=$(sed -n "s/.*$2 on 127\.0\.0\.1:\([0-9]*\).*/\1/p" "$1" | head -1)
		[ -n "$p" ] && { echo "$p"; return 0; }
		sleep 0.1
		i=$((i + 1))
	done
	echo "bench: server did not start; log:" >&2
	cat "$1" >&2
	return 1
}

# CPU time a process has used so far.
cpu_ticks() { # PID -> utime + stime of the process, in clock ticks
	# Fields after the ")" that ends the command name: 12 and 13, so a
	# command name with spaces cannot shift them.
	sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# The set-up of a bench against the Wix sandbox: a warning if B is a
# sanitizer build, a fresh work directory W holding the sandbox's app
# secret, and a trap that stops the daemon ($rspid) and the sandbox
# ($sbpid) when the script exits.
sandbox_setup() { # B W -> sets sbpid="" rspid=""
	if grep -q '^SAN_CFLAGS = .*-fsanitize' "$1/Makefile" 2>/dev/null
	then
		echo "bench: warning: $1 is a sanitizer build; the figures" \
		    "will not mean much" >&2
	fi
	rm -rf "$2"
	mkdir -p "$2"
	printf 'sandbox-secret\n' > "$2/app-secret"
	chmod 600 "$2/app-secret"
	sbpid=""
	rspid=""
	trap sandbox_cleanup EXIT
}

sandbox_cleanup() {
	[ -n "$rspid" ] && kill -TERM "$rspid" 2>/dev/null
	[ -n "$sbpid" ] && kill -TERM "$sbpid" 2>/dev/null
	wait 2>/dev/null
	return 0
}
