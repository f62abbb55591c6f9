#!/usr/bin/env bash
# A whole epoch sweep with one command: train the A/B pair (train_cmds/train_epoch_sweep.sh;
# with PAIRS, that many seed pairs: train_cmds/train_seed_sweep.sh) -> attack every snapshot
# pair (attk_cmds/attack_runs.sh) -> linear probe of every snapshot of A
# (lin_probe_cmds/probe_epoch_sweep.sh) -> figures and report (plot_cmds/plot_all.sh).
#
# With --launcher slurm every stage is submitted at once, each stage's jobs waiting for the
# previous stage's (sbatch --dependency=afterok), and the figures and report are one last job
# (sbatch --wrap plot_cmds/plot_all.sh) after all of them. A rerun submits only what is
# missing: finished points are skipped, and a point whose job is still queued or running is
# waited for, not submitted again. A failed job leaves the jobs after it pending
# (DependencyNeverSatisfied): scancel them, fix, rerun.
#
# Usage: sweep_cmds/full_sweep.sh [--dry-run] [--launcher local|slurm]
# Environment: that of the four scripts (IMAGENET_DIR, BBOX_DIR, RUNS, NAME, PARTITION, METHOD,
# CONFIG, NPC, EPOCHS (training epochs), SNAPSHOT_EVERY, SEED, KNN, CONTROL, FORCE,
# SLURM_PARTITION ...), and
#   PAIRS [""]  seed pairs from SEED (train_seed_sweep.sh); empty: one pair (train_epoch_sweep.sh)
#   TRAIN_FLAGS ATTACK_FLAGS PROBE_FLAGS [""]  extra flags of each stage (split on spaces),
#               e.g. TRAIN_FLAGS="--gpus-per-node 8 --time 2880"
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=cmds_lib.sh
source "$here/cmds_lib.sh"
parse_launcher_args "$@"
if [[ ${#EXTRA[@]} -gt 0 ]]; then
  echo "$(basename "$0"): unknown argument '${EXTRA[0]}'; pass stage flags in TRAIN_FLAGS, ATTACK_FLAGS, PROBE_FLAGS" >&2
  exit 2
fi

export RUNS="${RUNS:-runs}" NAME="${NAME:-imagenet}" METHOD="${METHOD:-vicreg}" NPC="${NPC:-300}"
export EPOCHS="${EPOCHS:-1000}" SNAPSHOT_EVERY="${SNAPSHOT_EVERY:-50}" SEED="${SEED:-0}"
partition="${PARTITION:-$RUNS/$NAME/partition}"
if [[ "$DRY_RUN" != 1 && ! -f "$partition/manifest.json" ]]; then
  echo "$(basename "$0"): $partition/manifest.json not found; make the partition first (dejavu partition ... --out $partition)" >&2
  exit 1
fi
read -r -a train_flags <<<"${TRAIN_FLAGS:-}"
read -r -a attack_flags <<<"${ATTACK_FLAGS:-}"
read -r -a probe_flags <<<"${PROBE_FLAGS:-}"
flags=(--launcher "$LAUNCHER")
if [[ "$DRY_RUN" == 1 ]]; then flags+=(--dry-run); fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
touch "$tmp/train" "$tmp/attack" "$tmp/probe"
ids() { cat "$@" | paste -sd: -; }

# 1. training
if [[ -n "${PAIRS:-}" ]]; then
  JOBS_FILE=$tmp/train AFTER="" PAIRS=$PAIRS "$here/train_cmds/train_seed_sweep.sh" "${flags[@]}" "${train_flags[@]}"
  seeds=$(seq -s ' ' "$SEED" $((SEED + PAIRS - 1)))
  probed="${METHOD}_${NPC}pc_seed${SEED}"
else
  JOBS_FILE=$tmp/train AFTER="" "$here/train_cmds/train_epoch_sweep.sh" "${flags[@]}" "${train_flags[@]}"
  seeds=""
  probed="${METHOD}_${NPC}pc"
fi
train=$(ids "$tmp/train")

# 2. attacks and 3. probes, after the training jobs
JOBS_FILE=$tmp/attack AFTER=$train SEEDS=$seeds METHODS=$METHOD NPCS=$NPC \
  "$here/attk_cmds/attack_runs.sh" "${flags[@]}" "${attack_flags[@]}"
JOBS_FILE=$tmp/probe AFTER=$train TRAIN_NAME=$probed EPOCHS="$(seq -s ' ' "$SNAPSHOT_EVERY" "$SNAPSHOT_EVERY" "$EPOCHS")" \
  "$here/lin_probe_cmds/probe_epoch_sweep.sh" "${flags[@]}" "${probe_flags[@]}"
after=$(ids "$tmp/attack" "$tmp/probe")

# 4. figures and report: here, or one SLURM job after every attack and probe job
if [[ "$LAUNCHER" == slurm && "$DRY_RUN" != 1 && -n "$after" ]]; then
  wrap=$(printf '%q ' env RUNS="$RUNS" FORCE=1 bash "$here/plot_cmds/plot_all.sh")
  sbatch_flags=(--parsable --job-name dejavu_plot --dependency "afterok:$after" --ntasks 1 --cpus-per-task 1
    --time 60 --output "$RUNS/slurm-plot-%j.out")
  if [[ -n "${SLURM_PARTITION:-}" ]]; then sbatch_flags+=(--partition "$SLURM_PARTITION"); fi
  id=$(sbatch "${sbatch_flags[@]}" --wrap "$wrap")
  echo "submitted SLURM job $id: plot_cmds/plot_all.sh after jobs $after (log $RUNS/slurm-plot-$id.out)"
  note_job "$id"
else
  "$here/plot_cmds/plot_all.sh" "${flags[@]}"
fi
