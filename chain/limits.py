"""Every size and count limit of the chain layer, in one place (TIGER_STYLE: put a limit on everything).

Limits are checked before decoding (byte sizes) and while decoding (lengths, item counts, depth), so
a hostile peer or client can never make a node allocate or recurse without bound.
"""

from typing import Final

#: Largest encoded transaction. Encrypted FHIR bundles with their sealed keys stay well below this.
TX_BYTES_MAX: Final = 256 * 1024
#: Largest opaque application body inside a transaction.
TX_BODY_BYTES_MAX: Final = TX_BYTES_MAX - 1024
#: Largest encoded block (header + txs).
BLOCK_BYTES_MAX: Final = 32 * 1024 * 1024
#: Most transactions one block may carry.
BLOCK_TXS_MAX: Final = 20_000
#: Largest encoded commit certificate / vote / other small consensus message.
CONSENSUS_MESSAGE_BYTES_MAX: Final = 64 * 1024
#: Largest validator set.
VALIDATORS_MAX: Final = 256
#: Deepest nesting the codec accepts in any message.
DEPTH_MAX: Final = 8
#: Longest identifier-like text field (chain id, tx kind, names).
TEXT_ID_LENGTH_MAX: Final = 64
#: Largest unsigned integer on the wire.
UINT_MAX: Final = 2**64 - 1

#: Most transactions one API batch may carry.
API_BATCH_TXS_MAX: Final = 5_000
#: Largest API request body.
API_BODY_BYTES_MAX: Final = 48 * 1024 * 1024
#: Most blocks one range request returns.
API_BLOCK_RANGE_MAX: Final = 100

#: Mempool bounds.
MEMPOOL_TXS_MAX: Final = 50_000
MEMPOOL_BYTES_MAX: Final = 256 * 1024 * 1024
#: How far (either way) a tx's timestamp may be from the admitting node's clock.
TX_CLOCK_SKEW_MS_MAX: Final = 10 * 60 * 1000
