#!/usr/bin/env bash
# Seed sweep: train $PAIRS model pairs (A and B) of one method at one size that differ only in
# the training seed ($SEED, $SEED+1, ...; same data, same partition). Their attacks
# (attk_cmds/attack_runs.sh with the same SEEDS) are aggregated by `dejavu plot` / `dejavu report`
# into the mean excess over the held-out control with an interval over pairs, which covers
# training randomness; one pair cannot (README: a claim needs at least 3 pairs).
# Writes $RUNS/$NAME/train/${METHOD}_${NPC}pc_seed<S>_{A,B}/model_ep{E}.pth.
#
# Usage: train_cmds/train_seed_sweep.sh [--dry-run] [--launcher local|slurm] [extra dejavu train flags]
# Environment (defaults in brackets):
#   IMAGENET_DIR [/datasets/imagenet]  dataset root holding train/
#   BBOX_DIR [$IMAGENET_DIR/bboxes]  RUNS [runs]  NAME [imagenet]  PARTITION [$RUNS/$NAME/partition]
#   METHOD [vicreg]  CONFIG [$METHOD]  NPC [300]  EPOCHS [1000]  SNAPSHOT_EVERY [50]  FORCE [0]
#   SEED [0] first seed  PAIRS [5] number of pairs  DESIGN [independent] (see _common.sh)
#   PARTITION_PER_PAIR [0]  1: pair S trains on $PARTITION/seed<S> (dejavu partition --seeds
#               S1,S2,... --out $PARTITION), so the pairs are independent replicates and the
#               interval over pairs is a plain Student t (attack with the same variable set)
#   SLURM_PARTITION  passed as --slurm-partition with --launcher slurm
# Then: SEEDS="0 1 2 3 4" attk_cmds/attack_runs.sh (the seeds this script prints last).
set -euo pipefail
# shellcheck source=train_cmds/_common.sh
source "$(dirname "$0")/_common.sh"

NPC="${NPC:-300}"
PAIRS="${PAIRS:-5}"
FIRST="$SEED"
BASE_PARTITION="$PARTITION"
for ((i = 0; i < PAIRS; i++)); do
  SEED=$((FIRST + i))
  if [[ "${PARTITION_PER_PAIR:-0}" == 1 ]]; then PARTITION="$BASE_PARTITION/seed$SEED"; fi
  for SET in A B; do
    train_point "$METHOD" "$NPC" "$SET" "$RUN/train/${METHOD}_${NPC}pc_seed${SEED}_${SET}"
  done
done
echo "seeds: $(seq -s ' ' "$FIRST" $((FIRST + PAIRS - 1)))" >&2
