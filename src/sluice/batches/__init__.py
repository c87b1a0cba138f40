"""The Batch API: batches of relay requests that Sluice runs itself, through its own relay."""
