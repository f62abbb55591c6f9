#!/usr/bin/env bash
# Figures and report.html for every run under $RUNS, plus figures across all runs.
#
# For each $RUNS/<name>/ holding attack/ or probe/:
#   dejavu plot <name>/attack <name>/probe --out <name>/plots   then   dejavu report <name>
# and finally `dejavu plot $RUNS --out $RUNS/plots_all` (sweeps spread over several runs,
# e.g. one run per hyper-parameter value). Existing plots/reports are skipped unless FORCE=1.
# Plotting reads small JSON files only: it always runs locally (--launcher is ignored).
#
# Usage: plot_cmds/plot_all.sh [--dry-run] [extra dejavu plot flags, e.g. --top top5]
# Environment (defaults in brackets):
#   RUNS [runs]  PARAMS [""] space-separated hyper-parameters to plot against (--param)
#   IMAGENET_DIR  when set, the report reads images from $IMAGENET_DIR/train (else the
#                 paths stored in the run's partition manifest)
#   BBOX_DIR      boxes for the report galleries (with IMAGENET_DIR)
set -euo pipefail

# shellcheck source=cmds_lib.sh
source "$(dirname "$0")/../cmds_lib.sh"
parse_launcher_args "$@"

RUNS="${RUNS:-runs}"
PARAMS="${PARAMS:-}"
FORCE="${FORCE:-0}"

param_flags=()
read -r -a params <<< "$PARAMS"
for p in "${params[@]}"; do param_flags+=(--param "$p"); done
force_flag=()
if [[ "$FORCE" == 1 ]]; then force_flag=(--force); fi
data_flags=()
if [[ -n "${IMAGENET_DIR:-}" ]]; then
  data_flags=(--images "$IMAGENET_DIR/train")
  if [[ -n "${BBOX_DIR:-}" ]]; then data_flags+=(--bboxes "$BBOX_DIR"); fi
fi

found=0
shopt -s nullglob
for run_dir in "$RUNS"/*/; do
  run_dir="${run_dir%/}"
  inputs=()
  for sub in attack probe; do
    if [[ -d "$run_dir/$sub" ]]; then inputs+=("$run_dir/$sub"); fi
  done
  if [[ ${#inputs[@]} -eq 0 ]]; then continue; fi
  found=1
  if [[ "$FORCE" == 1 || ! -f "$run_dir/plots/figures.json" ]]; then
    run dejavu plot "${inputs[@]}" --out "$run_dir/plots" "${param_flags[@]}" "${force_flag[@]}" "${EXTRA[@]}"
  else
    echo "skip plots of $run_dir (figures.json exists; FORCE=1 redraws)" >&2
  fi
  if [[ "$FORCE" == 1 || ! -f "$run_dir/report.html" ]]; then
    run dejavu report "$run_dir" "${data_flags[@]}" "${param_flags[@]}" "${force_flag[@]}"
  else
    echo "skip report of $run_dir (report.html exists; FORCE=1 rewrites it)" >&2
  fi
done
shopt -u nullglob

if [[ "$found" == 0 ]]; then
  echo "no run with attack/ or probe/ under $RUNS" >&2
  exit 0
fi
if [[ "$FORCE" == 1 || ! -f "$RUNS/plots_all/figures.json" ]]; then
  run dejavu plot "$RUNS" --out "$RUNS/plots_all" "${param_flags[@]}" "${force_flag[@]}" "${EXTRA[@]}"
fi
