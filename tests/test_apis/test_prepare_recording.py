import numpy as np
from rgbd_makers import K, make_scannet

from projects.odin.apis.inference import prepare_recording, unproject_frame
from projects.odin.datasets.recordings import load_rgbd_folder


def test_unproject_frame_matches_pinhole():
    depth = np.full((4, 5), 2.0)
    pose = np.eye(4)
    pose[:3, 3] = [1, 2, 3]
    xyz = unproject_frame(depth, K, pose)
    # pixel (row 1, col 3): X = (3 - cx) * z / fx
    np.testing.assert_allclose(xyz[1, 3], [(3 - 7.5) * 0.2 + 1, (1 - 5.5) * 0.2 + 2, 5.0])


def test_prepare_recording_shapes_and_pixel_mapping(tmp_path):
    seq = load_rgbd_folder(str(make_scannet(tmp_path / 'rec', n=3)))
    prep = prepare_recording(seq, image_size=(6, 8), point_voxel_size=0.01)
    inp = prep.inputs
    assert inp['img'].shape == (3, 3, 6, 8) and inp['depths'].shape == (3, 6, 8)
    assert inp['cam2world'].shape == inp['intrinsics'].shape == (3, 4, 4)
    # intrinsics scaled by 0.5 with the image
    np.testing.assert_allclose(inp['intrinsics'][0, :2, :3].numpy(), K[:2] * 0.5)
    pts = inp['points'].numpy()
    assert pts.shape[1] == 6 and (pts[:, 3:] >= 0).all() and (pts[:, 3:] <= 1).all()
    # every valid pixel maps to a fused point within one voxel of its own unprojection
    p2p = prep.pixel_to_point
    assert (p2p >= 0).all()
    for v in range(3):
        xyz = unproject_frame(inp['depths'][v].numpy().astype(np.float64),
                              inp['intrinsics'][v].numpy().astype(np.float64),
                              seq.poses[v])
        err = np.abs(pts[p2p[v], :3] - xyz).max()
        assert err < 0.01 + 1e-6
    assert prep.metainfo['num_views'] == 3
