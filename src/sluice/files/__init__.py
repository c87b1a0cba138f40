"""The Files API for batches: uploads validated line by line, kept in a storage backend."""
