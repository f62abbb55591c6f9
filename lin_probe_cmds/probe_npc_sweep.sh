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

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

DRY_RUN=0
LAUNCHER=local
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --launcher) LAUNCHER="${2:?--launcher needs local or slurm}"; shift ;;
    --launcher=*) LAUNCHER="${1#*=}" ;;
    -h|--help) usage; exit 0 ;;
    *) EXTRA+=("$1") ;;
  esac
  shift
done

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

launch_flags=(--launcher "$LAUNCHER")
if [[ "$LAUNCHER" == slurm && -n "${SLURM_PARTITION:-}" ]]; then
  launch_flags+=(--slurm-partition "$SLURM_PARTITION")
fi

run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%q ' "$@" | sed 's/ $//'
    printf '\n'
  else
    "$@"
  fi
}

read -r -a npcs <<< "$NPCS"
for npc in "${npcs[@]}"; do
  out="$RUN/probe/${METHOD}_${npc}pc_${EPOCH}ep"
  force_flag=()
  if [[ -f "$out/results.json" ]]; then
    if [[ "$FORCE" == 1 ]]; then force_flag=(--force); else echo "skip $out (results.json exists; FORCE=1 redoes it)" >&2; continue; fi
  fi
  run dejavu probe --model "$RUN/train/${METHOD}_${npc}pc_A/model_ep${EPOCH}.pth" --partition "$PARTITION" \
    --npc "$npc" --images "$IMAGENET_DIR/train" --out "$out" --features "$FEATURES" \
    "${launch_flags[@]}" "${force_flag[@]}" "${EXTRA[@]}"
done
