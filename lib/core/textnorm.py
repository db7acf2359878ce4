"""Input normalization for social-media finance text: links and user handles become placeholder words.

The same function runs when stage 01 writes every CSV split (so every later stage trains and scores on it) and
in `predict` (the exported config.json names the mode), so served text is normalized exactly as training text.

Mode "placeholders": every link (http/https/www, t.co, and links cut off by a trailing "…") becomes the word
`http` and every @handle becomes `@user`; both are in the bert-base-uncased vocabulary, and FiQA's in-domain
posts already hold such words. Cashtags ($AAPL) are kept as they are: the WordPiece tokenizer already splits
"$" from the ticker, and dropping the "$" cost in-domain val (README, "Input normalization").
"""
import re

from lib.core.errors import FinCompressError

MODES = ("none", "placeholders")
URL_WORD, HANDLE_WORD = "http", "@user"
# A whole link, or the start of one that a tweet cut off with "…" ("https://t.co/Ab…", "http…", "ht…").
URL_RE = re.compile(r"(?:https?://|www\.)\S+|\bh(?:t|tt|ttp|ttps?:?/{0,2}\S*)\u2026", re.IGNORECASE)
HANDLE_RE = re.compile(r"(?<![\w@])@\w+")


def check_mode(mode: str) -> str:
    """The mode, or a one-line error naming the ones there are."""
    if mode not in MODES:
        raise FinCompressError(f"text_normalization {mode!r} is not a mode; pass one of {', '.join(MODES)}")
    return mode


def normalize_text(text: str, mode: str) -> str:
    """One text in the given mode; "none" returns it unchanged. Idempotent."""
    if check_mode(mode) == "none":
        return text
    out = HANDLE_RE.sub(f" {HANDLE_WORD} ", URL_RE.sub(f" {URL_WORD} ", text))
    return " ".join(out.split())


def normalize_texts(texts, mode: str) -> list[str]:
    return [normalize_text(t, mode) for t in texts]


def normalize_frame(df, mode: str, column: str = "text"):
    """A copy of `df` with `column` normalized (the frame itself when mode is "none")."""
    if check_mode(mode) == "none":
        return df
    return df.assign(**{column: normalize_texts(df[column].astype(str), mode)})
