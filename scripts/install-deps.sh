#!/usr/bin/env bash
# Installs, from Debian 12's packages, whatever h5stream needs to build, test and run
# that is not installed yet. Needs root (or sudo). The one list of dependencies.
set -euo pipefail

packages=(
    build-essential cmake pkg-config         # toolchain
    libhdf5-dev hdf5-tools                   # HDF5 1.10.8 (serial, thread-safe), h5dump, h5clear
    libblosc-dev hdf5-filter-plugin-blosc-serial  # Blosc and hdf5-blosc (filter 32001)
    zlib1g-dev libjansson-dev libcmocka-dev  # deflate, JSON, unit tests
    libzip-dev                               # TRX zip archives (tracts)
    libnifti2-dev                            # NIfTI-1 and NIfTI-2 (volumes)
    libyaz-dev yaz                           # MARC-8 conversion; yaz-marcdump (marc)
    openmpi-bin libopenmpi-dev               # mpirun: one writer per rank (shards)
    python3 python3-h5py python3-hdf5plugin python3-numpy python3-nibabel  # independent readers
    clang-format cppcheck                    # formatting and static checks in the test run
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "installing: ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
