"""Distributed training and testing on CPU: ``tools/dist_train.sh`` / ``dist_test.sh`` with gloo.

Two processes on localhost (torchrun, a free port, CUDA hidden so that the CPU path runs on any
machine) train the tiny joint 2D-3D config (``configs/odin/odin_tiny_joint_test.py``) for a few
iterations: both ranks must end with identical weights, have trained on different samples at
every iteration, and the loss of each task must fall. Then ``tools/dist_test.sh`` with 2
processes must give exactly the metrics (and the per-point prediction files) of a single-process
``tools/test.py`` run; the val set has an odd number of samples, so the padding of the last
distributed batch is exercised too. A test-only hook (``odin_dist_probe.py``, next to this file)
records what every rank trained on and its final weights.
"""
import glob
import json
import os
import os.path as osp
import signal
import socket
import subprocess
import sys

import pytest
import torch

from odin_testing import REPO_ROOT, make_tiny_coco

CFG = osp.join(REPO_ROOT, 'configs/odin/odin_tiny_joint_test.py')
MAX_ITERS = 12
TIMEOUT_S = 480  # per command; ~1-2 min on 2 shared cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _env() -> dict:
    """CPU-only, one thread per process, localhost only, this interpreter."""
    env = dict(os.environ)
    env.update(PYTHON=sys.executable, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1',
               CUDA_VISIBLE_DEVICES='', MASTER_ADDR='127.0.0.1', PORT=str(_free_port()),
               PYTHONPATH=os.pathsep.join(
                   p for p in (REPO_ROOT, osp.dirname(__file__), env.get('PYTHONPATH')) if p))
    if osp.exists('/sys/class/net/lo'):
        env['GLOO_SOCKET_IFNAME'] = 'lo'
    return env


def _run(cmd, log_path: str) -> None:
    """Run a command in its own process group with a bounded time; fail with its output."""
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=_env(), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers
            proc.wait()
            rc = 'timeout'
    if rc != 0:
        with open(log_path) as f:
            pytest.fail(f'{" ".join(cmd)} -> {rc}:\n{f.read()[-4000:]}')


def _data_options(world: dict, loaders=('train', 'val', 'test')) -> list:
    opts = []
    for split in loaders:
        wrap = '.dataset' if split == 'train' else ''  # train sets are RepeatDatasets
        base = f'{split}_dataloader.dataset.datasets'
        opts += [f'{base}.0{wrap}.data_root={world["root_3d"]}',
                 f'{base}.1{wrap}.data_root={world["root_2d"]}']
        if split != 'train':
            opts.append(f'{split}_evaluator.task_metrics.2d.ann_file={world["val_json"]}')
    return opts


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    from projects.odin.datasets.metainfo import SCANNET_METAINFO
    from projects.odin.datasets.synthetic_world import prepare_synthetic_dataset
    root = tmp_path_factory.mktemp('cpu_dist')
    data = prepare_synthetic_dataset(root / 'world', num_scenes=6, num_val=2, seed=0,
                                     preset='tiny')
    classes = SCANNET_METAINFO['classes']
    coco = make_tiny_coco(str(root / 'coco'), num_images=4, split='train', seed=0,
                          classes=classes, object_classes=(2, 4))
    val = make_tiny_coco(str(root / 'coco'), num_images=3, split='val', seed=1,
                         classes=classes, object_classes=(2, 4))
    return dict(root=root, root_3d=data['data_root'] + '/', root_2d=coco['data_root'],
                val_json=val['ann_path'], summary=data['summary'])


@pytest.fixture(scope='module')
def trained(world):
    """Train 2 processes with tools/dist_train.sh; return the work dir and both ranks' probes."""
    root = world['root']
    work_dir = str(root / 'work')
    os.makedirs(work_dir)
    cfg = root / 'tiny_joint_probe.py'
    cfg.write_text(
        f'_base_ = [{CFG!r}]\n'
        "custom_imports = dict(imports=['projects.odin', 'odin_dist_probe'],\n"
        '                      allow_failed_imports=False)\n'
        "custom_hooks = [dict(type='RNGStateHook'), dict(type='ODINTaskLossHook'),\n"
        f"                dict(type='ODINDistProbeHook', out_dir={work_dir!r})]\n"
        '# as the real joint recipe: 2D batches leave the 3D layers unused\n'
        "model_wrapper_cfg = dict(type='MMDistributedDataParallel', "
        'find_unused_parameters=True)\n')
    _run(['bash', 'tools/dist_train.sh', str(cfg), '2', '--work-dir', work_dir,
          '--cfg-options', f'train_cfg.max_iters={MAX_ITERS}',
          # every sample once per epoch, so that sample identities tell the ranks apart
          'train_dataloader.dataset.datasets.0.times=1',
          'train_dataloader.dataset.datasets.1.times=1'] + _data_options(world),
         str(root / 'train.log'))
    ranks = [torch.load(osp.join(work_dir, f'rank{r}.pt'), weights_only=False) for r in (0, 1)]
    return dict(work_dir=work_dir, ranks=ranks, log=str(root / 'train.log'))


