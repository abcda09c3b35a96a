#!/usr/bin/env bash
# h5stream on a fresh Debian 12 machine, from a clean clone.
#
#   ./run.sh demo   install what is missing, build, and stream a real detector frame,
#                   replayed 5000 times as Poisson-resampled frames, into out.h5 while
#                   `h5stream tail -f` follows the file live
#   ./run.sh test   install what is missing, then build and run the whole test suite
#                   twice: with -Werror, and with AddressSanitizer + UBSan
#
# Run as root or with sudo available (apt-get installs the dependencies).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
jobs=$(nproc 2>/dev/null || echo 2)

build() { # build DIR [cmake options...]
    local dir=$1
    shift
    cmake -S . -B "$dir" -DH5S_WERROR=ON "$@" >/dev/null
    cmake --build "$dir" -j "$jobs"
}

case "${1:-}" in
demo)
    scripts/install-deps.sh
    build build
    frame=../shared/data/frames/AgBehenate_228.hdf5
    [ -f "$frame" ] || frame=tests/data/AgBehenate_228.hdf5
    out=${OUT:-$here/out.h5}
    rm -f "$out"
    echo "== streaming $frame:/entry/data/data x 5000 (Poisson) into $out"
    echo "== h5stream tail -f follows it live (every 250th frame shown):"
    build/tools/h5stream tail "$out" -f --interval 100 --timeout 60000 |
        awk 'NR % 250 == 1 { print "   tail: " $0; fflush() }' &
    tailer=$!
    build/tools/h5stream ingest frames "$frame:/entry/data/data" --repeat 5000 --poisson \
        --compress blosc:lz4:5:shuffle -o "$out"
    wait "$tailer"
    echo "== h5stream info $out"
    build/tools/h5stream info "$out"
    ;;
test)
    scripts/install-deps.sh
    echo "== format check (clang-format)"
    git ls-files '*.c' '*.h' | xargs clang-format --dry-run -Werror
    echo "== static analysis (cppcheck, kept at zero findings)"
    cppcheck --quiet --enable=warning,performance,portability --inline-suppr \
        --error-exitcode=1 --std=c11 -D__GNUC__ -I h5stream -I filters -I formats -I readers -I tools \
        --suppress=missingIncludeSystem h5stream filters formats readers tools tests examples
    echo "== build with -Wall -Wextra -Werror, run the tests"
    build build
    (cd build && ctest --output-on-failure -j "$jobs")
    echo "== build with AddressSanitizer + UndefinedBehaviorSanitizer, run the tests"
    build build-asan -DH5S_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
    (cd build-asan && ctest --output-on-failure -j "$jobs")
    ;;
*)
    echo "usage: ./run.sh demo | ./run.sh test" >&2
    exit 2
    ;;
esac
