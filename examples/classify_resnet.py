"""An unmodified inference script: torchvision resnet50 in eval mode.

    python3 examples/classify_resnet.py                       # stock PyTorch
    build/ipex-run --mode bf16 --verbose 1 -- python3 examples/classify_resnet.py

Under the shim the same script runs its convolutions and linear layer on oneDNN in BF16;
with --verbose 1 the shim prints what ran where when the script exits.
"""
import json
import time

import torch
import torchvision

torch.manual_seed(0)
model = torchvision.models.resnet50(weights=None).eval()
images = torch.rand(8, 3, 224, 224)

with torch.no_grad():
    model(images)  # warm-up: the shim packs the weights here
    start = time.perf_counter()
    logits = model(images)
    elapsed = time.perf_counter() - start

print(f"batch of {images.shape[0]}: {elapsed * 1000:.1f} ms, output {tuple(logits.shape)} "
      f"{logits.dtype}, top-1 classes {logits.argmax(1).tolist()}")
if hasattr(torch.ops.ipex_shim, "status"):
    status = json.loads(torch.ops.ipex_shim.status())
    if status.get("refused"):
        print(f"ipex-shim: stays off in this process: {status['refused']}")
    else:
        print(f"ipex-shim: mode {status['mode']}, active {status['active']}, "
              f"conv2d {status['ops']['conv2d']}")
else:
    print("ipex-shim: not loaded (run under build/ipex-run --mode bf16)")
