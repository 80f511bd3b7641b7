#!/usr/bin/env bash
# Issue 8's measurements on one machine of N GPUs, in one device call:
#   1. the hardware: GPUs, topology, NVLink;
#   2. the loss curve of the reference GPT in bf16 on N GPUs (16 samples
#      each) against one GPU with the whole batch (16 N), per step, beside
#      the run-to-run noise of two one-GPU runs (compare_losses.py);
#   3. scaling: tokens/s per GPU at 1, 2, 4, 8 GPUs (up to N), 16 samples of
#      512 tokens per GPU per step; the steady rate is the difference of two
#      runs, STEPS + 20 and 20 steps, so start-up (CUDA context, NCCL's
#      communicator, the first steps) cancels out;
#   4. NCCL's all-reduce bus bandwidth over the N GPUs (the allreduce bench);
#   5. a rank killed (SIGKILL) in the middle of a run: how long the launcher
#      takes to stop the others, its exit code, and whether any rank is left.
# `%%launch` in a notebook needs a Rust toolchain for the cell, which the
# device has not: the CPU tests (tests/python/test_live_training.py) cover it.
#
# Build here (see the README's GPU section), then carry `.gpu/`:
#   eval "$(bash install/cuda-build-env.sh)"
#   cargo build --release -p taper-kernel --features cuda
#   cargo bench -p taper --features cuda --bench allreduce --no-run
#   mkdir -p .gpu && cp target/release/taper .gpu/ && cp <allreduce bench binary> .gpu/allreduce
#   strip .gpu/*; xz -T0 .gpu/taper .gpu/allreduce   (to fit the 64 MiB carry)
# Run there: bash tests/gpu/multi_gpu.sh [.gpu]   (STEPS=100 by default)
set -uo pipefail

# NVLink multicast stays off in every process started here (the device's
# KINDS.md says why); `taper launch` also sets the first for its ranks.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH=/usr/lib:/usr/lib/x86_64-linux-gnu:/usr/local/cuda-13.0/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

bin=$(realpath "${1:-.gpu}")
for f in "$bin"/*.xz; do [ -e "$f" ] && xz -d -f "$f"; done
chmod +x "$bin"/taper "$bin"/allreduce
here=$(dirname "$(realpath "$0")")
out=${OUT:-/tmp/taper-multi-gpu}
steps=${STEPS:-100}
gpus=$(nvidia-smi -L | wc -l)
rm -rf "$out" && mkdir -p "$out" && cd "$out" || exit 1
tokens_per_sample=512 # the copy task: 256 symbols, a separator, 255 of the answer (the last is only a label)

train() { # train OUTPUT_DIR NPROC ARGS...: the reference GPT in bf16
  local dir=$1 nproc=$2
  shift 2
  "$bin"/taper launch --nproc-per-node "$nproc" -- "$bin"/taper train \
    --model gpt-reference --bf16 true --save_strategy no --output_dir "$dir" "$@" \
    >"$dir.log" 2>&1 || { echo "FAILED: $dir (log follows)"; tail -20 "$dir.log"; }
}

echo "== 1. hardware: $gpus GPU(s)"
nvidia-smi -L
nvidia-smi topo -m
nvidia-smi nvlink -s -i 0 | head -20

echo "== 2. loss curve: $gpus GPU(s) x 16 against 1 GPU x $((16 * gpus)), $steps steps, bf16"
train one-gpu 1 --per_device_train_batch_size $((16 * gpus)) --max_steps "$steps" --logging_steps 1
train one-gpu-again 1 --per_device_train_batch_size $((16 * gpus)) --max_steps "$steps" --logging_steps 1
train n-gpus "$gpus" --per_device_train_batch_size 16 --max_steps "$steps" --logging_steps 1
python3 "$here/compare_losses.py" one-gpu one-gpu-again n-gpus

echo "== 3. scaling: 16 samples x $tokens_per_sample tokens per GPU per step, steady rate of $steps steps"
echo "| GPUs | ms/step | tokens/s | tokens/s per GPU | efficiency |"
echo "| --- | --- | --- | --- | --- |"
base=""
for n in 1 2 4 8; do
  [ "$n" -gt "$gpus" ] && break
  train "short-$n" "$n" --max_steps 20 --logging_steps 50
  train "long-$n" "$n" --max_steps $((steps + 20)) --logging_steps 50
  python3 - "$n" "$steps" "$tokens_per_sample" "short-$n" "long-$n" "$base" <<'PY'
import json, sys
n, steps, tokens = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
runtime = [json.load(open(f"{d}/train_results.json"))["train_runtime"] for d in sys.argv[4:6]]
ms = (runtime[1] - runtime[0]) / steps * 1000
rate = 16 * n * tokens * steps / (runtime[1] - runtime[0])
base = float(sys.argv[6]) if sys.argv[6] else rate
print(f"| {n} | {ms:.1f} | {rate:,.0f} | {rate / n:,.0f} | {rate / n / base:.1%} |")
open("base-rate", "w").write(str(base))
PY
  base=$(cat base-rate)
  rm -rf "short-$n" "long-$n"
done

echo "== 4. all-reduce over $gpus GPU(s)"
"$bin"/taper launch --nproc-per-node "$gpus" -- "$bin"/allreduce 2>&1 | grep -v '^\[rank[1-9]'

echo "== 5. a rank killed in the middle ($gpus GPU(s))"
mkdir -p killed
"$bin"/taper launch --nproc-per-node "$gpus" -- "$bin"/taper train --model gpt-reference \
  --bf16 true --save_strategy no --output_dir killed --max_steps 100000 --logging_steps 20 \
  >killed.log 2>&1 &
launcher=$!
for _ in $(seq 120); do grep -q "loss" killed.log && break; sleep 1; done
victim_rank=$((gpus > 1 ? 1 : 0))
victim=""
for pid in $(pgrep -P "$launcher"); do
  tr '\0' '\n' <"/proc/$pid/environ" | grep -qx "RANK=$victim_rank" && victim=$pid
done
if [ -z "$victim" ]; then
  echo "FAILED: no rank $victim_rank under launcher $launcher"; tail -20 killed.log
else
  start=$(date +%s.%N)
  kill -9 "$victim"
  wait "$launcher"
  code=$?
  end=$(date +%s.%N)
  left=$(pgrep -f "$bin/taper train" | tr '\n' ' ')
  echo "killed rank $victim_rank (pid $victim): the launcher exited $code after $(python3 -c "print(f'{$end - $start:.2f}')") s; ranks left: ${left:-none}"
  tail -5 killed.log
fi
echo "== done"
