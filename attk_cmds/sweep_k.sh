#!/usr/bin/env bash
# Re-score existing attack folders for several k_attk values (no model, no GPU).
#   RUNS=runs/imagenet KS="1 5 10 50 100" attk_cmds/sweep_k.sh [--dry-run]
# Writes analysis_k<K>.json next to each results.json.
set -euo pipefail
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
: "${RUNS:?set RUNS to the run folder (holding attack/)}"
KS=${KS:-"1 5 10 20 50 100"}
shopt -s nullglob
for d in "$RUNS"/attack/*/ep*/ "$RUNS"/attack/*/; do
  [[ -f "$d/results.json" ]] || continue
  for k in $KS; do
    cmd=(dejavu analyze "$d" --k-attk "$k" --force "$@")
    if [[ $DRY == 1 ]]; then printf '%q ' "${cmd[@]}"; echo; else "${cmd[@]}"; fi
  done
done
