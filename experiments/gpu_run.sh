#!/usr/bin/env bash
# The GPU measurements in one run (needs gymnasium, SB3, tyro), discussed in docs/studies/gpu-training.md
# and docs/studies/env-throughput.md; recorded runs are experiments/results/speed/env_throughput_cuda_h200.json,
# experiments/results/studies/sb3_vec_env_cuda_h200.json and experiments/results/studies/differentiable_gpu_h200.json.
#   bash experiments/gpu_run.sh OUT_DIR
# 1. alone on the machine: env throughput (batched env on CUDA against SyncVectorEnv on CPU, measured
#    in this run) and the SB3 adapter on CUDA;
# 2. the CUDA tests (pytest -k cuda);
# 3. side by side on the one GPU, TRAIN_SECONDS of wall clock each, batch 1024: the differentiable
#    agent with the packaged-size core, with the 16x32 scratch core, and the fixed-sequence baseline.
# A second set (batch 256, 240 s each, 7 runs side by side) is the GRID=1 part; its results are in
# experiments/results/studies/differentiable_gpu_h200.json.
# LEARNED=1 runs only the learned-encoding set instead (8 runs side by side, batch 256, TRAIN_SECONDS
# of dual-optimizer training each, then the read-out epoch): 32x4 and 64x4 scratch cores with
# encoding "learned" (seeds 0, 1, 2), the default agent and a learned-encoding fixed sequence.
# BEST=1 runs only the best recipe (PRESET, default best; ablation-gdfs-schedule for GDFS's schedule) for seeds 0, 1, 2
# side by side, each fitted into BUDGET seconds (--budget-seconds, default 420: core pretraining,
# dual epochs and read-out included), and writes OUT/best_gpu.json naming the device.
# GDFS=1 runs only gdfs-full (train/gdfs.py, GDFS's own schedule; seeds 0, 1, 2 side by side) for at most
# CAP seconds of wall clock (default 420): a run the cap stops saves RUNS/gdfs-full/seedK/resume.pt (SIGTERM)
# and the same command continues it (--resume) where RUNS still holds it (default RUNS=OUT/runs); then the
# comparison's tables from every finished run under RUNS (experiments/compare.py --gpu --no-train, to
# OUT/results.md) and OUT/gdfs_gpu.json naming the device, with each seed's state (finished or resumable).
set -u
OUT=${1:?usage: bash experiments/gpu_run.sh OUT_DIR}
TRAIN_SECONDS=${TRAIN_SECONDS:-140}
mkdir -p "$OUT/runs"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 OMP_NUM_THREADS=2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"

