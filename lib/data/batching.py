"""Batches for training and evaluation: a split tokenized once, length-grouped shuffling, dynamic padding."""
import pandas as pd
import torch


class TextDataset(torch.utils.data.Dataset):
    """A split tokenized once up front (truncated, not padded): batches then only pad, every epoch."""

    def __init__(self, df: pd.DataFrame, tokenizer, max_length: int):
        self.texts = df["text"].astype(str).tolist()
        self.labels = df["label"].astype(int).tolist()
        enc = tokenizer(self.texts, truncation=True, max_length=max_length) if self.texts else {}
        self.features = [dict(zip(enc.keys(), row)) for row in zip(*enc.values())]
        self.pad_ids = {"input_ids": tokenizer.pad_token_id, "token_type_ids": tokenizer.pad_token_type_id}
        self.left = tokenizer.padding_side == "left"

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, i):
        return self.features[i], self.labels[i], i

    def pad(self, features: list[dict]) -> dict:
        """Pad to the batch's longest sentence exactly as the tokenizer's padding=True does."""
        width = max(len(f["input_ids"]) for f in features)
        out = {}
        for key in features[0]:
            fill = [self.pad_ids.get(key, 0)]
            out[key] = torch.tensor([fill * (width - len(f[key])) + f[key] if self.left else
                                     f[key] + fill * (width - len(f[key])) for f in features])
        return out


class LengthGroupedSampler(torch.utils.data.Sampler):
    """Shuffled order in which neighbours have similar length, so dynamically padded batches waste little.

    As in transformers' group_by_length: a random permutation is cut into mega-batches of `mega`
    batches, each sorted by length, then the batches are shuffled. A new order every epoch; under
    data parallelism every rank draws the same order and takes every world-th item of each batch.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, rank: int = 0, world: int = 1, mega: int = 50):
        self.lengths, self.batch_size, self.seed = list(lengths), batch_size, seed
        self.rank, self.world, self.mega, self.epoch = rank, world, mega, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return -(-len(self.lengths) // self.world)

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1  # without set_epoch (single process) the next epoch still gets a new order
        order = torch.randperm(len(self.lengths), generator=gen).tolist()
        size = self.batch_size * self.world * self.mega
        order = [i for k in range(0, len(order), size) for i in sorted(order[k:k + size], key=self.lengths.__getitem__)]
        # Batches in random order, not short to long: a stage that scores importance on the first
        # few batches must see typical sentences, and training gets no length ramp within an epoch.
        step = self.batch_size * self.world
        full = len(order) // step  # a short last batch stays last, so ranks keep batch-aligned slices
        order = [i for c in torch.randperm(full, generator=gen).tolist() for i in order[c * step:(c + 1) * step]] \
            + order[full * step:]
        order += order[:len(self) * self.world - len(order)]  # equal share per rank
        return iter(order[self.rank::self.world])


def make_loader(df: pd.DataFrame, tokenizer, batch_size: int, max_length: int, shuffle: bool = False,
                seed: int = 0, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """Batches padded to their own longest sentence (dynamic padding), not to max_length.

    Training (shuffle) batches group sentences of similar length: about half the tokens of a plain shuffle.
    Evaluation batches run shortest first for the same reason; passes put their rows back by idx (input_order).
    """
    dataset = TextDataset(df, tokenizer, max_length)

    def collate(items):
        features, labels, idx = zip(*items)
        enc = dataset.pad(list(features))
        enc["labels"] = torch.tensor(labels)
        enc["idx"] = torch.tensor(idx)  # lets distillation look up precomputed teacher logits
        return enc

    lengths = [len(f["input_ids"]) for f in dataset.features]
    sampler = (LengthGroupedSampler(lengths, batch_size, seed) if shuffle
               else sorted(range(len(lengths)), key=lengths.__getitem__))  # stable: ties keep the input order
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate,
                                       pin_memory=pin_memory)


def input_order(idx: list[torch.Tensor]) -> torch.Tensor | slice:
    """The rows of one pass over a loader (their batches' idx, in the order they came) put back in the dataset's
    order; as they came where the batches carry no idx."""
    return torch.argsort(torch.cat(idx)) if idx else slice(None)


def pinned(loader, device):
    """The same batches from page-locked memory when the device is CUDA (async host-to-GPU copies); else as given.

    Every training and evaluation loop goes through this, so --gpu pins whichever stage built the loader."""
    if device.type != "cuda" or not isinstance(loader, torch.utils.data.DataLoader) or loader.pin_memory:
        return loader
    return torch.utils.data.DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=loader.sampler,
                                       collate_fn=loader.collate_fn, pin_memory=True)


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def model_inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k not in ("labels", "idx")}


def autocast(device, enabled: bool):
    # bf16 autocast on CUDA only: CPU training stays in fp32 for reproducible figures.
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


def length_sorted(tokenizer, texts: list[str], batch_size: int = 32, max_length: int = 128) -> list[list[str]]:
    """The texts in batches of similar token counts, as lib.predict forms them: each pads only to its own longest."""
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]
    order = sorted(range(len(texts)), key=lengths.__getitem__)
    return [[texts[i] for i in order[s:s + batch_size]] for s in range(0, len(order), batch_size)]
