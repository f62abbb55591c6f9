#!/usr/bin/env bash
# Parameter sweep: train A and B models for each setting in $PARAMS (space-separated
# key=value config overrides, e.g. "lr=0.1 lr=0.3 weight_decay=1e-5"), one pair per setting.
# Writes $RUNS/$NAME/train/${METHOD}_${NPC}pc_{A,B}_<key><value>/.
#
# Usage: train_cmds/train_param_sweep.sh [--dry-run] [--launcher local|slurm] [extra dejavu train flags]
# Environment (defaults in brackets):
#   IMAGENET_DIR [/datasets/imagenet]  BBOX_DIR [$IMAGENET_DIR/bboxes]  RUNS [runs]  NAME [imagenet]
#   PARTITION [$RUNS/$NAME/partition]  METHOD [vicreg]  CONFIG [$METHOD]  NPC [300]
#   PARAMS ["vicreg_sim=10 vicreg_sim=25 vicreg_sim=50"]  EPOCHS [1000]  SNAPSHOT_EVERY [50]  SEED [0]  FORCE [0]
#   FFCV [0] (1: --loader ffcv reading $BETONS, see write_betons.sh)  BETONS [$RUNS/$NAME/betons]
#   SLURM_PARTITION  passed as --slurm-partition with --launcher slurm
set -euo pipefail
# shellcheck source=train_cmds/_common.sh
source "$(dirname "$0")/_common.sh"

NPC="${NPC:-300}"
PARAMS="${PARAMS:-vicreg_sim=10 vicreg_sim=25 vicreg_sim=50}"
for KV in $PARAMS; do
  if [[ "$KV" != *=* ]]; then
    echo "PARAMS entry '$KV': expected key=value" >&2
    exit 2
  fi
  TAG="${KV%%=*}${KV#*=}"
  for SET in A B; do
    train_point "$METHOD" "$NPC" "$SET" "$RUN/train/${METHOD}_${NPC}pc_${SET}_${TAG}" --set "$KV"
  done
done
