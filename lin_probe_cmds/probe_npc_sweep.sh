#!/usr/bin/env bash
# Linear probe across dataset sizes (the npc sweep), at one epoch.
#
# Probes $RUNS/$NAME/train/${METHOD}_{npc}pc_A/model_ep${EPOCH}.pth for every npc in $NPCS
# and writes $RUNS/$NAME/probe/${METHOD}_{npc}pc_${EPOCH}ep/results.json; existing results
# are skipped unless FORCE=1.
#
# Usage: lin_probe_cmds/probe_npc_sweep.sh [--dry-run] [--launcher local|slurm] [extra dejavu probe flags]
# Environment (defaults in brackets):
#   IMAGENET_DIR [/datasets/imagenet]  dataset root holding train/
#   RUNS [runs]  NAME [imagenet]  PARTITION [$RUNS/$NAME/partition]
#   METHOD [vicreg]  NPCS ["100 200 300 400 500"]  EPOCH [1000]  FEATURES [backbone]
#   SLURM_PARTITION  passed as --slurm-partition with --launcher slurm
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
NPCS="${NPCS:-100 200 300 400 500}"
EPOCH="${EPOCH:-1000}"
FEATURES="${FEATURES:-backbone}"
FORCE="${FORCE:-0}"

read -r -a npcs <<< "$NPCS"
for npc in "${npcs[@]}"; do
  out="$RUN/probe/${METHOD}_${npc}pc_${EPOCH}ep"
  force_flag=()
  if [[ -f "$out/results.json" ]]; then
    if [[ "$FORCE" == 1 ]]; then force_flag=(--force); else echo "skip $out (results.json exists; FORCE=1 redoes it)" >&2; continue; fi
  fi
  run dejavu probe --model "$RUN/train/${METHOD}_${npc}pc_A/model_ep${EPOCH}.pth" --partition "$PARTITION" \
    --npc "$npc" --images "$IMAGENET_DIR/train" --out "$out" --features "$FEATURES" \
    "${LAUNCH_FLAGS[@]}" "${force_flag[@]}" "${EXTRA[@]}"
done
