"""A small deterministic torch program.

Prints (stdout, flushed line by line) a marker before and after `import torch`, the exact
values of a few results, then a report line: the shim's status mode (None when the status
op does not exist) and whether libipex_shim_core.so is mapped. Writes nothing to stderr."""
import sys

print("before import torch", flush=True)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from e2e_util import mapped_paths, report, shim_status  # noqa: E402

print("after import torch", flush=True)


def main():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    w = torch.randn(4, 3, 3, 3)
    y = F.relu(F.conv2d(x, w, padding=1))
    z = F.relu(F.linear(y.flatten(1), torch.randn(5, 4 * 16 * 16)))
    print("conv-relu sum", y.sum().item().hex(), flush=True)
    print("linear-relu", [v.hex() for v in z.flatten().tolist()], flush=True)
    status = shim_status()
    report({
        "mode": None if status is None else status["mode"],
        "verbose": None if status is None else status["verbose"],
        "fusion": None if status is None else status["fusion"]["enabled"],
        "strict": None if status is None else status["strict"],
        "core_mapped": any("libipex_shim_core" in p for p in mapped_paths()),
    })
    print("end of program", flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
