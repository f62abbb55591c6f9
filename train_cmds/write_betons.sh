#!/usr/bin/env bash
# FFCV .beton files for the training sweeps (the original's gen_betons.sh, gen_val_beton.sh
# and bounding-box-crop betons). Needs the ffcv extra (README: "FFCV fast path").
#
# For each NPC in $NPCS writes $BETONS/${NPC}_per_class_{A,B}.beton (training sets) and
# $BETONS/${NPC}_per_class_bbox_{A,B}.beton (crops of the attacked sets), then $BETONS/val.beton.
# Betons already written are kept (FFCV=1 train_cmds/*.sh read them); FORCE=1 rewrites them.
#
# Usage: train_cmds/write_betons.sh [--dry-run] [--launcher local|slurm] [extra dejavu betons flags]
# Environment (defaults in brackets):
#   IMAGENET_DIR [/datasets/imagenet]  BBOX_DIR [$IMAGENET_DIR/bboxes]  RUNS [runs]  NAME [imagenet]
#   PARTITION [$RUNS/$NAME/partition]  BETONS [$RUNS/$NAME/betons]  NPCS ["100 200 300 400 500"]
#   MAX_RES [512]  QUALITY [90]  WORKERS [8]  FORCE [0]
#   SLURM_PARTITION  passed as --slurm-partition with --launcher slurm
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
BETONS="${BETONS:-$RUN/betons}"
NPCS="${NPCS:-100 200 300 400 500}"
FORCE="${FORCE:-0}"

redo=(--skip-existing)
if [[ "$FORCE" == 1 ]]; then redo=(--force); fi
common=(--images "$IMAGENET_DIR/train" --bboxes "$BBOX_DIR" --partition "$PARTITION" --out "$BETONS"
        --max-res "${MAX_RES:-512}" --quality "${QUALITY:-90}" --workers "${WORKERS:-8}")

for NPC in $NPCS; do
  run dejavu betons "${common[@]}" --npc "$NPC" --sets train,bbox "${redo[@]}" "${LAUNCH_FLAGS[@]}" \
    ${EXTRA[@]+"${EXTRA[@]}"}
done
first=${NPCS%% *}
run dejavu betons "${common[@]}" --npc "$first" --sets val "${redo[@]}" "${LAUNCH_FLAGS[@]}" \
  ${EXTRA[@]+"${EXTRA[@]}"}
