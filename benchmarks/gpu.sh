#!/usr/bin/env bash
# Training and evaluation speed on one CUDA device, SmolVLM-256M's full shape with random weights (nothing from the
# Hub: the model is built locally, the data are generated images). Under 8 minutes on one H100.
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
  TRAIN_ARGS=(--device cuda --batch_size 8 --grouped_batch_size 2 --steps 10 --warmup 3 --cache_batch_size 32 --workers 4)
  EVAL_ARGS=(--device cuda --n_images 32 --batch_size 32)
else
  TRAIN_ARGS=(--device cpu --threads "${THREADS:-2}" --batch_size 2 --steps 2 --warmup 1)
  EVAL_ARGS=(--device cpu --n_images 2 --batch_size 9)
fi
"$PYTHON" -c "import torch, transformers, trl, peft, datasets; print('torch', torch.__version__, '| transformers', transformers.__version__, '| trl', trl.__version__, '| peft', peft.__version__, '| datasets', datasets.__version__)"

status=0
start=$SECONDS
echo "== training: original recipe vs ours ($SIZE shape, $DEVICE)"
timeout 330 "$PYTHON" benchmarks/bench_train.py --size "$SIZE" "${TRAIN_ARGS[@]}" --out "$OUT/train_${DEVICE/cuda/gpu}.json" || {
  echo "training benchmark failed or timed out (rc=$?)" >&2; status=1; }
echo "   ($((SECONDS - start)) s so far)"

if [[ -f benchmarks/bench_eval.py ]]; then
  if "$PYTHON" benchmarks/bench_eval.py --help 2>/dev/null | grep -q -- "--device"; then
    echo "== evaluation: original style vs ours ($DEVICE)"
    EXTRA=()
    if "$PYTHON" benchmarks/bench_eval.py --help 2>/dev/null | grep -q -- "--size"; then EXTRA=(--size "$SIZE")
    elif [[ "$SIZE" == tiny ]]; then echo "bench_eval.py has no --size flag: skipped in the --tiny dry run" >&2; EVAL_ARGS=(); fi
    if [[ ${#EVAL_ARGS[@]} -gt 0 ]]; then
      timeout 200 "$PYTHON" benchmarks/bench_eval.py "${EVAL_ARGS[@]}" "${EXTRA[@]}" --out "$OUT/eval_${DEVICE/cuda/gpu}.json" || {
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
