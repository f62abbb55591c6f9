#!/usr/bin/env bash
# One short, prepared script of GPU checks (run on a lent GPU machine, see the closing notes):
# CUDA path, AMP (bf16/fp16), channels_last, a 1-process NCCL DDP run through torchrun, the
# attack on CUDA (torch KNN vs faiss-cpu), KNN timings and a few RCDM steps with AMP; then the
# issue-14 performance benches (perf_checks; ONLY_PERF=1 runs just those). The issue-14 part
# was written on a CPU-only session and has NOT been run on a GPU yet.
# Expects wheels for packages missing there in .whl/ (defusedxml, lightly, submitit,
# diffusers, faiss-cpu) and writes logs to $OUT (or ./gpu_out).
# SMOKE=1 runs the non-perf part on the CPU with small sizes (DEV=cpu, 40 images per class,
# 32 px, no fp16): a check, before a GPU session, that every command of this script still works.
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 DEJAVU_NO_PROGRESS=1
DV="python3 -m dejavu"
W=/tmp/dv
if [ "${SMOKE:-0}" = 1 ]; then DEV=cpu PER=40 SIZE=32 AMPS="none bf16"; else DEV=cuda PER=500 SIZE=64 AMPS="none bf16 fp16"; fi
step() { echo; echo "=== $* ($(date +%T))"; }
# ONLY_PERF=1: run only the issue-14 performance section (about 5-6 minutes on one H100).
perf_checks() {
  step "issue 14.1: training input vs pure compute (batched on-device augmentation), bf16, channels_last, +-compile"
  timeout 240 python3 bench/bench_train_input.py --cuda-only --steps 5
  step "issue 14.2: JPEG decode (PIL, draft, decode_jpeg CPU, batched decode_jpeg CUDA), eval draft tolerance"
  timeout 120 python3 bench/bench_jpeg.py --n 64
  step "issue 14.3: dejavu attack vs pure forward on CUDA (bf16 autocast, channels_last, prefetch)"
  DEJAVU_THREADS=4 timeout 150 python3 bench/bench_attack.py --device cuda --repeat 2
  step "issue 14.3: the same at ImageNet-like compute per image (resnet50, 224 px)"
  DEJAVU_THREADS=4 timeout 200 python3 bench/bench_attack.py --device cuda --arch resnet50 --size 224 --per-class 60 --repeat 2
  step "issue 14.3: paper-scale attack projected from rates measured on this card and its cores"
  DEJAVU_NO_PROGRESS=1 timeout 150 python3 bench/bench_paper_projection.py --device cuda
  step "issue 14.3: bf16 vs fp32 attack embeddings on CUDA (neighbour agreement)"
  timeout 60 python3 - <<'PY'
import numpy as np, torch
from dejavu.ssl.model import ModelSpec, SSLModel
from dejavu.attack.knn import knn
torch.manual_seed(0)
m = SSLModel(ModelSpec("resnet50", "8192-8192-8192", 0)).cuda().eval().to(memory_format=torch.channels_last)
x = torch.randn(2048, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
with torch.no_grad():
    e32 = torch.cat([m.embed(x[i:i+256], "projector").float() for i in range(0, 2048, 256)]).cpu().numpy()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        e16 = torch.cat([m.embed(x[i:i+256], "projector").float() for i in range(0, 2048, 256)]).cpu().numpy()
rel = np.linalg.norm(e16 - e32, axis=1) / np.linalg.norm(e32, axis=1)
_, a = knn(e32[:256], e32[256:], 20, backend="torch", device="cuda"); _, b = knn(e16[:256], e16[256:], 20, backend="torch", device="cuda")
print("bf16 vs fp32: max rel diff %.4f, top-20 overlap %.3f, top-1 equal %.3f" % (rel.max(), np.mean([len(set(p) & set(q)) / 20 for p, q in zip(a, b)]), np.mean(a[:, 0] == b[:, 0])))
PY
  cp bench/RESULTS.md "$OUT/RESULTS.md"
}
{
step env
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'tv', torchvision.__version__, 'cuda', torch.cuda.is_available())"
if [ "${ONLY_PERF:-0}" = 1 ]; then perf_checks; step "done"; exit 0; fi

step "data: 10 classes x $PER images, $SIZE px"
$DV data synth --out $W/data --classes 10 --per-class $PER --size $SIZE --annotated-fraction 0.6 --workers 8 --force
$DV partition --data $W/data --per-class $((PER / 5)) --control $((PER / 10)) --out $W/part --force
NPC=$((PER / 5))

for amp in $AMPS; do
  step "VICReg resnet18 ${SIZE}px, 2 epochs on the public set, AMP=$amp"
  $DV train --method vicreg --config vicreg_synth --data $W/data --index $W/part/${NPC}_per_class/public.npy \
    --out $W/run_amp_$amp --device $DEV --force \
    --set arch=resnet18 --set image_size=$SIZE --set epochs=2 --set batch_size=256 --set amp=$amp \
    --set knn_every=0 --set projector=2048-2048 --set warmup_epochs=1
  python3 -c "import json; rows=[json.loads(l) for l in open('$W/run_amp_$amp/metrics.jsonl')]; print('AMP=$amp images/s per epoch:', [round(r['images_per_s']) for r in rows])"
done

step "DDP through torchrun (1 process: NCCL on the GPU, gloo with SMOKE=1)"
torchrun --standalone --nproc_per_node=1 -m dejavu train --method simclr --config simclr_synth --data $W/data \
  --index $W/part/${NPC}_per_class/train_A.npy --out $W/run_ddp --device $DEV --force \
  --set arch=resnet18_small --set image_size=$SIZE --set epochs=2 --set amp=bf16 --set knn_every=1 --set warmup_epochs=1
tail -2 $W/run_ddp/metrics.jsonl

step "attack on $DEV: tiny A/B runs, torch vs faiss KNN, the held-out control"
for s in A B; do
  $DV train --method vicreg --config vicreg_synth --data $W/data --index $W/part/${NPC}_per_class/train_$s.npy \
    --out $W/run_$s --device $DEV --force --set image_size=$SIZE --set epochs=4 --set snapshot_every=4 --set knn_every=0 --set amp=bf16 --set warmup_epochs=1
done
$DV attack --model-a $W/run_A/model_ep4.pth --model-b $W/run_B/model_ep4.pth --partition $W/part --npc $NPC \
  --data $W/data --out $W/atk_torch --device $DEV --knn torch --force
$DV attack --model-a $W/run_A/model_ep4.pth --model-b $W/run_B/model_ep4.pth --partition $W/part --npc $NPC \
  --data $W/data --out $W/atk_faiss --device $DEV --knn faiss --force
python3 - <<PY
import numpy as np
for p in ("A_attk_A", "B_attk_A", "A_attk_B", "B_attk_B"):
    a = np.load("$W/atk_torch/%s_neighb_idxs.npy" % p); b = np.load("$W/atk_faiss/%s_neighb_idxs.npy" % p)
    same = np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b)])
    print(p, "torch-vs-faiss neighbour overlap", round(float(same), 4))
