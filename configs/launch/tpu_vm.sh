#!/bin/bash
# Cloud TPU VM launch: run the same command on every worker of a TPU slice, e.g.
#   gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=all \
#     --command="cd worldmodel && bash configs/launch/tpu_vm.sh halfcheetah seed=1"
# Use a single-worker slice: worldmodel.distributed detects multi-worker slices, but the trainer
# does not yet split work across hosts. On preemption the VM sends SIGTERM, scripts.train saves and exits 0,
# and rerunning this script resumes from RUN_DIR (put it on a persistent disk or bucket mount).
set -euo pipefail
RUN_DIR="${RUN_DIR:-runs/tpu-$(hostname -s | sed 's/-w-[0-9]*$//')}"
exec python -m scripts.train "$@" run_dir="${RUN_DIR}"
