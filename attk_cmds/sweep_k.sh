#!/usr/bin/env bash
# Re-score existing attack folders for several k_attk values (no model, no GPU).
#
# Writes analysis_k<K>.json next to each results.json under $RUNS/$NAME/attack.
#
# Usage: attk_cmds/sweep_k.sh [--dry-run] [extra dejavu analyze flags]
# Environment (defaults in brackets):
#   RUNS [runs]  NAME [imagenet]  KS ["1 5 10 20 50 100"]
# Conventions shared by all launchers: --dry-run prints one `dejavu ...` command per
# line and runs nothing.
set -euo pipefail

# shellcheck source=cmds_lib.sh
source "$(dirname "$0")/../cmds_lib.sh"
parse_launcher_args "$@"

RUNS="${RUNS:-runs}"
NAME="${NAME:-imagenet}"
KS="${KS:-1 5 10 20 50 100}"

shopt -s nullglob
found=0
for d in "$RUNS/$NAME"/attack/*/ep*/ "$RUNS/$NAME"/attack/*/; do
  [[ -f "$d/results.json" ]] || continue
  found=1
  for k in $KS; do
    run dejavu analyze "$d" --k-attk "$k" --force ${EXTRA[@]+"${EXTRA[@]}"}
  done
done
if [[ "$found" == 0 ]]; then
  echo "no attack results under $RUNS/$NAME/attack" >&2
fi
