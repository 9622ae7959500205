#!/bin/bash
# Cloud TPU VM launch: run the same command on every worker of a TPU slice, e.g.
#   gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=all \
#     --command="cd worldmodel && bash configs/launch/tpu_vm.sh halfcheetah seed=1"
# On a multi-worker slice every worker runs this script: worldmodel.distributed detects the slice
# and the workers train one agent (own envs and replay each, data-parallel update; set mesh.data
# to the slice's chips). RUN_DIR must then be storage all workers share (a bucket or Filestore
# mount); its default name is the same on every worker. On preemption the VM sends SIGTERM,
# scripts.train saves and exits 0, and rerunning this script resumes from RUN_DIR.
set -euo pipefail
RUN_DIR="${RUN_DIR:-runs/tpu-$(hostname -s | sed 's/-w-[0-9]*$//')}"
exec python -m scripts.train "$@" run_dir="${RUN_DIR}"
