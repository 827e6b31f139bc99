"""medledger: a permissioned ledger for patient data.

The layers live in their own folders and install under this namespace (DESIGN.md §1):
`medledger.crypto` → `medledger.chain` → `medledger.network` / `medledger.health` → `medledger.node`.
This root package holds only what every layer shares: the version and the root error type.
"""

__version__ = "0.1.0"
