#!/usr/bin/env bash
# Attack every snapshot pair of the A/B runs of each method x npc (the epoch sweep; with
# several NPCS also the dataset-size sweep).
#
# For each METHOD in $METHODS and NPC in $NPCS: attacks every model_ep{E}.pth present in both
# $RUNS/$NAME/train/<method>_<npc>pc_{A,B}/ into $RUNS/$NAME/attack/<method>_<npc>pc/ep{E}/.
# Epochs already attacked are skipped (FORCE=1 redoes them), so the sweep can be rerun.
#
# Usage: attk_cmds/attack_runs.sh [--dry-run] [--launcher local|slurm] [extra dejavu attack flags]
# Environment (defaults in brackets):
#   IMAGENET_DIR [/datasets/imagenet]  dataset root holding train/
#   BBOX_DIR [$IMAGENET_DIR/bboxes]    folder holding Annotation/
#   RUNS [runs]  NAME [imagenet]  PARTITION [$RUNS/$NAME/partition]
#   METHODS [vicreg]  NPCS [300]  KNN [faiss]
#   FFCV [0] (1: read the crops from $BETONS, see train_cmds/write_betons.sh)  BETONS [$RUNS/$NAME/betons]
#   SLURM_PARTITION  passed as --slurm-partition with --launcher slurm
# Conventions shared by all launchers: --dry-run prints one `dejavu ...` command per
# line and runs nothing; --launcher is passed through to the CLI.
set -euo pipefail

# shellcheck source=cmds_lib.sh
source "$(dirname "$0")/../cmds_lib.sh"
parse_launcher_args "$@"

IMAGENET_DIR="${IMAGENET_DIR:-/datasets/imagenet}"
BBOX_DIR="${BBOX_DIR:-$IMAGENET_DIR/bboxes}"
RUNS="${RUNS:-runs}"
NAME="${NAME:-imagenet}"
RUN="$RUNS/$NAME"
PARTITION="${PARTITION:-$RUN/partition}"
METHODS="${METHODS:-vicreg}"
NPCS="${NPCS:-300}"
KNN="${KNN:-faiss}"
FORCE="${FORCE:-0}"

redo=(--skip-existing)
if [[ "$FORCE" == 1 ]]; then redo=(--force); fi
if [[ "${FFCV:-0}" == 1 ]]; then redo+=(--crops-betons "${BETONS:-$RUN/betons}"); fi

for m in $METHODS; do
  for n in $NPCS; do
    run dejavu attack --model-a "$RUN/train/${m}_${n}pc_A" --model-b "$RUN/train/${m}_${n}pc_B" \
      --partition "$PARTITION" --npc "$n" --images "$IMAGENET_DIR/train" --bboxes "$BBOX_DIR" \
      --knn "$KNN" --out "$RUN/attack/${m}_${n}pc" "${redo[@]}" "${LAUNCH_FLAGS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
  done
done
