#!/usr/bin/env bash
# The experiment that matters: supervised vs mean_teacher vs dual_teacher on BUS-BRA at
# 2.5 % and 10 % labels, the fully supervised upper bound, and the paper's ablation ladder
# at 2.5 %, all under one budget (benchmarks/ssl_busbra.yaml), as queued DVC experiments.
#
#   benchmarks/ssl_ladder.sh [WORKDIR]        (env: BUSBRA_ROOT, JOBS=2)
#
# It clones this repository into WORKDIR (default /tmp/busseg-ladder), points it at BUS-BRA,
# runs the baseline once (prepare, pseudo labels and the static teacher are then cached and
# shared by every experiment through DVC's run cache), queues the experiments, runs them
# JOBS at a time, and prints `dvc exp show`.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:-/tmp/busseg-ladder}"
DATA="$(cd "${BUSBRA_ROOT:-$REPO/../shared/data/BUS-BRA}" && pwd)"
JOBS="${JOBS:-2}"
export PATH="$REPO/.venv/bin:$PATH" DVC_NO_ANALYTICS=1

rm -rf "$WORK"
git clone -q "$REPO" "$WORK"
cd "$WORK"
# Stages import busseg from the clone (the commit being measured), not from $REPO's checkout.
export PYTHONPATH="$WORK/src"
python - "$REPO/benchmarks/ssl_busbra.yaml" "$DATA" <<'PY'
import sys, yaml
params = yaml.safe_load(open("params.yaml"))
bench = yaml.safe_load(open(sys.argv[1]))
bench["datasets"]["busbra"]["root"] = sys.argv[2]   # absolute: queued runs happen in temp copies
for key, value in bench.items():
    if isinstance(value, dict) and key != "datasets":
        params.setdefault(key, {}).update(value)
    else:
        params[key] = value
yaml.safe_dump(params, open("params.yaml", "w"), sort_keys=False)
PY
git -c user.email=bench@busseg -c user.name=bench commit -qam "BUS-BRA SSL benchmark parameters"

# Baseline (supervised, 2.5 %): builds the shared stages once.
dvc exp run -n sup-2.5 -S label_ratio=0.025 -S train.method=supervised

q() { dvc exp run --queue "$@"; }
q -n sup-10    -S label_ratio=0.10  -S train.method=supervised
q -n sup-100   -S label_ratio=1.0   -S train.method=supervised
q -n mt-2.5    -S label_ratio=0.025 -S train.method=mean_teacher
q -n mt-10     -S label_ratio=0.10  -S train.method=mean_teacher
q -n dt-2.5    -S label_ratio=0.025 -S train.method=dual_teacher
q -n dt-10     -S label_ratio=0.10  -S train.method=dual_teacher
# Ablation ladder at 2.5 % (METHOD.md): static teacher only; + EMA teacher (plain average);
# + UEWF pixel-wise; + patch smoothing; + AURCL (= dt-2.5, the full method).
D="-S label_ratio=0.025 -S train.method=dual_teacher"
q -n lad-static  $D -S train.use_ema_teacher=false -S train.use_aurcl=false
q -n lad-ema     $D -S train.use_uewf=false -S train.use_aurcl=false
q -n lad-uewf-k1 $D -S train.uewf_kernel=1 -S train.use_aurcl=false
q -n lad-uewf    $D -S train.use_aurcl=false

dvc queue start -j "$JOBS"
while dvc queue status | grep -qE "Queued|Running"; do sleep 30; done
dvc queue status
dvc exp show --no-pager --md --only-changed \
  --keep 'label_ratio|train.method|train.use_.*|train.uewf_kernel|busbra.dice|busbra.iou|busbra.hd95|busbra.pseudo_dice' \
  --drop '.*' 2>/dev/null || dvc exp show --no-pager --md
