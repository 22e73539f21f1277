# shellcheck shell=sh
# checkrun.sh: what scripts/valgrind.sh and scripts/tsan.sh share.
# Sourced (". scripts/checkrun.sh") from a build directory; POSIX sh.

# mkvar VAR: the value of make variable VAR in this build's Makefile
# (Makefile.am is the one list of programs and data).
mkvar() {
	# shellcheck disable=SC2016 # $(...) is make's, not the shell's
	printf 'rs-print-var:\n\t@echo $(%s)\n' "$1" |
	    make -s -f Makefile -f - rs-print-var
}

# check_verdict OUT RC LIMIT: read a check program's output OUT, its
# exit status RC and the timeout LIMIT (seconds) it ran under.  Sets
# checks (the number of checks run, or empty) and why (why it failed
# so far: "" when it timed out on nothing and all its checks passed;
# otherwise reasons, each ending in "; ").  The caller adds the reasons
# of its own tool, then treats a non-zero RC with no reason as one.
check_verdict() {
	_summary=$(grep -E '^[0-9]+%: Checks' "$1" | tail -n 1 || true)
	# shellcheck disable=SC2034 # read by the script that sources this
	checks=$(printf '%s' "$_summary" |
	    sed -n 's/.*Checks: \([0-9]*\).*/\1/p')
	why=""
	if [ "$2" -eq 124 ] || [ "$2" -eq 137 ]; then
		why="timed out after ${3}s; "
	fi
	case "$_summary" in
	"") why="${why}no check summary (exit $2); " ;;
	100%*) ;;
	*) why="${why}failed checks ($_summary); " ;;
	esac
}
