"""Wrap an existing restoration network with a PTG-RM refiner in three lines.

Run: python examples/wrap_in_three_lines.py

Works offline: the refiner uses the built-in ``stats`` prior. With ``pip install "ptg_refine[clip]"``
and network access, use ``PTGRefiner(encoder="open_clip:ViT-B-32@openai")`` instead (the paper's prior),
or ``PTGRefiner.from_pretrained("org/repo")`` for a trained refiner.
"""

import torch
from torch import nn

from ptg_refine import PTGRefiner, refine

# Your network: anything mapping degraded (B, C, H, W) in [0, 1] to a restored image of the same size.
my_net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 3, 3, padding=1))

# --- the three lines ---
refiner = PTGRefiner(encoder="stats")
model = refine(my_net, refiner)
restored = model(torch.rand(1, 3, 123, 77))  # any size
# -----------------------

print("output", tuple(restored.shape), "| refiner parameters:", f"{refiner.num_parameters:,}")
x = torch.rand(2, 3, 64, 64)
print("untrained refiner is the identity on the base output:", torch.equal(model(x), my_net(x)))
