"""Feed-forward blocks for the linear -> [gelu] -> [dropout] -> linear handoff
(shim/fusion.h), in every mode.

Usage: feed_forward.py OUT.pt [inference_mode]
Each scenario builds its block afresh (same seeded weights), runs three passes, then a fourth
on which some scenarios use the first linear's result differently from what the first three
taught:
  vit         nn.Sequential(Linear, GELU, Dropout, Linear, Dropout) (torchvision's MLPBlock)
  bert        gelu(fc1(x)) -> fc2, then x + that (BERT's intermediate and output)
  plain       fc1 -> fc2 with nothing between
  tanh        gelu(approximate="tanh") between
  relu        relu(fc1(x)) -> fc2
  relu_       nn.Sequential(Linear, ReLU(inplace=True), Linear)
  read        as bert, with the hidden result also summed by the program after fc2 ran
  second      as bert, with the hidden result read by a third linear too
  changed     as bert, with the hidden result scaled in place before fc2 reads it
  relu_read   as relu, with the hidden result also summed by the program after fc2 ran
  relu_changed as relu, with the hidden result shifted in place before fc2 reads it
Saves {"results": {scenario: [output of pass 4, what the program read]}, "counters":
{scenario: status()["fusion"] after pass 4}} (counters only under the shim).
"""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from e2e_util import shim_status


class Block(nn.Module):
    def __init__(self, twist):
        super().__init__()
        torch.manual_seed(7)
        self.fc1 = nn.Linear(48, 192)
        self.fc2 = nn.Linear(192, 48)
        self.fc3 = nn.Linear(192, 16)
        self.mlp = nn.Sequential(self.fc1, nn.GELU(), nn.Dropout(0.1), self.fc2, nn.Dropout(0.1))
        self.relu_mlp = nn.Sequential(self.fc1, nn.ReLU(inplace=True), self.fc2)
        self.twist = twist
        self.last = False  # pass 4
        self.seen = torch.zeros(())

    def forward(self, x):
        if self.twist == "vit":
            return self.mlp(x)
        if self.twist == "plain":
            return self.fc2(self.fc1(x))
        if self.twist == "tanh":
            return x + self.fc2(F.gelu(self.fc1(x), approximate="tanh"))
        if self.twist == "relu_":
            return self.relu_mlp(x)
        if self.twist.startswith("relu"):
            h = F.relu(self.fc1(x))
        else:
            h = F.gelu(self.fc1(x))
        if self.last and self.twist == "relu_changed":
            h.sub_(0.25)
        if self.last and self.twist == "changed":
            h.mul_(-0.5)
        y = self.fc2(h)
        if self.last and self.twist in ("read", "relu_read"):
            self.seen = h.sum(-1)
        if self.last and self.twist == "second":
            self.seen = self.fc3(h)
        return x + y


SCENARIOS = ["vit", "bert", "plain", "tanh", "relu", "relu_", "read", "second", "changed",
             "relu_read", "relu_changed"]


def main():
    out_path = sys.argv[1]
    grad = torch.inference_mode if len(sys.argv) > 2 and sys.argv[2] == "inference_mode" \
        else torch.no_grad
    torch.manual_seed(0)
    x = torch.randn(4, 10, 48)
    results, counters = {}, {}
    for name in SCENARIOS:
        block = Block(name).eval()
        with grad():
            for _ in range(3):
                block(x)
            block.last = True
            y = block(x)
            results[name] = [y.clone(), block.seen.clone()]
        status = shim_status()
        if status is not None:
            counters[name] = status["fusion"]
    torch.save({"results": results, "counters": counters}, out_path)


if __name__ == "__main__":
    main()
