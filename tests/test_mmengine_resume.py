"""Resuming an MMEngine run saved by torch >= 2.6 with weights-only loading kept on."""

from __future__ import annotations

import pickle

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn

from nattk.openmmlab.compat import checkpoint_allowlist


class _TinyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, x, mode="loss"):
        return {"loss": self.linear(x).pow(2).mean()}


class _Data(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, index):
        return dict(x=torch.full((2,), float(index)))


def _runner(work_dir, max_iters, resume=False):
    return Runner(
        model=_TinyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=_Data(),
            sampler=dict(type="DefaultSampler", shuffle=True),
            batch_size=2,
            collate_fn=dict(type="default_collate"),
        ),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.01, momentum=0.9)),
        param_scheduler=dict(type="MultiStepLR", milestones=[3], by_epoch=False),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=2, by_epoch=False)),
        resume=resume,
        randomness=dict(seed=0),
    )


@pytest.fixture(autouse=True)
def _weights_only_stays_on(monkeypatch):
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)


def test_resume_needs_the_allowlist_and_works_with_it(tmp_path):
    _runner(tmp_path, max_iters=4).train()
    assert (tmp_path / "iter_4.pth").is_file()

    # Plain MMEngine on torch >= 2.6 cannot resume its own checkpoint ...
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        _runner(tmp_path, max_iters=6, resume=True).train()

    # ... with the allow-list it continues at iteration 4 with its optimizer state.
    runner = _runner(tmp_path, max_iters=6, resume=True)
    with checkpoint_allowlist():
        runner.train()
    assert runner.iter == 6
    saved = torch.load(tmp_path / "iter_6.pth", weights_only=False)
    assert saved["meta"]["iter"] == 6
    assert saved["optimizer"]["state"], "optimizer momentum was not restored/saved"
    assert saved["param_schedulers"][0]["_global_step"] == 6
    # Outside the block weights-only loading is as strict as before.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "iter_6.pth")
