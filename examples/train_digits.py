"""An unmodified training script: a small CNN on scikit-learn's handwritten digits.

    python3 examples/train_digits.py
    build/ipex-run --mode bf16 -- python3 examples/train_digits.py

Under the shim in bf16 mode the convolutions and linear layers compute in BF16 (forward and
backward); parameters, gradients and every tensor the script sees stay fp32.
"""
import torch
import torch.nn as nn
from sklearn.datasets import load_digits

torch.manual_seed(0)
digits = load_digits()
images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
labels = torch.tensor(digits.target)
order = torch.randperm(len(labels))
train, test = order[:1400], order[1400:]

model = nn.Sequential(
    nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
    nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))
optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)

for epoch in range(5):
    model.train()
    for start in range(0, len(train), 64):
        batch = train[start:start + 64]
        loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(images[test]).argmax(1) == labels[test]).float().mean().item()
    print(f"epoch {epoch}: loss {loss.item():.4f}, test accuracy {accuracy * 100:.1f}%")
