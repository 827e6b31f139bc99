#!/usr/bin/env bash
# Install medledger and run the demo: for now a single validator node on 127.0.0.1:26657 with
# its home in .demo/node0 (created on first run), until Ctrl-C.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"

home=.demo/node0
if [ ! -f "$home/config.toml" ]; then
  .venv/bin/medledger init --home "$home" --name clinic-node --chain-id medledger-demo --api-port 26657
fi
echo "starting the node; try:  .venv/bin/medledger status --home $home   (Ctrl-C stops it)"
exec .venv/bin/medledger start --home "$home"
