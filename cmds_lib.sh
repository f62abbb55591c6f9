#!/usr/bin/env bash
# Shared by the launchers in train_cmds/, attk_cmds/, lin_probe_cmds/ and plot_cmds/
# (sourced, not run). The convention every launcher follows:
#   --dry-run            print one shell-quoted `dejavu ...` command per line, run nothing
#   --launcher L         local (default) or slurm, passed through to the CLI
#   -h | --help          the script's header comment
#   anything else        passed through to the dejavu command (EXTRA)
# Paths come from environment variables (IMAGENET_DIR, BBOX_DIR, RUNS, NAME, PARTITION,
# SLURM_PARTITION ...); finished points are skipped unless FORCE=1.
# With --launcher slurm (sweep_cmds/full_sweep.sh chains the stages this way):
#   AFTER=ID:ID...  every job submitted waits for these jobs to succeed (sbatch --dependency=afterok)
#   JOBS_FILE=F     the id of every job submitted (or still queued/running for a point: it is
#                   waited for, not submitted twice) is appended to F, one per line
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
  if [[ "$LAUNCHER" == slurm && -n "${AFTER:-}" ]]; then
    LAUNCH_FLAGS+=(--slurm-opt "dependency=afterok:$AFTER")
  fi
}

# note_job ID: record a job this sweep submitted or waits for (JOBS_FILE)
note_job() {
  if [[ -n "${JOBS_FILE:-}" ]]; then echo "$1" >>"$JOBS_FILE"; fi
}

# in_flight OUT: true (printing the job id) when a job submitted by the launcher into
# OUT/slurm/<id>/ is still queued or running, so a rerun waits for it instead of submitting it again
in_flight() {
  [[ "$LAUNCHER" == slurm && "$DRY_RUN" != 1 ]] || return 1
  local f id
  for f in "$1"/slurm/*/launch.json; do
    [[ -f "$f" ]] || continue
    id=$(basename "$(dirname "$f")")
    if [[ -n "$(squeue -h -j "$id" -o %i 2>/dev/null)" ]]; then
      echo "$id"
      return 0
    fi
  done
  return 1
}

# skip_in_flight OUT: in_flight, said on stderr and recorded with note_job
skip_in_flight() {
  local id
  id=$(in_flight "$1") || return 1
  echo "in flight (job $id, waited for): $1" >&2
  note_job "$id"
}

# run CMD...: print it (--dry-run) or run it; a SLURM job it submits is recorded (note_job)
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%q ' "$@" | sed 's/ $//'
    printf '\n'
  elif [[ "$LAUNCHER" == slurm ]]; then
    local said
    said=$("$@")
    printf '%s\n' "$said"
    if [[ "$said" =~ submitted\ SLURM\ job\ ([0-9]+) ]]; then note_job "${BASH_REMATCH[1]}"; fi
  else
    "$@"
  fi
}
