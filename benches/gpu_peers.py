"""fastmlp's cuda backend against PyTorch CUDA (eager), on one GPU, in one run.

* **epochs**: the keras recipe (784-512 relu-10 softmax, RMSprop lr 1e-3, batch
  128, float32) on 60,000 images. Both keep the data on the GPU and shuffle there;
  after a warm-up epoch each, epochs alternate between the two; medians. Then the
  test accuracy of each after all its epochs.
* **throughput at batch 8192**: samples per second of one forward + backward pass
  (no update), the two alternating in blocks of ``--repeats`` passes timed with
  CUDA events; medians.
* **launch cost**: host microseconds per launch of an almost empty Numba kernel.

    python benches/gpu_peers.py --data ../shared/data/fashion-mnist --json out.json

Needs a GPU, numba-cuda and PyTorch with CUDA.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

import fastmlp
from fastmlp import recipes
from fastmlp.backends import get_backend
from fastmlp.tools import profile


def torch_model(model, torch):
    """A PyTorch copy of a keras-recipe fastmlp model, on the GPU, with its weights."""
    W1, b1, W2, b2 = model.get_weights()
    net = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(),
                              torch.nn.Linear(512, 10)).cuda()
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(W1.T.copy()))
        net[0].bias.copy_(torch.from_numpy(b1))
        net[2].weight.copy_(torch.from_numpy(W2.T.copy()))
        net[2].bias.copy_(torch.from_numpy(b2))
    return net


def torch_epoch(net, opt, X, Y, batch, torch):
    loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")
    n = X.shape[0]
    torch.cuda.synchronize()
    t = time.perf_counter()
    perm = torch.randperm(n, device="cuda")
    total = torch.zeros((), device="cuda")
    for s in range(0, n, batch):
        idx = perm[s:s + batch]
        opt.zero_grad(set_to_none=True)
        out = net(X[idx])
        loss = loss_fn(out, Y[idx])
        (loss / idx.numel()).backward()
        opt.step()
        total += loss.detach()
    torch.cuda.synchronize()
    return time.perf_counter() - t, float(total) / n


def torch_accuracy(net, X, Y, torch):
    with torch.no_grad():
        return float((net(X).argmax(1) == Y).float().mean())


def epochs(data, rounds, out):
    import torch

    recipe = recipes.get("keras")
    (x, y), (xt, yt) = fastmlp.datasets.load("fashion-mnist", data)
    x, xt = recipe.inputs(x, "float32"), recipe.inputs(xt, "float32")
    t, tt = recipe.targets(y, "float32"), recipe.targets(yt, "float32")
    model = recipe.build(backend="cuda", seed=0)
    net = torch_model(model, torch)
    opt = torch.optim.RMSprop(net.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
    X, Y = torch.from_numpy(x).cuda(), torch.from_numpy(y.astype(np.int64)).cuda()
    fm_opt = recipe.make_optimizer()
    times = {"fastmlp": [], "torch": []}
    for r in range(rounds + 1):  # round 0 is the warm-up
        h = model.fit(x, t, epochs=1, batch_size=128, optimizer=fm_opt, verbose=0)
        sec, _ = torch_epoch(net, opt, X, Y, 128, torch)
        if r:
            times["fastmlp"].append(h.epoch_seconds[0])
            times["torch"].append(sec)
        print(f"  round {r}: fastmlp {h.epoch_seconds[0]:.4f} s, torch {sec:.4f} s",
              file=out, flush=True)
    acc = {"fastmlp": model.evaluate(xt, tt)["accuracy"],
           "torch": torch_accuracy(net, torch.from_numpy(xt).cuda(),
                                   torch.from_numpy(yt.astype(np.int64)).cuda(), torch)}
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"epoch_s": times, "median_s": med, "ratio": med["fastmlp"] / med["torch"],
            "test_accuracy": acc, "epochs_trained": rounds + 1}


def throughput(batch, blocks, repeats, out):
    import torch
    from numba import cuda

    be = get_backend("cuda")
    ops = profile.step_kernels(be, (784, 512, 10), batch)[:-1]  # all but the update
    net = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(),
                              torch.nn.Linear(512, 10)).cuda()
    X = torch.rand(batch, 784, device="cuda")
    Y = torch.randint(0, 10, (batch,), device="cuda")
    loss_fn = torch.nn.CrossEntropyLoss()

    def fm():
        for _, call, *_ in ops:
            call()

    def pt():
        net.zero_grad(set_to_none=True)
        loss_fn(net(X), Y).backward()

    def timed(event, f):
        e0, e1 = event(), event()
        cuda.synchronize()
        e0.record()
        for _ in range(repeats):
            f()
        e1.record()
        e1.synchronize()
        return e0.elapsed_time(e1) / 1e3 / repeats

    def torch_event():
        return torch.cuda.Event(enable_timing=True)

    fm(), pt()
    t = {"fastmlp": [], "torch": []}
    for _ in range(blocks):
        t["fastmlp"].append(timed(cuda.event, fm))
        t["torch"].append(timed(torch_event, pt))
    med = {k: statistics.median(v) for k, v in t.items()}
    sps = {k: batch / v for k, v in med.items()}
    print(f"  batch {batch}: fastmlp {med['fastmlp'] * 1e3:.3f} ms, torch "
          f"{med['torch'] * 1e3:.3f} ms per forward+backward", file=out, flush=True)
    return {"batch": batch, "seconds": t, "median_s": med, "samples_per_s": sps,
            "fastmlp_over_torch_throughput": sps["fastmlp"] / sps["torch"],
            "tf32": bool(torch.backends.cuda.matmul.allow_tf32)}


def launch_cost(n=2000):
    from numba import cuda

    from fastmlp.backends.cuda import ops

    get_backend("cuda")  # a clear error without a GPU
    a = cuda.device_array(1, dtype=np.float32)
    ops.fill(a, 0.0)
    cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        ops.fill(a, 0.0)
    host = (time.perf_counter() - t) / n
    cuda.synchronize()
    return {"host_us_per_launch": host * 1e6}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the Fashion-MNIST folder")
    p.add_argument("--rounds", type=int, default=5, help="timed epochs of each")
    p.add_argument("--blocks", type=int, default=7)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--json")
    args = p.parse_args(argv)
    import torch

    out = sys.stdout
    be = get_backend("cuda")
    result = {"device": be.device_info(), "torch": torch.__version__,
              "torch_cuda": torch.version.cuda, "fastmlp": fastmlp.__version__,
              "launches_per_step": be.launches_per_step(2)}
    print(json.dumps(result, indent=2), file=out)
    result["launch"] = launch_cost()
    print(f"numba launch: {result['launch']['host_us_per_launch']:.1f} us on the host", file=out)
    print("epochs (keras recipe, batch 128):", file=out, flush=True)
    result["epochs"] = epochs(args.data, args.rounds, out)
    e = result["epochs"]
    print(f"  median epoch: fastmlp {e['median_s']['fastmlp']:.4f} s, torch "
          f"{e['median_s']['torch']:.4f} s, ratio {e['ratio']:.3f}; test accuracy "
          f"fastmlp {e['test_accuracy']['fastmlp']:.4f}, torch "
          f"{e['test_accuracy']['torch']:.4f}", file=out)
    print("forward+backward throughput:", file=out, flush=True)
    result["throughput"] = [throughput(b, args.blocks, args.repeats, out) for b in (128, 8192)]
    for r in result["throughput"]:
        print(f"  batch {r['batch']}: fastmlp/torch throughput "
              f"{r['fastmlp_over_torch_throughput']:.3f}", file=out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