# DEVICE and EXTRA (options added to every run) are there for a quick CPU check of this script.
train() { name=$1; shift; python train/differentiable.py --device "${DEVICE:-cuda}" --epochs 200 --out "$OUT/runs/$name" "$@" ${EXTRA:-} > "$OUT/runs/$name.log" 2>&1 & }
summary() {
  for f in "$OUT"/runs/*/metrics.json; do
    python -c "import json; m = json.load(open('$f')); print('$f', m['test_accuracy'], m['test_accuracy_train_sampler']['25'], m['epochs_done'], m['train_seconds'])"
  done | tee "$OUT/summary.txt"
}

if [ "${LEARNED:-0}" = 1 ]; then
  budget=(--max-train-seconds "$TRAIN_SECONDS")
  learned=(--core-start scratch --encoding learned)
  for seed in 0 1 2; do
    train "label-learned32x4-s$seed" "${budget[@]}" "${learned[@]}" --seed "$seed"
    train "label-learned64x4-s$seed" "${budget[@]}" "${learned[@]}" --channels 64 --seed "$seed"
  done
  train label-default-s0 "${budget[@]}"
  train fixed-learned32x4-s0 "${budget[@]}" "${learned[@]}" --preset fixed-sequence
  wait
  summary
  exit 0
fi

if [ "${GDFS:-0}" = 1 ]; then
  runs=${RUNS:-$OUT/runs}
  for seed in 0 1 2; do
    dir="$runs/gdfs-full/seed$seed"
    mkdir -p "$dir"
    resume=()
    [ -f "$dir/resume.pt" ] && resume=(--resume)
    [ -f "$dir/metrics.json" ] && continue
    timeout -s TERM -k 60 "${CAP:-420}" python train/gdfs.py --device "${DEVICE:-cuda}" --seed "$seed" --out "$dir" \
      "${resume[@]}" ${EXTRA:-} > "$dir/train.log" 2>&1 &
  done
  wait
  python experiments/compare.py --gpu --no-train --methods gdfs-full --out "$runs" --doc "$OUT/results.md" > "$OUT/compare.log" 2>&1
  python - "$OUT" "$runs" "${CAP:-420}" <<'PY'
import json, sys
from pathlib import Path
out, runs, cap = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
seeds = {}
for folder in sorted((runs / "gdfs-full").glob("seed*")):
    if (folder / "metrics.json").is_file():
        m = json.loads((folder / "metrics.json").read_text())
        seeds[folder.name] = {"state": "finished", **{k: m[k] for k in ("test_accuracy", "test_accuracy_env_core", "train_seconds", "optimizer_steps", "predictor_steps", "stopped", "device", "curve")}}
    elif (folder / "resume.pt").is_file():
        seeds[folder.name] = {"state": "resumable: rerun the same command with RUNS=" + str(runs)}
    else:
        seeds[folder.name] = {"state": "failed: see " + str(folder / "train.log")}
result = {
    "what": f"gdfs-full (train/gdfs.py, GDFS's own schedule), seeds 0, 1, 2 side by side on one device, at most {cap:g} s of wall clock in this call",
    "command": f"GDFS=1 CAP={cap:g} bash experiments/gpu_run.sh OUT",
    "device": (out / "gpu.txt").read_text().strip(),
    "runs": seeds,
}
(out / "gdfs_gpu.json").write_text(json.dumps(result, indent=1) + "\n")
print(json.dumps({k: v for k, v in result.items() if k != "runs"} | {"states": {k: v["state"] for k, v in seeds.items()}}, indent=1))
PY
  exit 0
fi

if [ "${BEST:-0}" = 1 ]; then
  for seed in 0 1 2; do
    train "${PRESET:-best}-s$seed" --preset "${PRESET:-best}" --budget-seconds "${BUDGET:-420}" --seed "$seed"
  done
  wait
  summary
  python - "$OUT" "${PRESET:-best}" "${BUDGET:-420}" <<'PY'
import json, sys
from pathlib import Path
out, preset, budget = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
runs = {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("runs/*/metrics.json"))}
if not runs:
    sys.exit(f"no run finished: see {out}/runs/*.log")
result = {
    "what": f"--preset {preset}, seeds 0, 1, 2 side by side on one device, --budget-seconds {budget:g} each",
    "command": f"BEST=1 PRESET={preset} BUDGET={budget:g} bash experiments/gpu_run.sh OUT",
    "device": (out / "gpu.txt").read_text().strip(),
    "runs": {name: {k: m[k] for k in ("test_accuracy", "train_seconds", "optimizer_steps", "device")} for name, m in runs.items()},
}
(out / "best_gpu.json").write_text(json.dumps(result, indent=1) + "\n")
print(json.dumps(result, indent=1))
PY
  exit 0
fi

timeout 150 python benchmarks/env_throughput.py --devices cuda --num-envs 1024 16384 65536 262144 \
  --sync-num-envs 1024 --seconds 2 --json "$OUT/env_throughput_cuda.json" > "$OUT/bench.log" 2>&1
timeout 90 python benchmarks/sb3_vec_env.py --device cuda --num-envs 256 --seconds 2 \
  --json "$OUT/sb3_vec_env_cuda.json" >> "$OUT/bench.log" 2>&1

fast=(--max-train-seconds "$TRAIN_SECONDS" --batch-size 1024 --perception-lr 3e-3 --attention-lr 3e-3)
train label-bs1024 "${fast[@]}"
train label-16x32-bs1024 "${fast[@]}" --core-start scratch --channels 16 --n-bins 32
train fixed-bs1024 "${fast[@]}" --preset fixed-sequence
if [ "${GRID:-0}" = 1 ]; then
  grid=(--max-train-seconds 240)
  big=(--core-start scratch --channels 16 --n-bins 32 --perception-lr 3e-3)
  for seed in 0 1 2; do train "label-16x32-s$seed" "${grid[@]}" "${big[@]}" --seed "$seed"; done
  train fixed-16x32-s0 "${grid[@]}" "${big[@]}" --preset fixed-sequence
  train label-packaged-s0 "${grid[@]}"
  train label-64x16-s0 "${grid[@]}" --core-start scratch --channels 64 --n-bins 16 --perception-lr 3e-3
  train argmin-16x32-s0 "${grid[@]}" "${big[@]}" --preset argmin
fi
timeout 150 python -m pytest -q -p no:cacheprovider -k cuda > "$OUT/tests.log" 2>&1
wait
summary
