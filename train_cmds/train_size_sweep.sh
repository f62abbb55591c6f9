#!/usr/bin/env bash
# Dataset-size sweep: train A and B models for every images-per-class count in $NPCS.
# Writes $RUNS/$NAME/train/${METHOD}_${NPC}pc_{A,B}/ for each NPC.
#
# Usage: train_cmds/train_size_sweep.sh [--dry-run] [--launcher local|slurm] [extra dejavu train flags]
# Environment (defaults in brackets):
#   IMAGENET_DIR [/datasets/imagenet]  BBOX_DIR [$IMAGENET_DIR/bboxes]  RUNS [runs]  NAME [imagenet]
#   PARTITION [$RUNS/$NAME/partition]  METHOD [vicreg]  CONFIG [$METHOD]  NPCS ["100 200 300 400 500"]
#   EPOCHS [1000]  SNAPSHOT_EVERY [50]  SEED [0]  FORCE [0]
#   FFCV [0] (1: --loader ffcv reading $BETONS, see write_betons.sh)  BETONS [$RUNS/$NAME/betons]
#   SLURM_PARTITION  passed as --slurm-partition with --launcher slurm
set -euo pipefail
# shellcheck source=train_cmds/_common.sh
source "$(dirname "$0")/_common.sh"

NPCS="${NPCS:-100 200 300 400 500}"
for NPC in $NPCS; do
  for SET in A B; do
    train_point "$METHOD" "$NPC" "$SET" "$RUN/train/${METHOD}_${NPC}pc_${SET}"
  done
done
