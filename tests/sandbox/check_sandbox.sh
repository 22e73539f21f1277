#!/bin/sh
# check_sandbox.sh: the Wix sandbox's own selftest (every endpoint and
# fault, against an in-process server on 127.0.0.1:0).  Run by
# "make check" from the build directory.
set -u
sandbox=${RS_BUILDDIR:-$PWD}/tests/sandbox/wix-sandbox
[ -x "$sandbox" ] || sandbox=$PWD/tests/sandbox/wix-sandbox
exec "$sandbox" selftest
