#!/usr/bin/env bash
# Attack every snapshot pair of the A/B runs of each method x npc under $RUNS.
#   RUNS=runs/imagenet IMAGENET_DIR=/data/imagenet BBOX_DIR=/data/imagenet/bboxes \
#   METHODS="vicreg simclr" NPCS="100 300 500" [SLURM_PARTITION=gpu] attk_cmds/attack_runs.sh [--dry-run] [extra attack flags]
# Layout: $RUNS/partition, $RUNS/train/<method>_<npc>pc_{A,B}/model_ep*.pth -> $RUNS/attack/<method>_<npc>pc/ep<E>/
# With SLURM_PARTITION set, each command is submitted with srun (one GPU); otherwise it runs here.
set -euo pipefail
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
: "${RUNS:?set RUNS to the run folder (holding partition/ and train/)}"
: "${IMAGENET_DIR:?set IMAGENET_DIR to the ImageFolder train folder}"
: "${BBOX_DIR:?set BBOX_DIR to the folder holding Annotation/}"
METHODS=${METHODS:-vicreg}
NPCS=${NPCS:-300}
for m in $METHODS; do
  for n in $NPCS; do
    a="$RUNS/train/${m}_${n}pc_A"; b="$RUNS/train/${m}_${n}pc_B"
    cmd=(dejavu attack --model-a "$a" --model-b "$b" --partition "$RUNS/partition" --npc "$n"
         --images "$IMAGENET_DIR" --bboxes "$BBOX_DIR" --out "$RUNS/attack/${m}_${n}pc" --skip-existing "$@")
    if [[ -n "${SLURM_PARTITION:-}" ]]; then
      cmd=(srun -p "$SLURM_PARTITION" --gres=gpu:1 --cpus-per-task=10 --time=12:00:00 "${cmd[@]}")
    fi
    if [[ $DRY == 1 ]]; then printf '%q ' "${cmd[@]}"; echo; else "${cmd[@]}"; fi
  done
done
