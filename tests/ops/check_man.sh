#!/bin/sh
# check_man.sh: the man pages render without a single groff warning, and
# say everything they must:
#   - refundsync.8 has an entry for every command "refundsync --help"
#     prints;
#   - refundsync.conf.5 describes every key of etc/refundsync.conf (which
#     check_config keeps in step with config_keys()), and every key of
#     its commented [exporter NAME] examples, under its own section, as a
#     '.B "key = default"' item.  An exporter key the page does not list
#     must at least be in docs/exporters.md.
# Run by "make check"; by hand, from the build directory:
#   RS_SRCDIR=/path/to/source sh tests/ops/check_man.sh
set -u

srcdir=${RS_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
binary=${RS_BINARY:-$PWD/refundsync}
man8="$srcdir/docs/refundsync.8"
man5="$srcdir/docs/refundsync.conf.5"
sample="$srcdir/etc/refundsync.conf"
exporters_md="$srcdir/docs/exporters.md"
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

# 1, 2. Each page renders with every warning on, and says nothing.
for page in "$man8" "$man5"; do
	name=$(basename "$page")
	if ! command -v groff >/dev/null 2>&1; then
		bad "$name: groff is missing (scripts/deps.sh test)"
	elif [ ! -f "$page" ]; then
		bad "$name: missing"
	elif out=$(groff -man -ww -z -t "$page" 2>&1) && [ -z "$out" ] &&
	    out=$(LC_ALL=C.UTF-8 MANWIDTH=80 groff -man -ww -Tutf8 -t \
	    "$page" 2>&1 >/dev/null) && [ -z "$out" ]; then
		ok "$name: renders without warnings"
	else
		printf '%s\n' "$out" | sed 's/^/  /'
		bad "$name: groff warnings"
	fi
done

# 3. Every command of the usage summary has an entry in refundsync.8: a
# tagged paragraph (.TP) whose tag starts with the command's name.
if [ ! -x "$binary" ]; then
	bad "refundsync.8: commands: the binary $binary is missing"
elif [ -f "$man8" ]; then
	cmds=$("$binary" --help 2>&1 |
	    sed -n 's/^\(usage:\)\{0,1\} *refundsync \([a-z][a-z-]*\).*/\2/p' |
	    sort -u)
	documented=$(awk '
		/^\.TP/ { tag = 1; next }
		tag && /^\.B[IR]? / {
			line = $0
			sub(/^\.B[IR]? +"?/, "", line)
			split(line, w, /[ "]/)
			print w[1]
		}
		{ tag = 0 }' "$man8" | sort -u)
	missing=""
	for c in $cmds; do
		printf '%s\n' "$documented" | grep -qx "$c" ||
		    missing="$missing $c"
	done
	if [ -z "$cmds" ]; then
		bad "refundsync.8: commands: refundsync --help printed none"
	elif [ -n "$missing" ]; then
		bad "refundsync.8: commands not described:$missing"
	else
		ok "refundsync.8: describes all $(printf "%s\n" "$cmds" | wc -l) commands"
	fi
else
	bad "refundsync.8: commands: the page is missing"
fi

# 4. Every key of the sample config is described in refundsync.conf.5.
# Sections in the sample are "[name]" lines; keys are "key = " lines,
# commented out or not.  Past the EXPORTERS banner, every "#   key = "
# line of the commented examples is an [exporter NAME] key.
if [ -f "$sample" ] && [ -f "$man5" ]; then
	keys=$(awk '
		/^#+ +[A-Z]+ +#+ *$/ {
			b = $0
			gsub(/[# ]/, "", b)
			if (b == "EXPORTERS")
				exporters = 1
			next
		}
		exporters && /^#[ \t]+[a-z][a-z0-9_]* *= / {
			k = $0
			sub(/^#[ \t]+/, "", k)
			sub(/ *=.*/, "", k)
			print "exporter", k
			next
		}
		/^(# )?\[[a-z]+( [^]]*)?\]/ {
			s = $0
			sub(/^(# )?\[/, "", s)
			sub(/[] ].*/, "", s)
			sect = s
			next
		}
		sect != "" && /^(# ?)?[a-z][a-z0-9_]* *=/ {
			k = $0
			sub(/^(# ?)?/, "", k)
			sub(/ *=.*/, "", k)
			print sect, k
		}' "$sample" | sort -u)
	described=$(awk '
		/^\.SH/ {
			s = $0
			sect = ""
			if (match(s, /\[[a-z]+/))
				sect = substr(s, RSTART + 1, RLENGTH - 1)
			next
		}
		sect != "" && /^\.B[IR]? +"?[a-z][a-z0-9_]*( |"|$)/ {
			k = $0
			sub(/^\.B[IR]? +"?/, "", k)
			sub(/[ "].*/, "", k)
			print sect, k
		}' "$man5" | sort -u)
	missing=""
	n=0
	for pair in $(printf '%s\n' "$keys" | tr ' ' ':'); do
		n=$((n + 1))
		printf '%s\n' "$described" | grep -qx "$(echo "$pair" |
		    tr ':' ' ')" && continue
		case $pair in
		exporter:*)
			[ -f "$exporters_md" ] &&
			    grep -q "\`${pair#exporter:}\`" "$exporters_md" &&
			    continue
			;;
		esac
		missing="$missing [${pair%%:*}] ${pair#*:};"
	done
	if [ "$n" -eq 0 ]; then
		bad "refundsync.conf.5: found no keys in $sample"
	elif [ -n "$missing" ]; then
		bad "refundsync.conf.5: keys not described:$missing"
	else
		ok "refundsync.conf.5: describes all $n keys of etc/refundsync.conf"
	fi
else
	bad "refundsync.conf.5: keys: $sample or $man5 is missing"
fi

echo "man: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
