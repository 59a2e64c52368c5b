"""What a run cost and the ledger of runs."""