def test_two_cpu_processes_train_in_sync_on_different_samples(trained, world):
    r0, r1 = trained['ranks']
    for r, probe in enumerate((r0, r1)):
        assert probe['rank'] == r and probe['world_size'] == 2
        assert probe['backend'] == 'gloo' and probe['wrapper'] == 'MMDistributedDataParallel'
        assert [rec['iter'] for rec in probe['records']] == list(range(MAX_ITERS))
    # identical weights (and buffers) on both ranks after the last step
    sd0, sd1 = r0['state_dict'], r1['state_dict']
    assert sd0.keys() == sd1.keys()
    different = [k for k in sd0 if not torch.equal(sd0[k], sd1[k])]
    assert not different, different[:5]
    # rank 0 also wrote the checkpoint: the same weights
    ckpt = torch.load(osp.join(trained['work_dir'], f'iter_{MAX_ITERS}.pth'),
                      map_location='cpu', weights_only=False)
    assert all(torch.equal(ckpt['state_dict'][k], sd0[k]) for k in sd0)
    # same task on both ranks at every iteration, never the same sample
    train_scenes = set(world['summary']['converted']) - set(_val_scenes(world))
    seen = set()
    for a, b in zip(r0['records'], r1['records']):
        assert a['task'] == b['task'] and a['task'] in ('2d', '3d')
        assert not set(a['ids']) & set(b['ids']), (a, b)
        if a['task'] == '3d':
            seen |= set(a['ids']) | set(b['ids'])
    assert seen == train_scenes, (seen, train_scenes)
    # the loss (mean of the two ranks' own losses) fell for each task
    for task in ('2d', '3d'):
        losses = [(a['loss'] + b['loss']) / 2 for a, b in zip(r0['records'], r1['records'])
                  if a['task'] == task]
        assert len(losses) >= 3, (task, losses)
        first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
        print(task, [round(x, 1) for x in losses])
        assert last < 0.9 * first, (task, losses)
    with open(trained['log']) as f:
        assert 'distributed run on CPU with the gloo backend' in f.read()


def _val_scenes(world) -> list:
    import pickle
    with open(osp.join(world['root_3d'], 'synthetic_infos_val.pkl'), 'rb') as f:
        return [info['scene_id'] if 'scene_id' in info else info['sample_idx']
                for info in pickle.load(f)['data_list']]


def _metrics(work_dir: str) -> dict:
    files = glob.glob(osp.join(work_dir, '*', '*.json'))
    assert len(files) == 1, files
    with open(files[0]) as f:
        metrics = json.load(f)
    return {k: v for k, v in metrics.items() if k not in ('time', 'data_time')}


def _files(folder: str) -> dict:
    out = {}
    for path in sorted(glob.glob(osp.join(folder, '**', '*'), recursive=True)):
        if osp.isfile(path):
            with open(path, 'rb') as f:
                out[osp.relpath(path, folder)] = f.read()
    return out


def test_two_cpu_processes_test_exactly_like_one(trained, world):
    root = world['root']
    ckpt = osp.join(trained['work_dir'], f'iter_{MAX_ITERS}.pth')
    results = {}
    for procs in (1, 2):
        work_dir, sub = str(root / f'test_{procs}'), str(root / f'submission_{procs}')
        opts = ['--work-dir', work_dir, '--cfg-options',
                f'test_evaluator.task_metrics.3d.submission_prefix={sub}'] + \
            _data_options(world, ('test',))
        if procs == 1:
            cmd = [sys.executable, 'tools/test.py', CFG, ckpt] + opts
        else:
            cmd = ['bash', 'tools/dist_test.sh', CFG, ckpt, '2'] + opts
        _run(cmd, str(root / f'test_{procs}.log'))
        results[procs] = (_metrics(work_dir), _files(sub))
    (m1, f1), (m2, f2) = results[1], results[2]
    assert m1 == m2, (m1, m2)
    assert {'scannet/AP', 'scannet/mIoU', 'coco/segm_mAP'} <= set(m1)
    assert m1['scannet/mIoU'] > 0 and m1['scannet/allAcc'] > 0  # not a comparison of zeros
    # per-point predictions of both val rooms, byte for byte
    val = _val_scenes(world)
    assert len(val) == 2 and all(f'semantic/{s}.txt' in f1 for s in val), sorted(f1)
    differing = sorted(k for k in set(f1) | set(f2) if f1.get(k) != f2.get(k))
    assert not differing, differing
