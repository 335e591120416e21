"""Tiny random Hugging Face models (nothing downloaded) and a tokenizer built here, for the torch
plugin's transformers tests."""
from __future__ import annotations

import copy
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
import transformers as T  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(46)]
FAMILIES = ("bert", "roberta", "distilbert", "gpt2", "vit")


def config(family: str, dropout: float = 0.0):
    """A 2-layer, 4-head config of `family` (hidden 32)."""
    if family == "bert":
        return T.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=37, hidden_dropout_prob=0.0, attention_probs_dropout_prob=dropout)
    if family == "roberta":
        return T.RobertaConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=37, hidden_dropout_prob=0.0, attention_probs_dropout_prob=dropout)
    if family == "distilbert":
        return T.DistilBertConfig(vocab_size=len(VOCAB), dim=32, n_layers=2, n_heads=4, hidden_dim=37, dropout=0.0,
                                  attention_dropout=dropout)
    if family == "gpt2":
        return T.GPT2Config(vocab_size=len(VOCAB), n_embd=32, n_layer=2, n_head=4, n_positions=32, resid_pdrop=0.0,
                            embd_pdrop=0.0, attn_pdrop=dropout, bos_token_id=2, eos_token_id=3)
    if family == "vit":
        return T.ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=37, hidden_dropout_prob=0.0, attention_probs_dropout_prob=dropout)
    raise ValueError(family)


MODEL = {"bert": T.BertModel, "roberta": T.RobertaModel, "distilbert": T.DistilBertModel, "gpt2": T.GPT2Model,
         "vit": T.ViTModel}

#: the attention modules' names, as tensortap names them (attention/<name>)
LAYER_NAMES = {"bert": "encoder.layer.{}.attention.self", "roberta": "encoder.layer.{}.attention.self",
               "distilbert": "transformer.layer.{}.attention", "gpt2": "h.{}.attn",
               "vit": "layers.{}.attention"}


def twins(family: str, dropout: float = 0.0):
    """The same random weights as an eager-attention model and an SDPA (default) one."""
    torch.manual_seed(0)
    eager = MODEL[family]._from_config(copy.deepcopy(config(family, dropout)), attn_implementation="eager")
    sdpa = MODEL[family]._from_config(copy.deepcopy(config(family, dropout)), attn_implementation="sdpa")
    sdpa.load_state_dict(eager.state_dict())
    return eager.eval(), sdpa.eval()


def inputs(family: str, batch: int = 3, seq: int = 7) -> dict:
    """Model inputs; text models get padding in the last sequence (its keys from 5 on are masked)."""
    g = torch.Generator().manual_seed(1)
    if family == "vit":
        return {"pixel_values": torch.randn(batch, 3, 16, 16, generator=g)}
    ids = torch.randint(4, len(VOCAB), (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[-1, 5:] = 0
    ids[-1, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def tokenizer():
    """A WordLevel tokenizer over VOCAB ("w4 w17 ..." -> [CLS] ... [SEP]), made here."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2),
                                                                                                ("[SEP]", 3)])
    return T.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                     sep_token="[SEP]")
