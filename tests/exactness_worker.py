"""Run by tests/test_portable.py in a separate process, often under forced instruction sets:

    python exactness_worker.py digest OUT.json MODEL.pt IMAGES.npy
        sha256 of the exact arithmetic's functions and of a tiny model's forward and backward
        passes (K-step inference) on the images, with the CPU capability torch runs at
    python exactness_worker.py compress MODEL.pt IMAGES.npy K OUT.json
    python exactness_worker.py decompress MODEL.pt IN.json OUT.npy
        the engine on a tiny model saved by the parent (its weights travel as a file, so both
        processes code with the same numbers whatever their random generators do)
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys

import numpy as np
import torch


def _h(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().to(torch.float64).contiguous().numpy().tobytes()).hexdigest()[:16]


def tiny_model():
    from bbans.models.architecture import build_model, default_architecture

    arch = default_architecture("mnist", width=8, family="hierarchical")
    arch["latent_channels"] = 2
    return build_model(arch)


def digest() -> dict:
    from bbans.coding import arithmetic as ar
    from bbans.coding import distributions as D
    from bbans.coding.inference import posterior

    A = ar.EXACT
    # torch.linspace is not exact (its steps differ between kernels): integers over a power of two are.
    x = torch.arange(-30 * 2048, 30 * 2048 + 1, dtype=torch.float64) / 2048.0
    out = {"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}
    for name in ("exp", "sigmoid", "softplus", "tanh", "elu", "ndtr"):
        out[name] = _h(getattr(A, name)(x))
    out["log"] = _h(A.log(x.abs() + 1e-3))
    out["normal"] = _h(A.normal((4097,), 1, 2, 3, 4, "cpu", torch.float64))
    model = tiny_model()
    model.load_state_dict(torch.load(sys.argv[3], weights_only=True))
    model = model.double().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    images = torch.as_tensor(np.load(sys.argv[4]))
    with ar.using(A):
        out["buckets"] = _h(D.std_normal_bucket_edges(8).clone().nan_to_num_(0.0))
        mu, std = posterior(model, images, K=3, lr=5e-3, seed=1)
        out["posterior"] = _h(torch.cat([mu, std]))
        params = model.decode(mu)
        out["decoder"] = _h(torch.cat([params[k].reshape(-1) for k in sorted(params)]))
        cdf = D.discretized_logistic_mix_cdf(*(params[k].movedim(1, -1).reshape(-1, 3)[:500]
                                               for k in ("logit_w", "mean", "log_scale")))
        out["mixture_cdf"] = _h(cdf)
    return out


def main() -> None:
    cmd = sys.argv[1]
    if cmd == "digest":
        with open(sys.argv[2], "w") as f:
            json.dump(digest(), f)
        return
    from bbans.coding import engine

    model = tiny_model()
    model.load_state_dict(torch.load(sys.argv[2], weights_only=True))
    if cmd == "compress":
        images = np.load(sys.argv[3])
        payload, stats = engine.compress(model, images, config=engine.EngineConfig(K=int(sys.argv[4]), lanes=8))
        with open(sys.argv[5], "w") as f:
            json.dump({"payload": base64.b64encode(payload).decode(), "config": stats["config"].to_dict(),
                       "n": len(images), "shape": list(images.shape[1:]), "phantom_peak": stats["phantom_peak"],
                       "capability": torch.backends.cpu.get_cpu_capability()}, f)
    elif cmd == "decompress":
        with open(sys.argv[3]) as f:
            d = json.load(f)
        out = engine.decompress(model, base64.b64decode(d["payload"]), d["n"], tuple(d["shape"]),
                                config=engine.EngineConfig.from_dict(d["config"]), phantom_peak=d["phantom_peak"])
        np.save(sys.argv[4], out)
        print(torch.backends.cpu.get_cpu_capability())
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
