import os.path as osp
import sys

# The tiny recording writers of tests/test_apis (rgbd_makers.py) are shared with these tests.
sys.path.insert(0, osp.join(osp.dirname(osp.dirname(__file__)), 'test_apis'))
