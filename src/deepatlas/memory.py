"""Memory checked before it is allocated: a request larger than the machine is one line with the estimate,
not a MemoryError (or a swapping machine) halfway through.

`require(nbytes, what)` compares an estimate with the memory available now (RAM, or the accelerator's);
`model_bytes` estimates a network's weights and one training batch's activations by building it and running
it on PyTorch's meta device, which allocates nothing.
"""
from __future__ import annotations

import os

from deepatlas.errors import DeepAtlasError

TRAINING_COPIES = 4
"""bytes of training state per weight byte: the weights, their gradients and AdamW's two moments"""


def available(accelerator: str = "cpu") -> int:
    """Bytes that can be allocated now: the accelerator's free memory, or the RAM the system reports available."""
    if accelerator in ("gpu", "cuda", "auto"):
        import sys
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            return torch.cuda.mem_get_info()[0]
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def shown(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.1f} {unit}" if unit != "bytes" else f"{int(nbytes)} bytes"
        nbytes /= 1024
    return ""


def require(nbytes: float, what: str, accelerator: str = "cpu") -> None:
    """Refuse, with the estimate, a request for more memory than is available."""
    free = available(accelerator)
    if nbytes > free:
        raise DeepAtlasError(f"{what} needs about {shown(nbytes)}, more than the {shown(free)} available")


def model_bytes(build, config, example=None, batch_size: int = 1) -> tuple[int, int]:
    """(weight bytes, activation bytes of one batch) of `build(config)`, measured on the meta device; the
    activations are the sum of every module's outputs for a batch of `batch_size` inputs shaped like `example`
    (0 when the network cannot run on meta tensors, or no example is given)."""
    import torch
    with torch.device("meta"):
        try:
            network = build(config)
        except Exception:  # a builder that needs real data (rare): no estimate, the allocation will tell
            return 0, 0
    weights = sum(t.numel() * t.element_size() for t in (*network.parameters(), *network.buffers()))
    if not isinstance(example, torch.Tensor):
        return weights, 0
    total = [0]

    def count(module, inputs, output):
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, torch.Tensor):
                total[0] += t.numel() * t.element_size()

    hooks = [m.register_forward_hook(count) for m in network.modules()]
    try:
        with torch.no_grad():
            network(torch.empty((batch_size, *example.shape), dtype=example.dtype, device="meta"))
    except Exception:  # data-dependent code cannot run on meta tensors: weights only
        total[0] = 0
    finally:
        for h in hooks:
            h.remove()
    return weights, total[0]


def check_model(build, config, what: str, example=None, batch_size: int = 1, training: bool = True,
                accelerator: str = "cpu") -> None:
    """Refuse a network (with one batch) that cannot fit: `what` names it in the message."""
    weights, activations = model_bytes(build, config, example, batch_size)
    copies = TRAINING_COPIES if training else 1
    require(weights * copies + activations * (2 if training else 1), what, accelerator)
