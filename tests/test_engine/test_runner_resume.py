"""A real MMEngine Runner trains, saves, resumes and loads under torch 2.13."""
import copy

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset

import projects.odin  # noqa: F401  (registers TrustedCheckpointHook and RNGStateHook)


class ToyDataset(Dataset):
    """16 fixed samples of a noisy linear regression."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(16, 8, generator=g)
        self.y = self.x @ torch.randn(8, 1, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return dict(inputs=self.x[i], targets=self.y[i])


class ToyModel(BaseModel):
    """Linear model with dropout and a random subset in the loss, i.e. it consumes global RNG."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))

    def forward(self, inputs, targets=None, mode='tensor'):
        pred = self.net(inputs)
        if mode == 'loss':
            keep = torch.randperm(len(pred))[: max(1, len(pred) - 1)]
            return dict(loss=((pred[keep] - targets[keep]) ** 2).mean())
        return pred


def make_runner(work_dir, max_iters, load_from=None, resume=False):
    torch.manual_seed(0)  # identical initial weights for every runner
    return Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=ToyDataset(),
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate'),
            batch_size=4,
            num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=3),
            logger=dict(type='LoggerHook', interval=100),
            trusted_checkpoint=dict(type='TrustedCheckpointHook')),  # as default_runtime.py
        custom_hooks=[dict(type='RNGStateHook')],
        randomness=dict(seed=7),
        default_scope='mmdet3d',
        load_from=load_from,
        resume=resume,
        log_level='WARNING',
        experiment_name=f'toy_{work_dir.name}_{max_iters}_{resume}')


def optimizer_state(runner):
    return copy.deepcopy(runner.optim_wrapper.optimizer.state_dict()['state'])


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('straight')
    runner = make_runner(work_dir, max_iters=6)
    runner.train()
    return work_dir, runner


def test_checkpoint_contains_rng_state(straight):
    work_dir, _ = straight
    ckpt = torch.load(work_dir / 'iter_3.pth', weights_only=False)
    assert ckpt['meta']['iter'] == 3
    assert set(ckpt['rng_state']) >= {'python', 'numpy', 'torch'}


def test_resume_continues_identically(straight, tmp_path):
    work_dir, runner_a = straight
    # Interrupted run: 3 iterations, then a fresh process-like runner resumes to 6.
    first = make_runner(tmp_path, max_iters=3)
    first.train()
    second = make_runner(tmp_path, max_iters=6, load_from=str(tmp_path / 'iter_3.pth'),
                         resume=True)
    # Different global RNG state at start-up than the uninterrupted run had at iteration 3.
    torch.manual_seed(1234)
    second.train()
    assert second.iter == runner_a.iter == 6
    for (name, pa), (_, pb) in zip(runner_a.model.state_dict().items(),
                                   second.model.state_dict().items()):
        assert torch.equal(pa, pb), name
    state_a, state_b = optimizer_state(runner_a), optimizer_state(second)
    assert state_a.keys() == state_b.keys()
    for k in state_a:
        for field in ('exp_avg', 'exp_avg_sq', 'step'):
            assert torch.equal(torch.as_tensor(state_a[k][field]),
                               torch.as_tensor(state_b[k][field])), (k, field)
    ckpt_a = torch.load(work_dir / 'iter_6.pth', weights_only=False)
    ckpt_b = torch.load(tmp_path / 'iter_6.pth', weights_only=False)
    assert torch.equal(ckpt_a['rng_state']['torch'], ckpt_b['rng_state']['torch'])


def test_resume_without_rng_hook_diverges(straight, tmp_path):
    """Control: the equality above is due to the hook, not to luck."""
    work_dir, runner_a = straight
    first = make_runner(tmp_path, max_iters=3)
    first.train()
    second = make_runner(tmp_path, max_iters=6, load_from=str(tmp_path / 'iter_3.pth'),
                         resume=True)
    second._hooks = [h for h in second._hooks if type(h).__name__ != 'RNGStateHook']
    torch.manual_seed(1234)
    second.train()
    same = all(torch.equal(pa, pb) for pa, pb in zip(runner_a.model.state_dict().values(),
                                                     second.model.state_dict().values()))
    assert not same


def test_load_from_initialises_weights_only(straight, tmp_path):
    work_dir, _ = straight
    ckpt = torch.load(work_dir / 'iter_3.pth', weights_only=False)
    runner = make_runner(tmp_path, max_iters=1, load_from=str(work_dir / 'iter_3.pth'))
    runner.call_hook('before_run')  # as Runner.train does (TrustedCheckpointHook opens its scope)
    runner.load_or_resume()
    for name, value in runner.model.state_dict().items():
        assert torch.equal(value, ckpt['state_dict'][name]), name
    assert runner.iter == 0


def test_trusted_loader_is_scoped_to_loading(straight, tmp_path):
    """TrustedCheckpointHook opens the trusted loader for the Runner's loading only."""
    from mmengine.runner.checkpoint import CheckpointLoader
    work_dir, _ = straight
    own = CheckpointLoader._schemes['']
    runner = make_runner(tmp_path, max_iters=1, load_from=str(work_dir / 'iter_3.pth'))
    seen = []
    orig = runner.load_checkpoint

    def spy(*args, **kwargs):
        seen.append(CheckpointLoader._schemes[''])
        return orig(*args, **kwargs)

    runner.load_checkpoint = spy
    runner.train()
    assert len(seen) == 1 and seen[0] is not own
    assert CheckpointLoader._schemes[''] is own
    with pytest.raises(Exception, match='[Ww]eights only load failed'):
        make_runner(tmp_path / 'plain', max_iters=1).load_checkpoint(str(work_dir / 'iter_3.pth'))
