"""The corpora and their splits, the out-of-domain tweets, batches for training and scoring."""
