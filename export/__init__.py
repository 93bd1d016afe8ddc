"""Export Hugging Face / GGUF causal LMs to validated ExecuTorch programs."""
