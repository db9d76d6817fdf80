# Open-vocabulary variant of odin_tiny_joint_test.py (tests/test_e2e/test_odin_joint_training.py):
# the tiny ODIN with the open-vocabulary class head (a tiny RoBERTa written by the test with
# tests/odin_testing.py make_tiny_roberta; path set by the test) trained jointly on the synthetic
# world (20 ScanNet classes) and a tiny COCO-format set; the test gives the COCO datasets their
# own vocabulary, so every batch is classified against its dataset's class names
# (metainfo['classes']).
_base_ = ['./odin_tiny_joint_test.py']

roberta_path = 'data/tiny_roberta'
model = dict(
    decode_head=dict(
        classifier=dict(
            type='OpenVocabClassifier',
            text_encoder=dict(type='ODINTextEncoder', pretrained=roberta_path, max_seq_len=64),
            temperature=0.07,
            class_names=None)))
