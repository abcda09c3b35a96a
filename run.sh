#!/usr/bin/env bash
# h5stream on a fresh Debian 12 machine, from a clean clone.
#
#   ./run.sh demo   install what is missing, build, and stream a real detector frame,
#                   replayed 5000 times as Poisson-resampled frames, into out.h5 while
#                   `h5stream tail -f` follows the file live; then a real tractogram, real
#                   NIfTI volumes and a real MARC catalogue the same way (into demo-out/)
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

data=../shared/data
dir=${OUT_DIR:-$here/demo-out}

# A real tractogram (1,000 streamlines with dps, dpv, groups, dpg) replayed 20 times at
# 20,000 streamlines/s while a reader tails /tracts; exported to TRX at close and checked.
demo_tracts() {
    local trx=$data/tracts/small_pascal_legacy_offsets.trx
    [ -f "$trx" ] || { echo "== (no $trx: skipping the tractography stream)"; return; }
    mkdir -p "$dir" && rm -rf "$dir/tracts.h5" "$dir/tracts.trx"
    echo "== streaming $trx x 20 into $dir/tracts.h5; tail -f shows every 4000th streamline:"
    build/tools/h5stream tail "$dir/tracts.h5" /tracts -f --interval 100 --timeout 60000 |
        awk 'NR % 4000 == 1 { print "   tail: " $0; fflush() }' &
    local tailer=$!
    build/tools/h5stream ingest tracts "$trx" --repeat 20 --rate 20000 -o "$dir/tracts.h5" \
        --export "trx:$dir/tracts.trx"
    wait "$tailer"
    echo "== checking $dir/tracts.trx against the TRX rules (tests/scripts/trx_check.py)"
    /usr/bin/python3 tests/scripts/trx_check.py "$dir/tracts.trx" && echo "   TRX ok"
}

# Real NIfTI volumes (NIfTI-1 and NIfTI-2, 3-D and 4-D) streamed into one collection while
# a reader tails /volumes; exported back to NIfTI.
demo_volumes() {
    local v=$data/volumes
    [ -d "$v" ] || { echo "== (no $v: skipping the volumes stream)"; return; }
    mkdir -p "$dir" && rm -rf "$dir/volumes.h5" "$dir/volumes-nifti"
    echo "== streaming 5 NIfTI volumes from $v into $dir/volumes.h5 (collection demo):"
    build/tools/h5stream tail "$dir/volumes.h5" /volumes -f --interval 100 --timeout 60000 |
        sed -u 's/^/   tail: /' &
    local tailer=$!
    build/tools/h5stream ingest volumes "$v/anatomical.nii" "$v/functional.nii" \
        "$v/example4d.nii.gz" "$v/example_nifti2.nii.gz" "$v/aniso_vox.nii.gz" \
        -o "$dir/volumes.h5" --collection demo --heterogeneous
    wait "$tailer"
    build/tools/h5stream export "$dir/volumes.h5" --to nifti -o "$dir/volumes-nifti"
    echo "   exported to $dir/volumes-nifti/demo/"
}

# A real library catalogue (3,804 MARC records) streamed while a reader tails /marc, then
# exported to MARCXML.
demo_marc() {
    local mrc=$data/marc/MMA_Pubs_records_2021_07.mrc
    [ -f "$mrc" ] || { echo "== (no $mrc: skipping the MARC stream)"; return; }
    mkdir -p "$dir" && rm -rf "$dir/marc.h5" "$dir/marc.xml"
    echo "== streaming $mrc into $dir/marc.h5; tail -f shows every 500th record:"
    build/tools/h5stream tail "$dir/marc.h5" /marc -f --interval 100 --timeout 60000 |
        awk 'NR % 500 == 1 { print "   tail: " $0; fflush() }' &
    local tailer=$!
    build/tools/h5stream ingest marc "$mrc" -o "$dir/marc.h5" --export "marcxml:$dir/marc.xml"
    wait "$tailer"
    echo "   MARCXML: $dir/marc.xml ($(grep -c '<record' "$dir/marc.xml") records)"
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
    demo_tracts
    demo_volumes
    demo_marc
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
