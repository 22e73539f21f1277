#!/bin/sh
# Install the Debian 12 packages refundsync needs, if any are missing.
# Usage: scripts/deps.sh build|test|bench
# Uses sudo when not root.  Safe to run again: installs only what lacks.
set -e

build="gcc make autoconf automake pkg-config libmicrohttpd-dev libjwt-dev
libssl-dev libcjson-dev libsqlite3-dev libcurl4-openssl-dev libinih-dev"
# libclang-rt-14-dev: libFuzzer and the sanitizer runtimes for clang
# (only Recommended, by clang's libclang-common-14-dev, so
# --no-install-recommends would skip it).
# valgrind and clang-tidy: scripts/valgrind.sh and scripts/tidy.sh.
test="check faketime sqlite3 cppcheck clang libclang-rt-14-dev systemd
groff-base hledger beancount chromium valgrind clang-tidy"
bench="wrk time openssl"

want="$build"
case "${1:-build}" in
build) ;;
test) want="$build $test" ;;
bench) want="$build $test $bench" ;;
*) echo "usage: $0 build|test|bench" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
	    grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

echo "refundsync: installing Debian packages:$missing" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
