"""The report generator: a torchvision CNN gives each view's feature map as visual tokens, a
small Transformer decoder (torch.nn) writes the report over them, trained with teacher forcing
and decoded greedily or by beam search up to a maximum length."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainers.xr2text.text import BOS, EOS, PAD


def _group_norm(channels: int) -> nn.Module:
    return nn.GroupNorm(min(32, channels // 4), channels)


def build_encoder(arch: str, pretrained: bool, norm: str = "batch") -> nn.Module:
    """The convolutional trunk of ``torchvision.models.<arch>`` (a ResNet without its pooling
    and head, or any model's ``features``), from ImageNet weights with ``pretrained``.

    ``norm="group"`` builds a ResNet with group norm instead of batch norm: trained from
    scratch on micro-batches of 4 studies, batch statistics are too noisy, and the running ones
    validation uses drift from them (an untrained trunk then reads every image alike)."""
    from torchvision import models

    if arch not in models.list_models(module=models):
        raise ValueError(f"unknown --encoder {arch!r}; torchvision models include resnet18, "
                         f"resnet50, resnet101, densenet121, efficientnet_b0, mobilenet_v3_small")
    if norm == "group" and (pretrained or not arch.startswith(("resnet", "resnext",
                                                                "wide_resnet"))):
        raise ValueError(f"--encoder-norm group needs a ResNet trained from scratch, not "
                         f"{arch}{' with --pretrained' if pretrained else ''}")
    kwargs = {"norm_layer": _group_norm} if norm == "group" else {}
    try:
        model = models.get_model(arch, weights="DEFAULT" if pretrained else None, **kwargs)
    except Exception as e:  # no network, a proxy, a corrupt cache: one line, not a traceback
        raise ValueError(f"cannot fetch torchvision's weights for {arch} ({type(e).__name__}: "
                         f"{e}); run without --pretrained or put them in the torch hub "
                         f"cache") from None
    if hasattr(model, "layer4") and hasattr(model, "fc"):  # the ResNet family
        return nn.Sequential(*list(model.children())[:-2])
    if isinstance(getattr(model, "features", None), nn.Module):
        return model.features
    raise ValueError(f"--encoder {arch}: no convolutional trunk (expected a ResNet or a model "
                     f"with .features)")


class ReportGenerator(nn.Module):
    def __init__(self, vocab_size: int, *, encoder: str, pretrained: bool, image_size: int,
                 encoder_norm: str = "batch",
                 views: int, d_model: int, layers: int, heads: int, ff: int, dropout: float,
                 max_len: int):
        super().__init__()
        self.max_len = max_len
        self.encoder = build_encoder(encoder, pretrained, encoder_norm)
        with torch.no_grad():  # the trunk's output shape, in eval mode (no statistics move)
            was = self.encoder.training
            fmap = self.encoder.eval()(torch.zeros(1, 3, image_size, image_size))
            self.encoder.train(was)
        channels, cells = fmap.shape[1], fmap.shape[2] * fmap.shape[3]
        # Each feature at each place standardised across studies: an untrained trunk's features
        # differ from one image to the next by a sliver of what they differ by from place to
        # place, which a decoder cannot use (it learns the reports' language, not the images).
        self.feature_norm = nn.BatchNorm1d(channels * cells)
        self.project = nn.Sequential(nn.Linear(channels, d_model), nn.LayerNorm(d_model))
        self.visual_pos = nn.Parameter(torch.zeros(1, views * cells, d_model))
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        self.text_pos = nn.Parameter(torch.zeros(1, max_len + 2, d_model))
        nn.init.normal_(self.visual_pos, std=0.02)
        nn.init.normal_(self.text_pos, std=0.02)
        layer = nn.TransformerDecoderLayer(d_model, heads, ff, dropout, batch_first=True,
                                           norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers, norm=nn.LayerNorm(d_model))
        self.head = nn.Linear(d_model, vocab_size)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, views, 3, H, W]`` -> visual tokens ``[B, views * cells, d_model]``."""
        b, v = images.shape[:2]
        fmap = self.encoder(images.flatten(0, 1))  # [B*V, C, h, w]
        n, c, cells = fmap.shape[0], fmap.shape[1], fmap.shape[2] * fmap.shape[3]
        fmap = self.feature_norm(fmap.reshape(n, c * cells)).reshape(n, c, cells)
        tokens = fmap.transpose(1, 2).reshape(b, v * cells, c)
        return self.project(tokens) + self.visual_pos

    def logits(self, memory: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token logits at every position of ``tokens`` (causal), ``[B, L, vocab]``."""
        n = tokens.shape[1]
        causal = torch.triu(torch.ones(n, n, dtype=torch.bool, device=tokens.device), 1)
        x = self.embed(tokens) + self.text_pos[:, :n]
        y = self.decoder(x, memory, tgt_mask=causal, tgt_key_padding_mask=tokens == PAD,
                         tgt_is_causal=True)
        return self.head(y)

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: the mean cross-entropy of ``ids[:, 1:]`` given ``ids[:, :-1]``
        (padding ignored)."""
        logits = self.logits(self.encode(images), ids[:, :-1])
        return F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten(),
                               ignore_index=PAD)

    @torch.no_grad()
    def generate(self, images: torch.Tensor, beam_size: int = 1) -> list[list[int]]:
        """Word ids of each study's report (without ``<bos>``/``<eos>``): greedy for
        ``beam_size`` 1, else beam search over summed log-probabilities."""
        memory = self.encode(images)
        if beam_size <= 1:
            return greedy(self, memory, self.max_len)
        return beam_search(self, memory, beam_size, self.max_len)


def _next_logp(model: ReportGenerator, memory: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(model.logits(memory, seqs)[:, -1].float(), dim=-1)
    logp[:, PAD] = logp[:, BOS] = float("-inf")  # never written by the model
    return logp


def _strip(seq: list[int]) -> list[int]:
    out = []
    for t in seq[1:]:
        if t in (EOS, PAD):
            break
        out.append(t)
    return out


def greedy(model: ReportGenerator, memory: torch.Tensor, max_len: int) -> list[list[int]]:
    seqs = torch.full((memory.shape[0], 1), BOS, dtype=torch.long, device=memory.device)
    done = torch.zeros(memory.shape[0], dtype=torch.bool, device=memory.device)
    for _ in range(max_len):
        tok = _next_logp(model, memory, seqs).argmax(-1)
        tok = torch.where(done, torch.full_like(tok, PAD), tok)
        seqs = torch.cat([seqs, tok[:, None]], 1)
        done |= tok == EOS
        if done.all():
            break
    return [_strip(s) for s in seqs.tolist()]


def beam_search(model: ReportGenerator, memory: torch.Tensor, k: int,
                max_len: int) -> list[list[int]]:
    """Keep the ``k`` best prefixes per study; a prefix that wrote ``<eos>`` is finished and
    keeps its score. After ``max_len`` words the best of the ``k`` is returned."""
    b, dev = memory.shape[0], memory.device
    memory = memory.repeat_interleave(k, 0)
    seqs = torch.full((b * k, 1), BOS, dtype=torch.long, device=dev)
    scores = torch.zeros(b, k, device=dev)
    scores[:, 1:] = float("-inf")  # all beams start equal: expand only the first
    finished = torch.zeros(b * k, dtype=torch.bool, device=dev)
    for _ in range(max_len):
        logp = _next_logp(model, memory, seqs)
        logp[finished] = float("-inf")
        logp[finished, PAD] = 0.0  # a finished beam goes on with padding, at no cost
        vocab = logp.shape[1]
        top, idx = (scores.reshape(-1, 1) + logp).reshape(b, k * vocab).topk(k, dim=1)
        rows = (torch.arange(b, device=dev)[:, None] * k + idx // vocab).reshape(-1)
        tok = (idx % vocab).reshape(-1)
        seqs = torch.cat([seqs[rows], tok[:, None]], 1)
        finished = finished[rows] | (tok == EOS)
        scores = top
        if finished.all():
            break
    best = scores.argmax(1) + torch.arange(b, device=dev) * k
    return [_strip(seqs[i].tolist()) for i in best.tolist()]


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

