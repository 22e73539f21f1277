#!/bin/sh
# Bootstrap autotools, configure and build refundsync out of tree.
# Usage: scripts/build.sh BUILDDIR [configure options...]
set -e
top=$(cd "$(dirname "$0")/.." && pwd)
dir=$1
shift
cd "$top"
if [ ! -x configure ] || [ configure.ac -nt configure ] ||
    [ Makefile.am -nt Makefile.in ]; then
	./autogen.sh >/dev/null 2>&1 || ./autogen.sh
fi
mkdir -p "$dir"
cd "$dir"
stamp=.configure-args
if [ ! -f Makefile ] || [ "$(cat $stamp 2>/dev/null)" != "$*" ]; then
	"$top/configure" "$@" >configure.out 2>&1 ||
	    { cat configure.out; exit 1; }
	echo "$*" > $stamp
fi
make -j"$(nproc)" >make.out 2>&1 || { cat make.out; exit 1; }
