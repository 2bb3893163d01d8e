#!/usr/bin/env bash
# fetch_cifar10.sh: puts the official CIFAR-10 binary files where qatlab looks for them.
#   bash apps/scripts/fetch_cifar10.sh [DEST]
# DEST defaults to qatlab's data directory ($QATLAB_DATA_DIR, else $XDG_CACHE_HOME/qatlab, else
# ~/.cache/qatlab); the files land in DEST/cifar-10-batches-bin/ (data_batch_1..5.bin, test_batch.bin,
# 10,000 records of 3073 bytes each). Downloads cifar-10-binary.tar.gz (about 163 MB) from the data set's
# home page ($CIFAR10_URL overrides it) with curl or wget, checks every file's size and moves them in
# place only when all are right. Does nothing when the files are already there.
set -euo pipefail
url="${CIFAR10_URL:-https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz}"
dest="${1:-${QATLAB_DATA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/qatlab}}"
files=(data_batch_1.bin data_batch_2.bin data_batch_3.bin data_batch_4.bin data_batch_5.bin test_batch.bin)
record_bytes=3073
file_bytes=$((10000 * record_bytes))

complete() {  # all six files present with the right size in $1
  for f in "${files[@]}"; do
    [ -f "$1/$f" ] && [ "$(stat -c %s "$1/$f")" -eq "$file_bytes" ] || return 1
  done
}

if complete "$dest/cifar-10-batches-bin"; then
  echo "CIFAR-10 already in $dest/cifar-10-batches-bin"
  exit 0
fi
mkdir -p "$dest"
tmp="$(mktemp -d "$dest/.cifar10-download-XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "downloading $url"
if command -v curl >/dev/null; then
  curl -fsSL --retry 2 -o "$tmp/cifar-10-binary.tar.gz" "$url" || fail=1
elif command -v wget >/dev/null; then
  wget -q -O "$tmp/cifar-10-binary.tar.gz" "$url" || fail=1
else
  echo "fetch_cifar10.sh: neither curl nor wget is installed (apt-get install curl)" >&2
  exit 1
fi
if [ "${fail:-0}" = 1 ]; then
  echo "fetch_cifar10.sh: could not download $url; without internet access, put the six official binary" \
       "files in $dest/cifar-10-batches-bin by other means (see README.md, Data)" >&2
  exit 1
fi
tar -xzf "$tmp/cifar-10-binary.tar.gz" -C "$tmp"
if ! complete "$tmp/cifar-10-batches-bin"; then
  echo "fetch_cifar10.sh: the archive from $url does not hold the six files of $file_bytes bytes" >&2
  exit 1
fi
mkdir -p "$dest/cifar-10-batches-bin"
for f in "${files[@]}"; do mv "$tmp/cifar-10-batches-bin/$f" "$dest/cifar-10-batches-bin/$f"; done
echo "CIFAR-10 in $dest/cifar-10-batches-bin"
