"""medledger's network layer: secret peer links over aiohttp websockets (channel.py, peers.py), gossip,
block sync, the simulator (issues [NET] and 9 [TRUST])."""
