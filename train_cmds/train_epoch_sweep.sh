#!/usr/bin/env bash
# Epoch sweep: train the A and B models of one method at one size for $EPOCHS epochs,
# with a snapshot every $SNAPSHOT_EVERY epochs (the attack then runs on each snapshot).
# Writes $RUNS/$NAME/train/${METHOD}_${NPC}pc_{A,B}/model_ep{E}.pth.
#
# Usage: train_cmds/train_epoch_sweep.sh [--dry-run] [--launcher local|slurm] [extra dejavu train flags]
# Environment (defaults in brackets):
#   IMAGENET_DIR [/datasets/imagenet]  dataset root holding train/
#   BBOX_DIR [$IMAGENET_DIR/bboxes]  RUNS [runs]  NAME [imagenet]  PARTITION [$RUNS/$NAME/partition]
#   METHOD [vicreg]  CONFIG [$METHOD]  NPC [300]  EPOCHS [1000]  SNAPSHOT_EVERY [50]  SEED [0]  FORCE [0]
#   DESIGN [independent]  independent | coupled (see _common.sh)
#   FFCV [0] (1: --loader ffcv reading $BETONS, see write_betons.sh)  BETONS [$RUNS/$NAME/betons]
#   SLURM_PARTITION  passed as --slurm-partition with --launcher slurm
# With the default DESIGN=independent, B trains with SEED + 1000003 (other initial weights,
# batch order and augmentations than A); DESIGN=coupled gives both the same seed.
set -euo pipefail
# shellcheck source=train_cmds/_common.sh
source "$(dirname "$0")/_common.sh"

NPC="${NPC:-300}"
for SET in A B; do
  train_point "$METHOD" "$NPC" "$SET" "$RUN/train/${METHOD}_${NPC}pc_${SET}"
done
