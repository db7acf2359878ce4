"""Every measurement of a variant: latency, size, the harness's child process, end-to-end cost, the CPU's
matmul peak (roofline), the FinBERT-sized yardstick, OOD-val beside val."""
