"""A torch-free Python program: prints deterministic output, then a report of which shim /
torch libraries are mapped into this process."""
import hashlib
import json
import threading

from e2e_util import interesting, mapped_paths, report


def main():
    print("hello from a torch-free program")
    print(hashlib.sha256(b"ipex-shim").hexdigest())
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(i * i)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(sorted(results)))
    report({"mapped": interesting(mapped_paths())})


if __name__ == "__main__":
    main()
