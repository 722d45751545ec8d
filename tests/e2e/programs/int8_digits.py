"""INT8 inference of the small digits CNN that programs/float_digits.py trains.

usage: int8_digits.py calibrate|test STATE OUT
  Loads the state_dict STATE (float_digits.py's WORKDIR/stock.final.pt) into DigitsNet, then
  `calibrate` evaluates the 1437 training images and `test` the 360 held-out test images
  (float_digits.py's fixed split), in batches of 128 under torch.no_grad(); saves the logits
  to OUT. The same program runs stock, under IPEX_MODE=calibration (on the training images)
  and under IPEX_MODE=int8 (on the test images).
The report line gives the accuracy and the shim's status (null without the shim).
"""
import sys

import torch

from float_common import report, reset_stats, shim_status
from float_digits import DigitsNet, accuracy, evaluate, load_data


def main():
    phase, state, out = sys.argv[1], sys.argv[2], sys.argv[3]
    if phase not in ("calibrate", "test"):
        sys.exit(f"unknown phase {phase!r}: expected calibrate or test")
    xtr, ytr, xte, yte = load_data()
    x, y = (xtr, ytr) if phase == "calibrate" else (xte, yte)
    model = DigitsNet()
    model.load_state_dict(torch.load(state))
    reset_stats()
    logits = evaluate(model, x)
    torch.save(logits, out)
    report({"phase": phase, "acc": accuracy(logits, y), "status": shim_status()})


if __name__ == "__main__":
    main()
