"""FinCompress: compress a financial-sentiment BERT for CPU inference."""
