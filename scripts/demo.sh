#!/usr/bin/env bash
# Install medledger and run the demo: the four-institution network from node/demo.toml (a clinic,
# a hospital, an insurer and a research institute, each a validator on its own node, APIs from
# http://127.0.0.1:26657), a mosquitto broker for their events (installed by bootstrap.sh when
# missing), the consent story through the real APIs with the patient's notifications, then the
# network keeps running until Ctrl-C. Homes, keys and tokens are generated into .demo/ (a previous
# demo's chain is replaced).
set -euo pipefail
# `source` without arguments would hand this script's own arguments (e.g. --once) to bootstrap.sh
# as its "extra" and so to pip: name bootstrap's argument explicitly (none: the plain install).
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh" ""

exec .venv/bin/medledger demo --home .demo "$@"
