"""Vocabulary trimming: keep the WordPiece tokens the domain corpus uses, drop the other embedding rows.

The word-embedding matrix is half of MiniLM's parameters (30,522 x 384) and head/FFN pruning never
touches it, yet financial sentences use a fraction of the bert-base-uncased vocabulary. Every single
character (and its ## form) is kept as well, so a word the corpus never showed is split into smaller
kept pieces rather than turned into [UNK]. The first `frequent` ids are kept too: BERT's vocabulary
lists whole words by corpus frequency, so they are the most common words, a prior for the words of
future text that the domain sample never showed; trimming without it costs more test F1. BERT's
`[unusedN]` placeholders among those first ids are skipped: ordinary text never tokenizes to them.
A corpus token used fewer than `min_count` times is dropped too (its word falls back to kept pieces).
The position table is cut to the longest input the model is ever given (`trim_positions`).
"""
from collections import Counter

import torch

from lib.core.errors import FinCompressError


def kept_token_ids(tokenizer, texts: list[str], frequent: int = 0, min_count: int = 1) -> list[int]:
    """Old ids to keep, ascending: special tokens, every single character, every token `texts` use at
    least `min_count` times, and the first `frequent` ids (the most common words) but the placeholders."""
    vocab = tokenizer.get_vocab()
    unused = {i for t, i in vocab.items() if t.startswith("[unused")}
    used = set(tokenizer.all_special_ids) | (set(range(min(frequent, len(vocab)))) - unused)
    counts = Counter(i for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"] for i in ids)
    used.update(i for i, n in counts.items() if n >= min_count)
    used.update(i for t, i in vocab.items() if len(t) == 1 or (t.startswith("##") and len(t) == 3))
    return sorted(used)


def trimmed_tokenizer(tokenizer, keep: list[int]):
    """The same WordPiece tokenizer over the kept tokens, renumbered 0..len(keep)-1 in their old order."""
    from transformers import BertTokenizer
    if tokenizer.backend_tokenizer.model.__class__.__name__ != "WordPiece":
        raise FinCompressError(f"vocabulary trimming needs a WordPiece (BERT) tokenizer, got "
                               f"{type(tokenizer).__name__}; set trim_vocab = False for this model")
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    kw = {k: tokenizer.init_kwargs[k] for k in ("do_lower_case", "tokenize_chinese_chars", "strip_accents")
          if k in tokenizer.init_kwargs}
    return BertTokenizer(vocab={by_id[old]: new for new, old in enumerate(keep)}, unk_token=tokenizer.unk_token,
                         sep_token=tokenizer.sep_token, pad_token=tokenizer.pad_token, cls_token=tokenizer.cls_token,
                         mask_token=tokenizer.mask_token, model_max_length=tokenizer.model_max_length, **kw)


def trim_vocab(model, tokenizer, texts: list[str], frequent: int = 0, min_count: int = 1):
    """(model, tokenizer, kept old ids) with the embedding matrix cut to the tokens `texts` need."""
    keep = kept_token_ids(tokenizer, texts, frequent, min_count)
    new_tokenizer = trimmed_tokenizer(tokenizer, keep)
    old = model.get_input_embeddings()
    new = torch.nn.Embedding(len(keep), old.embedding_dim, padding_idx=new_tokenizer.pad_token_id)
    with torch.no_grad():
        new.weight.copy_(old.weight[torch.tensor(keep)])
    model.set_input_embeddings(new)
    model.config.vocab_size = len(keep)
    model.config.pad_token_id = new_tokenizer.pad_token_id
    return model, new_tokenizer, keep


def trim_positions(model, max_length: int):
    """The model with its position table cut to the first `max_length` rows: serving refuses longer input
    (lib.predict), so the other rows are never read; at 512 x 384 FP32 they are 0.6 MB of a 9 MB model."""
    emb = model.base_model.embeddings
    if max_length >= emb.position_embeddings.num_embeddings:
        return model
    with torch.no_grad():
        emb.position_embeddings = torch.nn.Embedding.from_pretrained(
            emb.position_embeddings.weight[:max_length].clone(), freeze=False)
    for name in ("position_ids", "token_type_ids"):  # BERT's buffers sized by the table, sliced per input
        if hasattr(emb, name):
            setattr(emb, name, getattr(emb, name)[:, :max_length].clone())
    model.config.max_position_embeddings = max_length
    return model
