#!/usr/bin/env bash
# Shared by the launchers in train_cmds/, attk_cmds/, lin_probe_cmds/ and plot_cmds/
# (sourced, not run). The convention every launcher follows:
#   --dry-run            print one shell-quoted `dejavu ...` command per line, run nothing
#   --launcher L         local (default) or slurm, passed through to the CLI
#   -h | --help          the script's header comment
#   anything else        passed through to the dejavu command (EXTRA)
# Paths come from environment variables (IMAGENET_DIR, BBOX_DIR, RUNS, NAME, PARTITION,
# SLURM_PARTITION ...); finished points are skipped unless FORCE=1.
# shellcheck disable=SC2034  # DRY_RUN, LAUNCH_FLAGS, EXTRA are used by the sourcing script

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

DRY_RUN=0
LAUNCHER=local
EXTRA=()
LAUNCH_FLAGS=()

parse_launcher_args() {
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
  case "$LAUNCHER" in
    local|slurm) ;;
    *) echo "$(basename "$0"): --launcher must be local or slurm, got '$LAUNCHER'" >&2; exit 2 ;;
  esac
  LAUNCH_FLAGS=(--launcher "$LAUNCHER")
  if [[ "$LAUNCHER" == slurm && -n "${SLURM_PARTITION:-}" ]]; then
    LAUNCH_FLAGS+=(--slurm-partition "$SLURM_PARTITION")
  fi
}

# run CMD...: print it (--dry-run) or run it
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%q ' "$@" | sed 's/ $//'
    printf '\n'
  else
    "$@"
  fi
}
