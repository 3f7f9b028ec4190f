#!/usr/bin/env bash
# The GPU benchmarks behind benchmarks/results/*-cuda-*.json, in one command:
#   bash benchmarks/gpu.sh [speed|memory|overhead|all] [results folder]
# Needs torch with CUDA, transformers, peft, trl, datasets, accelerate, bitsandbytes and
# liger-kernel, and a tokenizer folder in $TOKENIZER_DIR (default: the embedded model's cache).
set -uo pipefail
what=${1:-all}
out=${2:-benchmarks/results}
mkdir -p "$out"
day=$(date +%Y-%m-%d)
tok=()
if [ -n "${TOKENIZER_DIR:-}" ]; then tok=(--tokenizer-dir "$TOKENIZER_DIR"); fi
export PYTHONUNBUFFERED=1

if [ "$what" = memory ] || [ "$what" = all ]; then
  python -m benchmarks.memory --device cuda "${tok[@]}" \
    --shapes "${MEMORY_SHAPES:-smollm2-135m,smollm2-360m,llama-1b}" \
    --methods lora,qlora,full --batches "${MEMORY_BATCHES:-8x512}" \
    --out "$out/$day-cuda-memory${MEMORY_TAG:-}.json"
fi
if [ "$what" = speed ] || [ "$what" = all ]; then
  # SmolLM2-135M shape: the workbench's defaults and its levers taken away or added one at a time,
  # against TRL's defaults and its fastest settings
  python -m benchmarks.training --device cuda --shape smollm2-135m --data alpaca \
    --batch-size 16 --max-length 512 --learning-rate 2e-4 --warmup 5 "${tok[@]}" \
    --stacks "${SPEED_STACKS:-workbench,workbench+compile,plain,plain+compile,workbench+auto,trl,trl-liger-packing}" \
    --steps-for "${SPEED_STEPS:-workbench=100,workbench+compile=100,plain=100,plain+compile=100,workbench+auto=40,trl=20,trl-liger-packing=20}" \
    --out "$out/$day-cuda-smollm2-135m${SPEED_TAG:-}.json"
  # a 1B Llama shape, for model FLOPs utilisation
  python -m benchmarks.training --device cuda --shape llama-1b --data alpaca \
    --batch-size 16 --max-length 512 --learning-rate 2e-4 --warmup 5 "${tok[@]}" \
    --stacks "${BIG_STACKS:-workbench+auto,trl}" --steps-for "${BIG_STEPS:-workbench+auto=30,trl=15}" \
    --out "$out/$day-cuda-llama-1b.json"
fi
if [ "$what" = overhead ] || [ "$what" = all ]; then
  # a step's wall time phase by phase on the deep-narrow shape (arithmetic negligible): what the
  # workbench, a bare loop and TRL cost around the arithmetic, and what each lever pays
  python -m benchmarks.overhead --device cuda --repeats "${OVERHEAD_REPEATS:-3}" \
    --stacks "${OVERHEAD_STACKS:-workbench,workbench+stock-flops,plain,trl}" \
    --out "$out/$day-cuda-overhead.json"
fi
