"""Array jobs: submit, watch (sans-I/O), resubmit; the command runners (local, SSH) and the schedulers (pure, table-driven)."""
