#!/usr/bin/env bash
# run.sh: data-parallel training on one 2-core machine: 1 process x 2 threads (unchunked, and with the
# chunks a distributed run uses) against 2 processes x 1 thread under mpirun, for LeNet-5 (QAT W4A4 LSQ,
# MNIST) and ResNet-20 (QAT W8A8, CIFAR-10); images/s of one epoch of training (evaluation excluded), in
# results.csv, the logs beside it. Usage: bash experiments/mpi_scaling/run.sh (after apps/scripts/build.sh
# with Open MPI installed; CIFAR-10 in the data directory, see the README's Data section). Run it on a
# quiet machine.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
Q="${QATLAB:-$here/../../build/apps/qatlab}"
runs="$here/runs"
rm -rf "$runs"
mkdir -p "$runs"
mpi=(mpirun --oversubscribe --allow-run-as-root -np 2)
echo "model,setup,processes,threads_per_process,grad_chunks,train_img_per_s" > "$here/results.csv"
: > "$here/run.log"

run() {  # run MODEL SETUP PROCESSES THREADS CHUNKS ARGS...
  local model="$1" setup="$2" procs="$3" threads="$4" chunks="$5"
  shift 5
  local out="$runs/$model-$setup" launcher=()
  [ "$procs" -gt 1 ] && launcher=("${mpi[@]}")
  local cmd=("${launcher[@]}" "$Q" qat "$@" --threads "$threads" --grad-chunks "$chunks" --out "$out" --progress none)
  echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ): ${cmd[*]}" >> "$here/run.log"
  "${cmd[@]}" >> "$here/run.log" 2>&1
  # metrics.csv: epoch,lr,train_loss,train_acc,test_loss,test_acc,train_img_per_s,epoch_seconds
  local ips
  ips="$(tail -n 1 "$out/metrics.csv" | cut -d, -f7)"
  echo "$model,$setup,$procs,$threads,$chunks,$ips" >> "$here/results.csv"
}

lenet=(--model lenet5 --dataset mnist --epochs 1 --batch-size 64 --train-limit 16384 --test-limit 256
       --wbits 4 --abits 4 --wquant lsq --aquant lsq)
resnet=(--model resnet20 --dataset cifar10 --epochs 1 --batch-size 128 --train-limit 2560 --test-limit 256)
for spec in lenet5 resnet20; do
  if [ "$spec" = lenet5 ]; then args=("${lenet[@]}"); else args=("${resnet[@]}"); fi
  run "$spec" 1x2-unchunked 1 2 1 "${args[@]}"
  run "$spec" 1x2-chunked 1 2 8 "${args[@]}"
  run "$spec" 2x1 2 1 8 "${args[@]}"
done
cat "$here/results.csv"
