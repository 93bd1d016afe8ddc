"""Accuracy vs sparsity evaluation of dense and delta attention (`python -m export.evaluate`)."""
