"""fit() under torchrun: 2 CPU processes (gloo), one writer, identical weights on every rank."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist

from ptg_refine import PTGRefiner

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed (gloo)"
)

_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch
    from torch import nn
    torch.set_num_threads(1)
    from safetensors.torch import save_file
    from ptg_refine import PTGRefiner, refine
    from ptg_refine.train import checkpoint as ckpt_module
    from ptg_refine.train import fit

    out = sys.argv[1]
    rank = int(os.environ["RANK"])
    real_save = ckpt_module.save_checkpoint

    def counting_save(path, state):
        with open(os.path.join(out, f"writer-rank{rank}.txt"), "a") as f:
            f.write(f"{state['step']}\\n")
        return real_save(path, state)

    ckpt_module.save_checkpoint = counting_save

    g = torch.Generator().manual_seed(7)
    gt = torch.rand(8, 3, 16, 16, generator=g)
    lq = (gt + 0.1 * torch.randn(gt.shape, generator=g)).clamp(0, 1)
    seen = []

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return len(gt)

        def __getitem__(self, i):
            seen.append(i)
            return {"lq": lq[i], "gt": gt[i], "name": str(i)}

    torch.manual_seed(rank)  # different initial weights per rank: DDP must broadcast rank 0's
    base = nn.Conv2d(3, 3, 3, padding=1)
    refiner = PTGRefiner(encoder="stats", embed_dim=None, width=8, num_blocks=1, prior_hidden=16)
    model = refine(base, refiner, freeze_base=False)
    result = fit(model, Data(), steps=6, batch_size=2, lr=1e-3, checkpoint_every=3, log_every=1,
                 out_dir=out, progress=False)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(out, f"weights-rank{rank}.safetensors"))
    with open(os.path.join(out, f"seen-rank{rank}.txt"), "w") as f:
        f.write(" ".join(map(str, seen)) + f"\\n{result.steps} {result.completed}\\n")
    """
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_training(tmp_path):
    from safetensors.torch import load_file

    script = tmp_path / "train_ddp.py"
    script.write_text(_SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(script),
        str(out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # only rank 0 wrote checkpoints (at steps 3 and 6) and the log (one line per step)
    assert (out / "writer-rank0.txt").read_text().split() == ["3", "6"]
    assert not (out / "writer-rank1.txt").exists()
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").open()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["settings"]["world_size"] == 2

    # both ranks ended with identical weights (refiner and jointly trained base)
    w0 = load_file(out / "weights-rank0.safetensors")
    w1 = load_file(out / "weights-rank1.safetensors")
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    base = load_file(out / "base.safetensors")
    assert all(torch.equal(base[k], w0[f"base.{k}"]) for k in base)

    # the saved refiner loads and equals the trained one
    refiner = PTGRefiner.from_pretrained(out / "refiner")
    for k, v in refiner.state_dict().items():
        assert torch.equal(v, w0[f"refiner.{k}"])

    # each rank read its own half of every epoch's permutation
    seen = [(out / f"seen-rank{r}.txt").read_text().split("\n") for r in (0, 1)]
    items = [list(map(int, s[0].split())) for s in seen]
    assert all(s[1] == "6 True" for s in seen)
    assert len(items[0]) == len(items[1]) == 12
    for epoch in range(3):  # 8 items, 2 ranks x batch 2: 2 steps per epoch
        a = items[0][4 * epoch : 4 * epoch + 4]
        b = items[1][4 * epoch : 4 * epoch + 4]
        assert sorted(a + b) == list(range(8))