PY

step "audit (one model) on $DEV: crop classifier, KNN attack, held-out control"
$DV audit --model $W/run_A/model_ep4.pth --partition $W/part --npc $NPC --data $W/data --out $W/audit_A \
  --device $DEV --set clf_epochs=3 --set k=20 --force && python3 -c "import json; r=json.load(open('$W/audit_A/results.json')); print('audit score', r['metrics']['top1']['score']['20'])"

step "KNN timing on $DEV: 10k queries x 200k public x 2048, k=100 (SMOKE: 500 x 20k)"
DEV=$DEV SMOKE=${SMOKE:-0} python3 - <<'PY'
import os, time, numpy as np, torch
from dejavu.attack.knn import knn
dev = os.environ["DEV"]; nq, npub = (500, 20_000) if os.environ["SMOKE"] == "1" else (10_000, 200_000)
rng = np.random.default_rng(0)
pub = rng.standard_normal((npub, 2048), dtype=np.float32); q = rng.standard_normal((nq, 2048), dtype=np.float32)
knn(q[:100], pub[:1000], 10, backend="torch", device=dev)
t = time.time(); d, i = knn(q, pub, 100, backend="torch", device=dev)
print("torch %s knn: %.2f s" % (dev, time.time() - t))
gi = torch.cdist(torch.from_numpy(q[:200]).to(dev), torch.from_numpy(pub).to(dev)).topk(100, largest=False).indices.cpu().numpy()
print("agrees with cdist on 200 queries:", float(np.mean([len(set(a) & set(b)) / 100 for a, b in zip(gi, i[:200])])))
PY

step "RCDM: 30 steps on $DEV, then a reconstruction"
for s in A B; do
  $DV rcdm train --ssl-model $W/run_$s/model_ep4.pth --partition $W/part --data $W/data --out $W/rcdm_$s \
    --config tiny --set image_size=$SIZE --steps 30 --device $DEV --force
done
$DV rcdm reconstruct --attack $W/atk_torch --rcdm-a $W/rcdm_A --rcdm-b $W/rcdm_B --select most-memorized:2 \
  --samples 2 --out $W/rec --device $DEV --data $W/data --force && find $W/rec -maxdepth 1 | head
cp $W/rec/summary.png "$OUT/" 2>/dev/null
[ "${SMOKE:-0}" = 1 ] || perf_checks
step "done"
} 2>&1 | tee "$OUT/gpu_checks.log"
