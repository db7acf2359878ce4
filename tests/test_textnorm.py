"""lib.core.textnorm: links and handles become placeholder words the tokenizer knows; cashtags stay; idempotent."""
import pandas as pd
import pytest

from lib.core.errors import FinCompressError
from lib.core.textnorm import HANDLE_WORD, MODES, URL_WORD, normalize_frame, normalize_text

CASES = [
    ("Shares up https://t.co/IfTM8IoUSG", "Shares up http"),
    ("see http://example.com/a?b=1&c=2, then", "see http then"),
    ("read www.reuters.com/markets now", "read http now"),
    ("$1.324 trilli… https://t.co/L2rwQ…", "$1.324 trilli… http"),
    ("cut off at the end htt…", "cut off at the end http"),
    ("cut off https:/…", "cut off http"),
    ("@bcheungz breaks it down, via @Yahoo_Finance:", "@user breaks it down, via @user :"),
    ("mail ir@company.com or @@odd", "mail ir@company.com or @@odd"),
    ("$AAPL and $TSLA.X rally", "$AAPL and $TSLA.X rally"),
    ("Operating profit rose to EUR 13.1 mn .", "Operating profit rose to EUR 13.1 mn ."),
    ("http is a word, and so is httpd", "http is a word, and so is httpd"),
]


@pytest.mark.parametrize("raw,want", CASES)
def test_placeholders_replace_links_and_handles_and_keep_cashtags(raw, want):
    assert normalize_text(raw, "placeholders") == want
    assert normalize_text(want, "placeholders") == want  # idempotent: normalizing twice changes nothing


@pytest.mark.parametrize("raw,_", CASES)
def test_none_returns_the_text_unchanged(raw, _):
    assert normalize_text(raw, "none") is raw


def test_placeholders_are_single_tokens_of_the_teachers_vocabulary():
    from lib.core.model_source import PACKAGED_TEACHER, resolve_model_source
    from pathlib import Path
    vocab = set((Path(resolve_model_source(PACKAGED_TEACHER)) / "vocab.txt").read_text().split())
    assert URL_WORD in vocab and HANDLE_WORD.lstrip("@") in vocab and "@" in vocab


def test_frames_are_normalized_in_one_column_and_none_leaves_the_frame_alone():
    df = pd.DataFrame({"text": ["a https://x.y/z", "@b c"], "label": [0, 1]})
    out = normalize_frame(df, "placeholders")
    assert out["text"].tolist() == ["a http", "@user c"] and out["label"].tolist() == [0, 1]
    assert df["text"].tolist() == ["a https://x.y/z", "@b c"]
    assert normalize_frame(df, "none") is df


def test_an_unknown_mode_is_one_line_naming_the_modes():
    with pytest.raises(FinCompressError, match=", ".join(MODES)):
        normalize_text("x", "strip")
