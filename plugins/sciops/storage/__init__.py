"""The storage root (a folder or an S3 prefix), its trees, the S3 client and the sync engine."""
