#!/usr/bin/env bash
# Shared by train_cmds/*.sh (sourced, not run). Parses --dry-run / --launcher, sets
# defaults from the environment, and defines train_point METHOD NPC SET OUT [--set k=v ...].
# A point whose final snapshot exists is skipped (FORCE=1 retrains it with --force); a
# point with last.pth continues with --resume, so a sweep can simply be rerun.

# shellcheck source=cmds_lib.sh
source "$(dirname "$0")/../cmds_lib.sh"
parse_launcher_args "$@"

IMAGENET_DIR="${IMAGENET_DIR:-/datasets/imagenet}"
BBOX_DIR="${BBOX_DIR:-$IMAGENET_DIR/bboxes}"
RUNS="${RUNS:-runs}"
NAME="${NAME:-imagenet}"
RUN="$RUNS/$NAME"
PARTITION="${PARTITION:-$RUN/partition}"
METHOD="${METHOD:-vicreg}"
CONFIG="${CONFIG:-$METHOD}"
EPOCHS="${EPOCHS:-1000}"
SNAPSHOT_EVERY="${SNAPSHOT_EVERY:-50}"
SEED="${SEED:-0}"
# DESIGN [independent]: the pair's B model trains with seed + 1000003 (its own initial weights,
# batch order and augmentations, as the original's unseeded runs); coupled: A and B share the
# seed (common random numbers, a variance-reduction design; recorded in every results.json).
DESIGN="${DESIGN:-independent}"
FORCE="${FORCE:-0}"
FFCV="${FFCV:-0}"  # 1: train through FFCV from $BETONS/<npc>_per_class_<set>.beton (train_cmds/write_betons.sh)
BETONS="${BETONS:-$RUN/betons}"
export BBOX_DIR  # documented for symmetry with the other launchers; training needs no boxes

train_point() {
  local method="$1" npc="$2" set="$3" out="$4"
  shift 4
  local flags=()
  if [[ -f "$out/model_ep${EPOCHS}.pth" && "$FORCE" != 1 ]]; then
    echo "skip (done): $out" >&2
    return 0
  fi
  if skip_in_flight "$out"; then return 0; fi
  if [[ "$FORCE" == 1 ]]; then
    flags+=(--force)
  elif [[ -f "$out/last.pth" ]]; then
    flags+=(--resume)
  fi
  if [[ "$LAUNCHER" == slurm ]]; then
    flags+=("${LAUNCH_FLAGS[@]}")
  fi
  if [[ "$FFCV" == 1 ]]; then
    flags+=(--loader ffcv --train-beton "$BETONS/${npc}_per_class_${set}.beton")
  fi
  run dejavu train --method "$method" --config "$CONFIG" --images "$IMAGENET_DIR/train" \
    --index "$PARTITION/${npc}_per_class/train_${set}.npy" --out "$out" \
    --set "epochs=$EPOCHS" --set "snapshot_every=$SNAPSHOT_EVERY" --set "seed=$SEED" \
    --set "design=$DESIGN" "$@" "${flags[@]}" "${EXTRA[@]}"
}
