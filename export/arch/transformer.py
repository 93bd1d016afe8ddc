"""One decoder-only transformer for the Llama family and BitNet b1.58.

`forward(tokens[1,S], input_pos[1]) -> logits` with a static KV cache and a
dynamic S, so prefill and decode run through the same exported method.
Module names follow Hugging Face so checkpoints load with a strict state dict.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Architecture
from .model_args import ModelArgs
from .rope import apply_rope, rope_tables, rotate_half_matrix

AttentionFactory = Callable[[int], nn.Module]  # layer index -> attention core


class RMSNorm(nn.Module):
    """The mean of squares is a linear with weight 1/dim: XNNPACK does not take a mean over the
    last dim of a 3-D tensor, and every op it refuses splits a partition."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.register_buffer("mean_weight", torch.full((1, dim), 1.0 / dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(F.linear(x * x, self.mean_weight) + self.eps) * self.weight


class SelfAttention(nn.Module):
    def __init__(self, args: ModelArgs, core: nn.Module):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        self.q_proj = nn.Linear(args.dim, args.n_heads * args.head_dim, bias=False)
        self.k_proj = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=False)
        self.v_proj = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=False)
        self.o_proj = nn.Linear(args.n_heads * args.head_dim, args.dim, bias=False)
        self.attn_sub_norm = (RMSNorm(args.n_heads * args.head_dim, args.norm_eps)
                              if args.architecture == Architecture.BITNET else None)
        self.core = core

    def forward(self, x, rope, start):
        # Batch 1; -1 (not a symbolic size) keeps the views inside XNNPACK partitions.
        q = self.q_proj(x).view(1, -1, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(1, -1, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(1, -1, self.n_kv_heads, self.head_dim)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = self.core(q, k, v, start).reshape(1, -1, self.n_heads * self.head_dim)
        if self.attn_sub_norm is not None:
            out = self.attn_sub_norm(out)
        return self.o_proj(out)


class MLP(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.gate_proj = nn.Linear(args.dim, args.hidden_dim, bias=False)
        self.up_proj = nn.Linear(args.dim, args.hidden_dim, bias=False)
        self.down_proj = nn.Linear(args.hidden_dim, args.dim, bias=False)
        self.bitnet = args.architecture == Architecture.BITNET
        self.ffn_sub_norm = RMSNorm(args.hidden_dim, args.norm_eps) if self.bitnet else None

    def forward(self, x):
        gate = self.gate_proj(x)
        if self.bitnet:
            h = self.ffn_sub_norm(F.relu(gate).square() * self.up_proj(x))
        else:
            h = F.silu(gate) * self.up_proj(x)
        return self.down_proj(h)


class DecoderLayer(nn.Module):
    def __init__(self, args: ModelArgs, core: nn.Module):
        super().__init__()
        self.input_layernorm = RMSNorm(args.dim, args.norm_eps)
        self.self_attn = SelfAttention(args, core)
        self.post_attention_layernorm = RMSNorm(args.dim, args.norm_eps)
        self.mlp = MLP(args)

    def forward(self, x, rope, start):
        x = x + self.self_attn(self.input_layernorm(x), rope, start)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    def __init__(self, args: ModelArgs, make_core: AttentionFactory):
        super().__init__()
        self.embed_tokens = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(DecoderLayer(args, make_core(i)) for i in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs, make_core: AttentionFactory, max_context_len: int,
                 full_logits: bool = False):
        super().__init__()
        self.args = args
        self.max_context_len = max_context_len
        self.full_logits = full_logits
        self.model = Backbone(args, make_core)
        self.lm_head = nn.Linear(args.dim, args.vocab_size, bias=False)
        if args.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        cos, sin = rope_tables(args.head_dim, args.rope_theta, args.rope_scaling, max_context_len)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.register_buffer("rope_rot", rotate_half_matrix(args.head_dim), persistent=False)

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        h = self.hidden(tokens, input_pos)
        if not self.full_logits:
            h = h[:, -1, :]
        return self.lm_head(h)

    def hidden(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        """The final-norm hidden states [1, S, dim] (caches updated as by forward); evaluation
        applies lm_head only to the positions it scores."""
        seq_len = tokens.shape[1]
        start = input_pos[0].item()
        torch._check(start >= 0)
        torch._check(start + seq_len <= self.max_context_len)
        cos = self.rope_cos.narrow(0, start, seq_len).view(1, -1, 1, self.args.head_dim)
        sin = self.rope_sin.narrow(0, start, seq_len).view(1, -1, 1, self.args.head_dim)
        rope = (cos, sin, self.rope_rot)
        h = self.model.embed_tokens(tokens)
        for layer in self.model.layers:
            h = layer(h, rope, start)
        return self.model.norm(h)
