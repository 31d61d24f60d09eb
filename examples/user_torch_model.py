"""A user PyTorch model for ``model.kind: python`` (see user-torch-model.yaml).

mlaas4hep calls ``build_model(n_inputs, n_outputs)``. The returned module receives
*normalised* features (the normalisation is put in front of it) and returns logits: one
for a binary task. The sigmoid, the loss, the optimiser and the ONNX export are mlaas4hep's.
"""

import torch


class ResidualBlock(torch.nn.Module):
    """Two linear layers with a skip connection."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Linear(width, width), torch.nn.SiLU(), torch.nn.Linear(width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.silu(x + self.body(x))


def build_model(n_inputs: int, n_outputs: int) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(n_inputs, 64),
        torch.nn.SiLU(),
        ResidualBlock(64),
        torch.nn.Linear(64, n_outputs),
    )
