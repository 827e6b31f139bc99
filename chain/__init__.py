"""medledger's chain layer: wire types, canonical codec, validation, store, mempool, consensus.

Imports only `medledger.crypto` (DESIGN.md §1). The consensus code here is sans-I/O: the node and
the simulator wire it to the network, the clock and the disk.
"""
