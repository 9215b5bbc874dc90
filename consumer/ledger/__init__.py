"""The event ledger: the inbox every event is stored in once, and its hash-chain check."""
