"""Export-ready model architectures that we own (Llama family, BitNet b1.58)."""
from .model_args import ModelArgs
from .transformer import Transformer

__all__ = ["ModelArgs", "Transformer"]
