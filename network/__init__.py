"""medledger's network layer: peer links over aiohttp, gossip, block sync, the simulator (issue [NET])."""
