#!/usr/bin/env bash
# Attack every snapshot pair of the A/B runs of each method x npc (the epoch sweep; with
# several NPCS also the dataset-size sweep).
#
# For each METHOD in $METHODS and NPC in $NPCS: attacks every model_ep{E}.pth present in both
# $RUNS/$NAME/train/<method>_<npc>pc_{A,B}/ into $RUNS/$NAME/attack/<method>_<npc>pc/ep{E}/.
# Epochs already attacked are skipped (FORCE=1 redoes them), so the sweep can be rerun; with
# --launcher slurm a pair is not submitted when every snapshot of it is attacked and neither
# model is still training, nor when its attack job is queued or running.
#
# Usage: attk_cmds/attack_runs.sh [--dry-run] [--launcher local|slurm] [extra dejavu attack flags]
# Environment (defaults in brackets):
#   IMAGENET_DIR [/datasets/imagenet]  dataset root holding train/
#   BBOX_DIR [$IMAGENET_DIR/bboxes]    folder holding Annotation/
#   RUNS [runs]  NAME [imagenet]  PARTITION [$RUNS/$NAME/partition]
#   METHODS [vicreg]  NPCS [300]  KNN [faiss]
#   PRECISION [fp32]  the embedding forward's arithmetic (the original's fp32; bf16/auto are faster
#               on GPUs and change neighbours slightly: dejavu attack --help)
#   DECODE [exact]  full JPEG decode as the original; draft = faster reduced decode (other pixels)
#   SEEDS [""]  training seeds of a seed sweep (train_cmds/train_seed_sweep.sh): attacks
#               <method>_<npc>pc_seed<S>_{A,B} into attack/<method>_<npc>pc_seed<S>/ for each
#   PARTITION_PER_PAIR [0]  1: pair S is attacked on $PARTITION/seed<S> (dejavu partition --seeds)
#   CONTROL [auto]  held-out control attacked with the same models (issue 11): auto = the
#               partition's control (dejavu partition --control N) when $PARTITION/control_A.npy
#               exists, else the annotated validation images $VAL_DIR when that folder exists;
#               partition, a folder of validation images, or none
#   VAL_DIR [$IMAGENET_DIR/val]  VAL_BBOX_DIR [$VAL_DIR]  validation images and their box XML
#   FFCV [0] (1: read the crops from $BETONS, see train_cmds/write_betons.sh)  BETONS [$RUNS/$NAME/betons]
#   SLURM_PARTITION  passed as --slurm-partition with --launcher slurm
# Conventions shared by all launchers: --dry-run prints one `dejavu ...` command per
# line and runs nothing; --launcher is passed through to the CLI.
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
METHODS="${METHODS:-vicreg}"
NPCS="${NPCS:-300}"
KNN="${KNN:-faiss}"
PRECISION="${PRECISION:-fp32}"
DECODE="${DECODE:-exact}"
FORCE="${FORCE:-0}"
SEEDS="${SEEDS:-}"
CONTROL="${CONTROL:-auto}"
VAL_DIR="${VAL_DIR:-$IMAGENET_DIR/val}"
VAL_BBOX_DIR="${VAL_BBOX_DIR:-$VAL_DIR}"

redo=(--skip-existing)
if [[ "$FORCE" == 1 ]]; then redo=(--force); fi
if [[ "${FFCV:-0}" == 1 ]]; then redo+=(--crops-betons "${BETONS:-$RUN/betons}"); fi

PER_PAIR="${PARTITION_PER_PAIR:-0}"
first_part="$PARTITION"
if [[ "$PER_PAIR" == 1 ]]; then first_part="$PARTITION/seed$(echo "$SEEDS" | awk '{print $1}')"; fi
control=()
if [[ "$CONTROL" == auto ]]; then
  if [[ -f "$first_part/control_A.npy" ]]; then
    control=(--control partition)
  elif [[ -d "$VAL_DIR" ]]; then
    control=(--control "$VAL_DIR" --control-bboxes "$VAL_BBOX_DIR")
  else
    echo "$(basename "$0"): no held-out control ($first_part/control_A.npy, $VAL_DIR): scores are not compared with one" >&2
    control=(--control none)
  fi
elif [[ "$CONTROL" == partition || "$CONTROL" == none ]]; then
  control=(--control "$CONTROL")
else
  control=(--control "$CONTROL" --control-bboxes "$VAL_BBOX_DIR")
fi

# attacked RUN_A RUN_B OUT: every snapshot present in both runs has OUT/ep<E>/results.json
attacked() {
  local f e n=0
  for f in "$1"/model_ep*.pth; do
    [[ -f "$f" ]] || continue
    e="${f##*model_ep}"
    e="${e%.pth}"
    [[ -f "$2/model_ep$e.pth" ]] || continue
    [[ -f "$3/ep$e/results.json" ]] || return 1
    n=$((n + 1))
  done
  [[ $n -gt 0 ]]
}

for m in $METHODS; do
  for n in $NPCS; do
    for s in ${SEEDS:-""}; do
      name="${m}_${n}pc${s:+_seed$s}"
      part="$PARTITION"
      if [[ "$PER_PAIR" == 1 && -n "$s" ]]; then part="$PARTITION/seed$s"; fi
      a="$RUN/train/${name}_A" b="$RUN/train/${name}_B" out="$RUN/attack/${name}"
      if [[ "$LAUNCHER" == slurm && "$FORCE" != 1 ]]; then
        if skip_in_flight "$out"; then continue; fi
        if attacked "$a" "$b" "$out" && ! in_flight "$a" >/dev/null && ! in_flight "$b" >/dev/null; then
          echo "skip (every snapshot attacked): $out" >&2
          continue
        fi
      fi
      run dejavu attack --model-a "$RUN/train/${name}_A" --model-b "$RUN/train/${name}_B" \
        --partition "$part" --npc "$n" --images "$IMAGENET_DIR/train" --bboxes "$BBOX_DIR" \
        --knn "$KNN" --precision "$PRECISION" --decode "$DECODE" "${control[@]}" --out "$RUN/attack/${name}" "${redo[@]}" "${LAUNCH_FLAGS[@]}" \
        ${EXTRA[@]+"${EXTRA[@]}"}
    done
  done
done
