"""A small CNN on sklearn's digits (8x8 images, 1797 samples, shipped with scikit-learn).

usage:
  float_digits.py train TAG WORKDIR [EVAL_STATE]
      Trains from seed 0 (fixed 1437/360 split, Adam, batch 64, EPOCHS epochs). After each
      epoch a validation loop runs under torch.no_grad(); its logits and the weights it saw
      are saved to WORKDIR/TAG.epoch<E>.pt. The final state_dict goes to
      WORKDIR/TAG.final.pt. With EVAL_STATE, first evaluates that state_dict (inference
      accuracy of given weights) and saves the logits to WORKDIR/TAG.given.pt.
  float_digits.py eval WORKDIR TAG ...
      Evaluates every WORKDIR/TAG.epoch<E>.pt snapshot (the weights a validation loop saw)
      and saves the logits to WORKDIR/TAG.epoch<E>.reeval.pt.
The report line holds accuracies and the shim's op counts per phase (null without the shim).
"""
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from float_common import op_counts, report, reset_stats

EPOCHS = 6
BATCH = 64


class DigitsNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


def load_data():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - 0.3) / 0.4
    y = torch.tensor(digits.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1234))
    train, test = perm[:1437], perm[1437:]
    return x[train], y[train], x[test], y[test]


def evaluate(model, x):
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[i:i + 128]) for i in range(0, len(x), 128)])


def accuracy(logits, y):
    return 100.0 * (logits.argmax(1) == y).double().mean().item()


def train(tag, workdir, eval_state):
    xtr, ytr, xte, yte = load_data()
    facts = {"tag": tag}
    if eval_state:
        model = DigitsNet()
        model.load_state_dict(torch.load(eval_state))
        reset_stats()
        logits = evaluate(model, xte)
        facts["given_acc"] = accuracy(logits, yte)
        facts["given_ops"] = op_counts()
        torch.save(logits, os.path.join(workdir, f"{tag}.given.pt"))

    torch.manual_seed(0)
    model = DigitsNet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    facts["epochs"] = []
    for epoch in range(EPOCHS):
        model.train()
        reset_stats()
        order = torch.randperm(len(ytr), generator=g)
        for i in range(0, len(order), BATCH):
            idx = order[i:i + BATCH]
            opt.zero_grad()
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            loss.backward()
            grads = {n: (None if p.grad is None else
                         [str(p.grad.dtype), bool(torch.isfinite(p.grad).all()),
                          float(p.grad.abs().sum())])
                     for n, p in model.named_parameters()}
            opt.step()
        train_ops = op_counts()
        reset_stats()
        logits = evaluate(model, xte)  # the validation loop, under no_grad
        val_ops = op_counts()
        torch.save({"logits": logits, "state": model.state_dict()},
                   os.path.join(workdir, f"{tag}.epoch{epoch}.pt"))
        facts["epochs"].append({"acc": accuracy(logits, yte), "train_ops": train_ops,
                                "val_ops": val_ops, "loss": float(loss)})
    facts["last_grads"] = grads
    facts["final_acc"] = facts["epochs"][-1]["acc"]
    torch.save(model.state_dict(), os.path.join(workdir, f"{tag}.final.pt"))
    report(facts)


def reeval(workdir, tags):
    _, _, xte, yte = load_data()
    facts = {}
    for tag in tags:
        accs = []
        for epoch in range(EPOCHS):
            snap = torch.load(os.path.join(workdir, f"{tag}.epoch{epoch}.pt"))
            model = DigitsNet()
            model.load_state_dict(snap["state"])
            logits = evaluate(model, xte)
            torch.save(logits, os.path.join(workdir, f"{tag}.epoch{epoch}.reeval.pt"))
            accs.append(accuracy(logits, yte))
        facts[tag] = accs
    report({"reeval": facts, "ops": op_counts()})


def main():
    if sys.argv[1] == "train":
        train(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
    else:
        reeval(sys.argv[2], sys.argv[3:])


if __name__ == "__main__":
    main()
