#!/usr/bin/env bash
# Train VideoTGB on several nodes under SLURM: one `torchrun` per node, which starts one process per GPU and joins
# the others through a c10d rendezvous on the job's first node. Every argument goes to `videotgb-train`.
#
#   sbatch --nodes 4 scripts/slurm_train.sh --stage instruct --model videotgb-7b-init --train_files shards \
#       --output_dir runs/instruct --max_steps 2000 --bf16 --deepspeed zero3
#
# Environment (all optional): GPUS_PER_NODE (default: SLURM_GPUS_ON_NODE, else 8), MASTER_PORT (default 29500),
# PYTHON (default: python; e.g. .venv/bin/python). Build shards with `--world-size` = nodes x GPUs per node (or a
# divisor of their count that is a multiple of it) so that every rank reads the same number of shards.
#SBATCH --job-name=videotgb-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

: "${SLURM_JOB_ID:?run this script with sbatch (or inside an salloc allocation)}"
gpus_per_node=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}
master_addr=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
master_port=${MASTER_PORT:-29500}

echo "videotgb-train: ${SLURM_NNODES} node(s) x ${gpus_per_node} process(es), rendezvous at ${master_addr}:${master_port}"
srun --ntasks-per-node=1 --kill-on-bad-exit=1 "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes "$SLURM_NNODES" \
    --nproc_per_node "$gpus_per_node" \
    --rdzv_id "$SLURM_JOB_ID" \
    --rdzv_backend c10d \
    --rdzv_endpoint "${master_addr}:${master_port}" \
    -m videotgb.train "$@"
