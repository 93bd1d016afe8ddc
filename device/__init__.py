"""Talk to phones and boards over ADB: push models, benchmark them, collect latency and sparsity."""
