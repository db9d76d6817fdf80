import os.path as osp
import sys

# Make the shared recording writers (rgbd_makers.py) importable by the tests of this folder.
sys.path.insert(0, osp.dirname(__file__))
