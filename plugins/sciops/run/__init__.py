"""One run's configuration and records: parameters, names, the run record, the project layout, chunking, what was processed, the nightly selection."""
