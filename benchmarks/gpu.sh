#!/usr/bin/env bash
# Training and evaluation speed on one CUDA device, SmolVLM-256M's full shape with random weights (nothing from the
# Hub: the model is built locally, the data are generated images). Under 8 minutes on one H100: input path (~1 min),
# training (original / ours_no_cache / ours_cache, 50 timed steps, op counts + a profile of the top host costs),
# torch.compile check, evaluation.
#
#   benchmarks/gpu.sh [OUT_DIR]                   # writes OUT_DIR/train_gpu.json (+ eval_gpu.json); default benchmarks/results
#   benchmarks/gpu.sh /tmp/dry --device cpu --tiny   # dry run of the same steps on the CPU, tiny model (about a minute)
#
# Needs python3 with torch, transformers, trl, peft, datasets, accelerate, pillow, pyyaml; the repository root goes
# on PYTHONPATH (no `pip install -e .` needed). Training: benchmarks/bench_train.py (the original project's recipe vs
# ours, ratios measured in the same run). Evaluation: benchmarks/bench_eval.py (the evaluation package's benchmark),
# when this checkout has it.
set -uo pipefail

OUT="benchmarks/results"
if [[ $# -gt 0 && "$1" != --* ]]; then OUT="$1"; shift; fi
DEVICE=cuda
SIZE=full
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --tiny) SIZE=tiny; shift ;;
    *) echo "usage: $0 [OUT_DIR] [--device cuda|cpu] [--tiny]" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OMP_WAIT_POLICY=PASSIVE HF_HUB_DISABLE_TELEMETRY=1
PYTHON="${PYTHON:-python3}"

if [[ "$DEVICE" == cuda ]]; then
  "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')" || exit 1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  # the original recipe at its 8 rows/step; ours at 64 (the lean recipes' 32 and larger both fit: ~1.4 GB at 8)
  TRAIN_ARGS=(--device cuda --batch_size 8 --ours_batch_size 64 --grouped_batch_size 8 --steps 50 --warmup 5
              --cache_batch_size 64 --workers 2 --logging_steps 25 --profile)
  COMPILE_ARGS=(--device cuda --batch_size 8 --ours_batch_size 64 --steps 30 --warmup 10 --cache_batch_size 64
                --workers 2 --logging_steps 25)
  EVAL_ARGS=(--device cuda --n_images 32 --batch_size 32)
  INPUT_ARGS=(--rows 256 --passes 2)
else
  TRAIN_ARGS=(--device cpu --threads "${THREADS:-2}" --batch_size 2 --steps 2 --warmup 1 --profile)
  COMPILE_ARGS=()
  EVAL_ARGS=(--device cpu --n_images 2 --batch_size 9)
  INPUT_ARGS=(--rows 32 --passes 1)
fi
"$PYTHON" -c "import torch, transformers, trl, peft, datasets; print('torch', torch.__version__, '| transformers', transformers.__version__, '| trl', trl.__version__, '| peft', peft.__version__, '| datasets', datasets.__version__)"

status=0
start=$SECONDS
echo "== input path: TRL's collator vs pre-processed rows, one worker (CPU side of the run)"
timeout 60 "$PYTHON" benchmarks/bench_input_path.py "${INPUT_ARGS[@]}" --out "$OUT/input_path_${DEVICE/cuda/gpu}.json" >/dev/null || {
  echo "input-path benchmark failed or timed out (rc=$?)" >&2; status=1; }
echo "== training: original recipe vs ours ($SIZE shape, $DEVICE)"
timeout 220 "$PYTHON" benchmarks/bench_train.py --size "$SIZE" "${TRAIN_ARGS[@]}" --out "$OUT/train_${DEVICE/cuda/gpu}.json" || {
  echo "training benchmark failed or timed out (rc=$?)" >&2; status=1; }
echo "   ($((SECONDS - start)) s so far)"

if [[ ${#COMPILE_ARGS[@]} -gt 0 ]]; then
  echo "== training: ours_cache with torch.compile vs the original (does compiling pay?)"
  timeout 100 "$PYTHON" benchmarks/bench_train.py --size "$SIZE" "${COMPILE_ARGS[@]}" --configs original,ours_cache,ours_cache_compile \
    --out "$OUT/train_gpu_compile.json" || echo "compile benchmark failed or timed out (rc=$?): leave torch_compile off" >&2
  echo "   ($((SECONDS - start)) s so far)"
fi

if [[ -f benchmarks/bench_eval.py ]]; then
  if "$PYTHON" benchmarks/bench_eval.py --help 2>/dev/null | grep -q -- "--device"; then
    echo "== evaluation: original style vs ours ($DEVICE)"
    EXTRA=()
    if "$PYTHON" benchmarks/bench_eval.py --help 2>/dev/null | grep -q -- "--size"; then EXTRA=(--size "$SIZE")
    elif [[ "$SIZE" == tiny ]]; then echo "bench_eval.py has no --size flag: skipped in the --tiny dry run" >&2; EVAL_ARGS=(); fi
    if [[ ${#EVAL_ARGS[@]} -gt 0 ]]; then
      timeout 100 "$PYTHON" benchmarks/bench_eval.py "${EVAL_ARGS[@]}" "${EXTRA[@]}" --out "$OUT/eval_${DEVICE/cuda/gpu}.json" || {
        echo "evaluation benchmark failed or timed out (rc=$?)" >&2; status=1; }
    fi
  else
    echo "benchmarks/bench_eval.py has no --device flag: evaluation benchmark skipped" >&2
  fi
else
  echo "benchmarks/bench_eval.py not in this checkout: evaluation benchmark skipped" >&2
fi
echo "== done in $((SECONDS - start)) s; results in $OUT"
ls -l "$OUT"
exit $status
