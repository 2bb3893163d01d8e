#!/usr/bin/env bash
# run.sh: qatlab's integer graphs exported to ONNX and run in ONNX Runtime (CPU, npm onnxruntime-node),
# against qatlab's own integer engine on the whole test set: share of logits with equal codes and within
# one step, the largest difference, top-1 agreement and both accuracies (apps/scripts/onnx_compare.js),
# and the speed of each: ONNX Runtime's images/s at batch 256 (2 threads) and its median batch-1 latency
# (1 thread, 200 runs, apps/scripts/onnx_run.js) next to `qatlab eval` (2 threads) and `qatlab bench`.
# The exports use uint8 activations (the default); LeNet-5 W8A8 is also run with int8 activations.
#   LeNet-5 / MNIST: float 3 epochs -> W8A8 QAT 1 epoch; W4A4 QAT 2 epochs with the first and last layer
#   at 8 bits (the recipe of experiments/mnist_qat_lenet5).
#   With --resnet20: ResNet-20 / CIFAR-10, briefly trained (float 2 epochs -> W8A8 QAT 1 epoch): its
#   agreement figures are those of a weak model (about 60-70 % accurate), not of the recipe's.
#   With --resnet20-from FLOAT_CKPT: only ResNet-20, QAT W8A8 (1 epoch on 10,000 training images) from a
#   trained float checkpoint (the recipe's of experiments/cifar10_resnet20/), into run_trained.log and
#   results_trained.json.
# Writes run.log and results.json here. Usage (from the repository root, after apps/scripts/build.sh and
# apps/scripts/fetch_onnxruntime.sh): bash experiments/onnx_export/run.sh [--resnet20 | --resnet20-from CKPT]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$here/../.."
Q="$root/build/apps/qatlab"
scripts="$root/apps/scripts"
runs="$here/runs"
data="${QATLAB_DATA_DIR:-$HOME/.cache/qatlab}"
rm -rf "$runs"
mkdir -p "$runs"
common=(--threads 2 --progress plain)
results="$runs/results.jsonl"

# compare NAME DIR IMAGES_OPTION IMAGES_FILE [EXPORT_OPTIONS]: export DIR/model.int8.h5, run it in both
# engines, compare.
compare() {
  local name=$1 dir=$2 images_opt=$3 images=$4
  shift 4
  "$Q" export "$dir/model.int8.h5" -o "$dir/$name.onnx" "$@"
  "$Q" eval "$dir/model.int8.h5" --threads 2 --dump "$dir/$name.qatlab.csv"
  local ort agree
  ort=$(node "$scripts/onnx_run.js" "$dir/$name.onnx" --out "$dir/$name.ort.codes" "$images_opt" "$images" \
    --batch 256 --threads 2)
  agree=$(node "$scripts/onnx_compare.js" "$dir/$name.qatlab.csv" "$dir/$name.ort.codes")
  local latency
  latency=$(node "$scripts/onnx_run.js" "$dir/$name.onnx" --out "$dir/$name.ort1.codes" "$images_opt" "$images" \
    --batch 256 --threads 1 --latency 200)
  echo "onnxruntime $name (2 threads, batch 256): $ort"
  echo "onnxruntime $name (1 thread, batch-1 latency): $latency"
  echo "agreement $name: $agree"
  echo "{\"model\": \"$name\", \"agreement\": $agree, \"onnxruntime_2_threads\": $ort, \"onnxruntime_1_thread\": $latency}" >>"$results"
}

log="$here/run.log" json="$here/results.json"
if [ "${1:-}" = "--resnet20-from" ]; then
  log="$here/run_trained.log" json="$here/results_trained.json"
  cp "$2" "$runs/r20-float.h5"  # a copy: the recipe may rewrite its checkpoint meanwhile
  {
    echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); float: $2"
    "$Q" eval "$runs/r20-float.h5" --threads 2
    "$Q" qat --from "$runs/r20-float.h5" --epochs 1 --lr 0.01 --train-limit 10000 "${common[@]}" \
      --out "$runs/r20-w8a8"
    "$Q" convert "$runs/r20-w8a8/checkpoint.h5"
    compare resnet20-w8a8-trained "$runs/r20-w8a8" --cifar "$data/cifar-10-batches-bin/test_batch.bin"
  } 2>&1 | grep -v " batch [0-9]*/" | tee "$log"
else {
  echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (the machine was shared)"
  "$Q" train --model lenet5 --dataset mnist --epochs 3 "${common[@]}" --out "$runs/float"
  "$Q" qat --from "$runs/float/checkpoint.h5" --epochs 1 --lr 0.01 "${common[@]}" --out "$runs/w8a8"
  "$Q" convert "$runs/w8a8/checkpoint.h5"
  compare lenet5-w8a8 "$runs/w8a8" --idx "$data/mnist/t10k-images-idx3-ubyte"
  compare lenet5-w8a8-int8-activations "$runs/w8a8" --idx "$data/mnist/t10k-images-idx3-ubyte" --activations int8
  "$Q" qat --from "$runs/float/checkpoint.h5" --epochs 2 --lr 0.01 --wbits 4 --abits 4 \
    --layer-bits features.0=8:8 --layer-bits classifier.4=8:8 "${common[@]}" --out "$runs/w4a4"
  "$Q" convert "$runs/w4a4/checkpoint.h5"
  compare lenet5-w4a4 "$runs/w4a4" --idx "$data/mnist/t10k-images-idx3-ubyte"
  "$Q" bench --float "$runs/float/checkpoint.h5" --int8 "$runs/w8a8/model.int8.h5" --threads 2
  "$Q" bench --float "$runs/float/checkpoint.h5" --int8 "$runs/w8a8/model.int8.h5" --threads 1
  if [ "${1:-}" = "--resnet20" ]; then
    "$Q" train --model resnet20 --dataset cifar10 --epochs 2 "${common[@]}" --out "$runs/r20-float"
    "$Q" qat --from "$runs/r20-float/checkpoint.h5" --epochs 1 --lr 0.01 "${common[@]}" --out "$runs/r20-w8a8"
    "$Q" convert "$runs/r20-w8a8/checkpoint.h5"
    compare resnet20-w8a8-brief "$runs/r20-w8a8" --cifar "$data/cifar-10-batches-bin/test_batch.bin"
    "$Q" bench --float "$runs/r20-float/checkpoint.h5" --int8 "$runs/r20-w8a8/model.int8.h5" --threads 2
  fi
} 2>&1 | grep -v " batch [0-9]*/" | tee "$log"
fi
node -e '
const fs = require("fs");
const rows = fs.readFileSync(process.argv[1], "utf8").trim().split("\n").map(JSON.parse);
fs.writeFileSync(process.argv[2], JSON.stringify({command: process.argv[3], results: rows}, null, 2) + "\n");
' "$results" "$json" "bash experiments/onnx_export/run.sh${1:+ $1}${2:+ $2}"
rm -rf "$runs"
