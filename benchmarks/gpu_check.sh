#!/usr/bin/env bash
# The GPU check: one prepared script, about 6 minutes on one H200 (docs/gpu.md).
#
#   bash benchmarks/gpu_check.sh            # from the repository root, after `make install`
#
# 1. the CUDA-marked tests (bf16 autocast training of every method, datasets held on the GPU,
#    a 2-rank NCCL launch when two GPUs are visible);
# 2. training throughput of busseg's loop vs a bare PyTorch loop at the paper's size
#    (ResNet-34 U-Net, 224 px, batch 8, bf16): images/s, peak GPU memory, loop/bare ratio
#    (median of 3 repetitions of 50 steps: the first one, which carries CUDA's warm-up, drops out);
# 3. the same with 2 DDP ranks when more than one GPU is visible;
# 4. the grounded_sam backend's seconds per image at full size (random weights, same compute);
# 5. a short bf16 training run of the whole pipeline (`dvc repro`) on BUS-BRA, when it is there.
# Figures go to $OUT (default benchmarks/results/gpu) as JSON and text; carry them into a result file
# there (benchmarks/results/gpu/h200.yaml) and run `python tools/render_results.py` (docs/benchmarks.md).
#
# Settings (environment variables):
#   PY            the interpreter (default .venv/bin/python, else python3 on the PATH)
#   OUT           where the figures go (default benchmarks/results/gpu)
#   BUSBRA        the BUS-BRA folder, read by steps 4 and 5 (default ../shared/data/BUS-BRA)
#   BUSBRA_LIMIT  the first N BUS-BRA images that step 5 uses (default 400)
#   STEPS         the numbered steps to run (default 12345; e.g. STEPS=5 re-runs the pipeline only)
# Each step has its own time limit (11 minutes in all at worst); a step that fails or runs out
# of time is recorded and the script goes on, exiting 1 at the end. Without a .venv (a bare
# GPU image), put busseg's src/ and its dependencies on PYTHONPATH and dvc on the PATH.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3 || command -v python)
OUT=${OUT:-benchmarks/results/gpu}
BUSBRA=${BUSBRA:-../shared/data/BUS-BRA}
BUSBRA_LIMIT=${BUSBRA_LIMIT:-400}
STEPS=${STEPS:-12345}
mkdir -p "$OUT"
status=0
step() { echo; echo "== $*  ($(date -u +%H:%M:%S) UTC)"; }
want() { [[ $STEPS == *$1* ]]; }

step "device"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count(),
'name', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
} 2>&1 | tee "$OUT/device.txt"
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)

if want 1; then
  step "1. CUDA-marked tests"
  timeout 120 "$PY" -m pytest -q -m cuda tests 2>&1 | tee "$OUT/tests.txt" || status=1
fi

if want 2; then
  step "2. throughput, 1 GPU (paper size, dual_teacher and supervised)"
  for method in supervised dual_teacher; do
    timeout 90 "$PY" benchmarks/loop_overhead.py --device cuda --setting paper --method "$method" \
      --steps 50 --reps 3 --threads 4 --json "$OUT/throughput_1gpu_$method.json" || status=1
  done
fi

if want 3 && [ "${GPUS:-0}" -gt 1 ]; then
  step "3. throughput, 2 DDP ranks"
  timeout 90 "$PY" -m busseg.launch --nproc 2 --device cuda benchmarks/loop_overhead.py --ddp-only \
    --device cuda --setting paper --method dual_teacher --steps 50 --reps 3 --threads 4 \
    --json "$OUT/throughput_2gpu_dual_teacher.json" || status=1
fi

if want 4; then
  step "4. grounded_sam seconds per image (full size, random weights)"
  if [ -d "$BUSBRA/images" ]; then
    timeout 120 "$PY" benchmarks/vlm_speed.py --device cuda --count 5 --threads 4 --images "$BUSBRA/images" 2>&1 \
      | tee "$OUT/vlm_speed.txt" || status=1
  else
    echo "skipped: $BUSBRA/images not found" | tee "$OUT/vlm_speed.txt"
  fi
fi

if want 5; then
  step "5. a short bf16 pipeline run on BUS-BRA"
  if [ -d "$BUSBRA/images" ]; then
    timeout 240 "$PY" benchmarks/pipeline_budget.py --params-file benchmarks/busbra.yaml \
      --set "datasets.busbra.root=$BUSBRA" --set runtime.device=cuda --set runtime.threads=4 \
      --set "datasets.busbra.limit=$BUSBRA_LIMIT" --set warmup.epochs=2 --set train.epochs=2 2>&1 \
      | tee "$OUT/pipeline_busbra.txt" || status=1
  else
    echo "skipped: $BUSBRA not found" | tee "$OUT/pipeline_busbra.txt"
  fi
fi

step "done: exit $status"
exit $status
