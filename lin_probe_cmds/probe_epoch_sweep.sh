#!/usr/bin/env bash
# Linear probe of every snapshot of one training run (the epoch sweep).
#
# Probes $RUNS/$NAME/train/${TRAIN_NAME}_A/model_ep{E}.pth for every snapshot found
# there (or, when none exists yet, for every E in $EPOCHS) and writes
# $RUNS/$NAME/probe/${TRAIN_NAME}_{E}ep/results.json. Points that already have a
# results.json are skipped (set FORCE=1 to redo them), so the sweep can be rerun.
#
# Usage: lin_probe_cmds/probe_epoch_sweep.sh [--dry-run] [--launcher local|slurm] [extra dejavu probe flags]
# Environment (defaults in brackets):
#   IMAGENET_DIR [/datasets/imagenet]  dataset root holding train/
#   RUNS [runs]  NAME [imagenet]  PARTITION [$RUNS/$NAME/partition]
#   METHOD [vicreg]  NPC [300]  TRAIN_NAME [${METHOD}_${NPC}pc] (e.g. ..._seed0 for a seed sweep)
#   EPOCHS ["50 100 ... 1000"]  FEATURES [backbone]
#   SLURM_PARTITION  passed as --slurm-partition with --launcher slurm
# Conventions shared by all launchers: --dry-run prints one `dejavu ...` command per
# line and runs nothing; --launcher is passed through to the CLI.
set -euo pipefail

# shellcheck source=cmds_lib.sh
source "$(dirname "$0")/../cmds_lib.sh"
parse_launcher_args "$@"

IMAGENET_DIR="${IMAGENET_DIR:-/datasets/imagenet}"
RUNS="${RUNS:-runs}"
NAME="${NAME:-imagenet}"
RUN="$RUNS/$NAME"
PARTITION="${PARTITION:-$RUN/partition}"
METHOD="${METHOD:-vicreg}"
NPC="${NPC:-300}"
EPOCHS="${EPOCHS:-$(seq -s ' ' 50 50 1000)}"
FEATURES="${FEATURES:-backbone}"
FORCE="${FORCE:-0}"
TRAIN_NAME="${TRAIN_NAME:-${METHOD}_${NPC}pc}"

train_dir="$RUN/train/${TRAIN_NAME}_A"
epochs=()
shopt -s nullglob
for ckpt in "$train_dir"/model_ep*.pth; do
  e="${ckpt##*model_ep}"
  epochs+=("${e%.pth}")
done
shopt -u nullglob
if [[ ${#epochs[@]} -eq 0 ]]; then
  echo "note: no snapshots in $train_dir yet; using EPOCHS=$EPOCHS" >&2
  read -r -a epochs <<< "$EPOCHS"
fi
mapfile -t epochs < <(printf '%s\n' "${epochs[@]}" | sort -n)

for e in "${epochs[@]}"; do
  out="$RUN/probe/${TRAIN_NAME}_${e}ep"
  if skip_in_flight "$out"; then continue; fi
  force_flag=()
  if [[ -f "$out/results.json" ]]; then
    if [[ "$FORCE" == 1 ]]; then force_flag=(--force); else echo "skip $out (results.json exists; FORCE=1 redoes it)" >&2; continue; fi
  fi
  run dejavu probe --model "$train_dir/model_ep${e}.pth" --partition "$PARTITION" --npc "$NPC" \
    --images "$IMAGENET_DIR/train" --out "$out" --features "$FEATURES" \
    "${LAUNCH_FLAGS[@]}" "${force_flag[@]}" "${EXTRA[@]}"
done
