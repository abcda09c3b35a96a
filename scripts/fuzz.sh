#!/usr/bin/env bash
# fuzz.sh - builds the libFuzzer binaries of tests/fuzz/ and runs a fuzzing campaign.
#
# usage: scripts/fuzz.sh [-t SECONDS] [-b BUILD] [-w WORK] [-a ARTIFACTS] [-n] [TARGET...]
#   -t SECONDS   time per target (default 600)
#   -b BUILD     build folder (default /tmp/build-fuzz): CC=clang, -DH5S_LIBFUZZER=ON,
#                -DH5S_SANITIZE=ON (ASan + UBSan, the library instrumented for coverage)
#   -w WORK      work folder (default /tmp/h5s-fuzz-work): each target's corpus is a copy of
#                tests/fuzz/corpus/<target>/ made here, so the entries libFuzzer adds never
#                land in the repository; its log and temporary files go here too
#   -a ARTIFACTS where crashing, leaking and slow inputs are saved (default WORK/artifacts),
#                as <target>-crash-<sha1>, <target>-leak-..., <target>-timeout-..., -oom-...
#   -n           do not build (use the binaries already in BUILD)
#   TARGET...    fuzz_tck, fuzz_trx, ... (default: every tests/fuzz/fuzz_*.c), run one after
#                the other
# For each target it prints the seconds run, the inputs executed and their rate, the final
# coverage (cov: edges, ft: features), the corpus size and the inputs saved in ARTIFACTS.
# The exit status is 1 when any target saved an input, else 0.
#
# A found input is reproduced by the replayer of any build (it runs one file too):
#   /tmp/build-fuzz/tests/fuzz/fuzz_tck ARTIFACTS/fuzz_tck-crash-...
# Once the bug is fixed, the input goes into tests/fuzz/corpus/<target>/ as crash-<what>.bin
# so that ctest replays it in every build from then on. The machine is shared: run the
# script under `nice -n 10`; it builds with two jobs and fuzzes one target at a time.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECONDS_PER_TARGET=600
BUILD=/tmp/build-fuzz
WORK=/tmp/h5s-fuzz-work
ARTIFACTS=
BUILD_IT=1

while getopts "t:b:w:a:nh" opt; do
    case $opt in
    t) SECONDS_PER_TARGET=$OPTARG ;;
    b) BUILD=$OPTARG ;;
    w) WORK=$OPTARG ;;
    a) ARTIFACTS=$OPTARG ;;
    n) BUILD_IT=0 ;;
    h)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
ARTIFACTS=${ARTIFACTS:-$WORK/artifacts}

if [ $# -gt 0 ]; then
    TARGETS=("$@")
else
    TARGETS=()
    for src in "$ROOT"/tests/fuzz/fuzz_*.c; do
        TARGETS+=("$(basename "$src" .c)")
    done
fi
for t in "${TARGETS[@]}"; do
    if [ ! -f "$ROOT/tests/fuzz/$t.c" ]; then
        echo "fuzz.sh: no target $t (tests/fuzz/$t.c)" >&2
        exit 2
    fi
done

# Longest input per target: room for the formats' real structures, no more (libFuzzer
# runs faster on short inputs). MARC records go to 99,999 bytes, but 64 KiB hold several.
max_len() {
    case $1 in
    fuzz_marc_record | fuzz_trx) echo 65536 ;;
    fuzz_nifti_header) echo 32768 ;;
    fuzz_tck | fuzz_trk) echo 16384 ;;
    fuzz_frame_source) echo 4096 ;;
    fuzz_cli_parse) echo 1024 ;;
    *) echo 16384 ;;
    esac
}

if [ "$BUILD_IT" = 1 ]; then
    # -O1 with assertions kept (no NDEBUG): the usual build for fuzzing.
    CC=clang cmake -S "$ROOT" -B "$BUILD" -DH5S_LIBFUZZER=ON -DH5S_SANITIZE=ON \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" >/dev/null
    BUILD_TARGETS=()
    for t in "${TARGETS[@]}"; do
        BUILD_TARGETS+=("${t}_libfuzzer" "$t")
    done
    cmake --build "$BUILD" -j2 --target "${BUILD_TARGETS[@]}" >/dev/null
fi

mkdir -p "$WORK" "$ARTIFACTS"
export LSAN_OPTIONS="suppressions=$ROOT/tests/lsan.supp"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1"

found_any=0
printf '%-20s %8s %12s %9s %7s %8s %8s %6s\n' target seconds execs exec/s cov ft corpus saved
for t in "${TARGETS[@]}"; do
    bin="$BUILD/tests/fuzz/${t}_libfuzzer"
    if [ ! -x "$bin" ]; then
        echo "fuzz.sh: $bin is missing (build with CC=clang -DH5S_LIBFUZZER=ON)" >&2
        exit 2
    fi
    corpus="$WORK/corpus/$t"
    rm -rf "$corpus" "$WORK/tmp/$t"
    mkdir -p "$corpus" "$WORK/tmp/$t"
    cp "$ROOT/tests/fuzz/corpus/$t/"* "$corpus/"
    log="$WORK/$t.log"
    before=$(find "$ARTIFACTS" -maxdepth 1 -name "$t-*" | wc -l)
    start=$(date +%s)
    # The targets' temporary files go under WORK; stderr of the target (its parsers'
    # messages) is closed, libFuzzer's own report is kept.
    TMPDIR="$WORK/tmp/$t" "$bin" -max_total_time="$SECONDS_PER_TARGET" \
        -max_len="$(max_len "$t")" -timeout=25 -rss_limit_mb=2048 -close_fd_mask=2 \
        -print_final_stats=1 -artifact_prefix="$ARTIFACTS/$t-" "$corpus" >"$log" 2>&1 || true
    took=$(($(date +%s) - start))
    after=$(find "$ARTIFACTS" -maxdepth 1 -name "$t-*" | wc -l)
    saved=$((after - before))
    [ "$saved" -gt 0 ] && found_any=1
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(find "$corpus" -type f | wc -l)
    printf '%-20s %8s %12s %9s %7s %8s %8s %6s\n' "$t" "$took" "${execs:-?}" "${rate:-?}" \
        "${cov:-?}" "${ft:-?}" "$corp" "$saved"
    if [ "$saved" -gt 0 ]; then
        grep -E '^==[0-9]+==ERROR|^SUMMARY|runtime error|deadly signal|Test unit written' "$log" |
            head -5 | sed 's/^/    /'
    fi
done
echo "logs in $WORK, inputs saved in $ARTIFACTS"
exit $found_any
