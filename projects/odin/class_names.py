"""Class metadata of every dataset ODIN is trained or evaluated on (pure data, no heavy imports).

Conventions used by the whole project:

* **Training classes** are 0-based indices into ``<DATASET>_CLASSES`` (the order ODIN uses: for
  ScanNet and ScanNet200 *wall* and *floor* come last). ``num_classes`` (the length) is the
  ignore / no-object index (mmdet3d ``PointSegClassMapping`` convention).
* **Label ids** are the ids written in ground-truth and benchmark files: NYU40 ids for ScanNet,
  raw ScanNet200 ids (``scannetv2-labels.combined.tsv``) for ScanNet200, and ODIN's 1-based
  indices for S3DIS, Matterport3D and AI2THOR (ODIN's evaluator uses ``arange(1, K + 1)`` there).
  ``<DATASET>_CLASS_IDS[i]`` is the label id of training class ``i``.
* Instance ground truth per point is ``label_id * multiplier + instance`` (``multiplier`` is 1000,
  200 for AI2THOR); ``<DATASET>_INSTANCE_CLASS_IDS`` are the label ids scored by instance AP, and
  ``<DATASET>_SEMANTIC_CLASS_IDS`` those scored by semantic mIoU.

Sources of the facts (read, not copied): ScanNet's ``BenchmarkScripts`` (``3d_evaluation/
evaluate_semantic_instance.py`` and ``evaluate_semantic_label.py`` for the ScanNet-20 ids and
names, ``ScanNet200/scannet200_constants.py`` for ``VALID_CLASS_IDS_200`` / ``CLASS_LABELS_200``,
``ScanNet200/scannet200_splits.py`` for the head / common / tail lists), and ODIN's
``odin/global_vars.py`` (its spellings of the ScanNet-20 names, the ScanNet200 re-ordering, the 5
classes it drops, the S3DIS, Matterport3D-160 and AI2THOR-117 lists, and the AI2THOR instance-id
multiplier 200). Class *names* reported by our evaluators are the benchmark scripts' names.

Every list that was asked for was found; none is invented. ``ALFRED`` (AI2THOR + 6 sliced/cracked
classes) is included for completeness.
"""
from typing import Dict, Tuple

# --------------------------------------------------------------------------------------------------
# ScanNet (20 semantic classes, 18 instance classes; NYU40 label ids)
# --------------------------------------------------------------------------------------------------

#: Benchmark names in ODIN's training order (wall and floor last).
SCANNET_CLASSES: Tuple[str, ...] = (
    'cabinet', 'bed', 'chair', 'sofa', 'table', 'door', 'window', 'bookshelf', 'picture',
    'counter', 'desk', 'curtain', 'refrigerator', 'shower curtain', 'toilet', 'sink', 'bathtub',
    'otherfurniture', 'wall', 'floor')
#: NYU40 label id of each entry of :data:`SCANNET_CLASSES`.
SCANNET_CLASS_IDS: Tuple[int, ...] = (
    3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39, 1, 2)
#: ODIN's own spellings (``NAME_MAP20``); they are its open-vocabulary prompt tokens, so keep them
#: verbatim, including ``'refridgerator'`` and the leading space of ``' bathtub'``.
SCANNET_ODIN_CLASS_NAMES: Tuple[str, ...] = (
    'cabinet', 'bed', 'chair', 'sofa', 'table', 'door', 'window', 'bookshelf', 'picture',
    'counter', 'desk', 'curtain', 'refridgerator', 'shower curtain', 'toilet', 'sink', ' bathtub',
    'otherfurniture', 'wall', 'floor')
#: The 18 instance classes (``evaluate_semantic_instance.py``: ``CLASS_LABELS``,
#: ``VALID_CLASS_IDS``).
SCANNET_INSTANCE_CLASSES: Tuple[str, ...] = SCANNET_CLASSES[:18]
SCANNET_INSTANCE_CLASS_IDS: Tuple[int, ...] = (
    3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
#: The 20 semantic classes in benchmark order (``evaluate_semantic_label.py``).
SCANNET_SEMANTIC_CLASSES: Tuple[str, ...] = (
    'wall', 'floor', 'cabinet', 'bed', 'chair', 'sofa', 'table', 'door', 'window', 'bookshelf',
    'picture', 'counter', 'desk', 'curtain', 'refrigerator', 'shower curtain', 'toilet', 'sink',
    'bathtub', 'otherfurniture')
SCANNET_SEMANTIC_CLASS_IDS: Tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
#: All label ids a ScanNet (NYU40) file may legitimately contain (0 = unannotated).
SCANNET_KNOWN_LABEL_IDS: Tuple[int, ...] = tuple(range(0, 41))

# --------------------------------------------------------------------------------------------------
# ScanNet200 (raw ids of scannetv2-labels.combined.tsv)
# --------------------------------------------------------------------------------------------------

#: ``VALID_CLASS_IDS_200`` of ``scannet200_constants.py`` (benchmark order).
SCANNET200_VALID_CLASS_IDS: Tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 21, 22, 23, 24, 26, 27, 28, 29,
    31, 32, 33, 34, 35, 36, 38, 39, 40, 41, 42, 44, 45, 46, 47, 48, 49, 50, 51, 52, 54, 55, 56, 57,
    58, 59, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 82, 84, 86,
    87, 88, 89, 90, 93, 95, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 110, 112, 115,
    116, 118, 120, 121, 122, 125, 128, 130, 131, 132, 134, 136, 138, 139, 140, 141, 145, 148, 154,
    155, 156, 157, 159, 161, 163, 165, 166, 168, 169, 170, 177, 180, 185, 188, 191, 193, 195, 202,
    208, 213, 214, 221, 229, 230, 232, 233, 242, 250, 261, 264, 276, 283, 286, 300, 304, 312, 323,
    325, 331, 342, 356, 370, 392, 395, 399, 408, 417, 488, 540, 562, 570, 572, 581, 609, 748, 776,
    1156, 1163, 1164, 1165, 1166, 1167, 1168, 1169, 1170, 1171, 1172, 1173, 1174, 1175, 1176, 1178,
    1179, 1180, 1181, 1182, 1183, 1184, 1185, 1186, 1187, 1188, 1189, 1190, 1191)
#: ``CLASS_LABELS_200`` of ``scannet200_constants.py`` (benchmark order, parallel to the ids).
SCANNET200_BENCHMARK_CLASSES: Tuple[str, ...] = (
    'wall', 'chair', 'floor', 'table', 'door', 'couch', 'cabinet', 'shelf', 'desk', 'office chair',
    'bed', 'pillow', 'sink', 'picture', 'window', 'toilet', 'bookshelf', 'monitor', 'curtain',
    'book', 'armchair', 'coffee table', 'box', 'refrigerator', 'lamp', 'kitchen cabinet', 'towel',
    'clothes', 'tv', 'nightstand', 'counter', 'dresser', 'stool', 'cushion', 'plant', 'ceiling',
    'bathtub', 'end table', 'dining table', 'keyboard', 'bag', 'backpack', 'toilet paper',
    'printer', 'tv stand', 'whiteboard', 'blanket', 'shower curtain', 'trash can', 'closet',
    'stairs', 'microwave', 'stove', 'shoe', 'computer tower', 'bottle', 'bin', 'ottoman', 'bench',
    'board', 'washing machine', 'mirror', 'copier', 'basket', 'sofa chair', 'file cabinet', 'fan',
    'laptop', 'shower', 'paper', 'person', 'paper towel dispenser', 'oven', 'blinds', 'rack',
    'plate', 'blackboard', 'piano', 'suitcase', 'rail', 'radiator', 'recycling bin', 'container',
    'wardrobe', 'soap dispenser', 'telephone', 'bucket', 'clock', 'stand', 'light',
    'laundry basket', 'pipe', 'clothes dryer', 'guitar', 'toilet paper holder', 'seat', 'speaker',
    'column', 'bicycle', 'ladder', 'bathroom stall', 'shower wall', 'cup', 'jacket', 'storage bin',
    'coffee maker', 'dishwasher', 'paper towel roll', 'machine', 'mat', 'windowsill', 'bar',
    'toaster', 'bulletin board', 'ironing board', 'fireplace', 'soap dish', 'kitchen counter',
    'doorframe', 'toilet paper dispenser', 'mini fridge', 'fire extinguisher', 'ball', 'hat',
    'shower curtain rod', 'water cooler', 'paper cutter', 'tray', 'shower door', 'pillar', 'ledge',
    'toaster oven', 'mouse', 'toilet seat cover dispenser', 'furniture', 'cart',
    'storage container', 'scale', 'tissue box', 'light switch', 'crate', 'power outlet',
    'decoration', 'sign', 'projector', 'closet door', 'vacuum cleaner', 'candle', 'plunger',
    'stuffed animal', 'headphones', 'dish rack', 'broom', 'guitar case', 'range hood', 'dustpan',
    'hair dryer', 'water bottle', 'handicap bar', 'purse', 'vent', 'shower floor', 'water pitcher',
    'mailbox', 'bowl', 'paper bag', 'alarm clock', 'music stand', 'projector screen', 'divider',
    'laundry detergent', 'bathroom counter', 'object', 'bathroom vanity', 'closet wall',
    'laundry hamper', 'bathroom stall door', 'ceiling light', 'trash bin', 'dumbbell',
    'stair rail', 'tube', 'bathroom cabinet', 'cd case', 'closet rod', 'coffee kettle',
    'structure', 'shower head', 'keyboard piano', 'case of water bottles', 'coat rack',
    'storage organizer', 'folded chair', 'fire alarm', 'power strip', 'calendar', 'poster',
    'potted plant', 'luggage', 'mattress')

_SCANNET200_BG = ('wall', 'floor')
#: ODIN's training order (``SCANNET_CLASS_LABELS_200``): benchmark order with wall and floor moved
#: to the end (chair = 0, table = 1, ..., wall = 198, floor = 199, 0-based).
SCANNET200_CLASSES: Tuple[str, ...] = tuple(
    n for n in SCANNET200_BENCHMARK_CLASSES if n not in _SCANNET200_BG) + _SCANNET200_BG
_SCANNET200_NAME_TO_ID: Dict[str, int] = dict(
    zip(SCANNET200_BENCHMARK_CLASSES, SCANNET200_VALID_CLASS_IDS))
#: Raw ScanNet200 id of each entry of :data:`SCANNET200_CLASSES`.
SCANNET200_CLASS_IDS: Tuple[int, ...] = tuple(_SCANNET200_NAME_TO_ID[n] for n in SCANNET200_CLASSES)
#: The 5 classes absent from val and test that ODIN maps to "ignore" in training
#: (``SCANNET200_MISSING_IDS_FROM_VAL_TEST`` = 1-based ODIN indices 197, 182, 165, 158, 152).
SCANNET200_ODIN_DROPPED_CLASSES: Tuple[str, ...] = (
    'luggage', 'cd case', 'alarm clock', 'purse', 'guitar case')
SCANNET200_ODIN_DROPPED_CLASS_IDS: Tuple[int, ...] = tuple(
    _SCANNET200_NAME_TO_ID[n] for n in SCANNET200_ODIN_DROPPED_CLASSES)
#: Instance classes: all 200 but wall (1) and floor (3) (``VALID_PANOPTIC_IDS``), benchmark order.
#: This is what Mask3D's and ODIN's ScanNet200 evaluators score (198 names).
SCANNET200_INSTANCE_CLASSES: Tuple[str, ...] = tuple(
    n for n in SCANNET200_BENCHMARK_CLASSES if n not in _SCANNET200_BG)
SCANNET200_INSTANCE_CLASS_IDS: Tuple[int, ...] = tuple(
    _SCANNET200_NAME_TO_ID[n] for n in SCANNET200_INSTANCE_CLASSES)
SCANNET200_SEMANTIC_CLASSES: Tuple[str, ...] = SCANNET200_BENCHMARK_CLASSES
SCANNET200_SEMANTIC_CLASS_IDS: Tuple[int, ...] = SCANNET200_VALID_CLASS_IDS
#: Label ids a ScanNet200 prediction file may contain.
SCANNET200_KNOWN_LABEL_IDS: Tuple[int, ...] = (0, ) + SCANNET200_VALID_CLASS_IDS

#: Head / common / tail split (``scannet200_splits.py``), 66 / 68 / 66 names. Head contains wall and
#: floor; subset metrics are computed over the instance classes only (ODIN removes them as well).
SCANNET200_HEAD_CLASSES: Tuple[str, ...] = (
    'tv stand', 'curtain', 'blinds', 'shower curtain', 'bookshelf', 'tv', 'kitchen cabinet',
    'pillow', 'lamp', 'dresser', 'monitor', 'object', 'ceiling', 'board', 'stove', 'closet wall',
    'couch', 'office chair', 'kitchen counter', 'shower', 'closet', 'doorframe', 'sofa chair',
    'mailbox', 'nightstand', 'washing machine', 'picture', 'book', 'sink', 'recycling bin',
    'table', 'backpack', 'shower wall', 'toilet', 'copier', 'counter', 'stool', 'refrigerator',
    'window', 'file cabinet', 'chair', 'wall', 'plant', 'coffee table', 'stairs', 'armchair',
    'cabinet', 'bathroom vanity', 'bathroom stall', 'mirror', 'blackboard', 'trash can',
    'stair rail', 'box', 'towel', 'door', 'clothes', 'whiteboard', 'bed', 'floor', 'bathtub',
    'desk', 'wardrobe', 'clothes dryer', 'radiator', 'shelf')
SCANNET200_COMMON_CLASSES: Tuple[str, ...] = (
    'cushion', 'end table', 'dining table', 'keyboard', 'bag', 'toilet paper', 'printer',
    'blanket', 'microwave', 'shoe', 'computer tower', 'bottle', 'bin', 'ottoman', 'bench',
    'basket', 'fan', 'laptop', 'person', 'paper towel dispenser', 'oven', 'rack', 'piano',
    'suitcase', 'rail', 'container', 'telephone', 'stand', 'light', 'laundry basket', 'pipe',
    'seat', 'column', 'bicycle', 'ladder', 'jacket', 'storage bin', 'coffee maker', 'dishwasher',
    'machine', 'mat', 'windowsill', 'bulletin board', 'fireplace', 'mini fridge', 'water cooler',
    'shower door', 'pillar', 'ledge', 'furniture', 'cart', 'decoration', 'closet door',
    'vacuum cleaner', 'dish rack', 'range hood', 'projector screen', 'divider', 'bathroom counter',
    'laundry hamper', 'bathroom stall door', 'ceiling light', 'trash bin', 'bathroom cabinet',
    'structure', 'storage organizer', 'potted plant', 'mattress')
SCANNET200_TAIL_CLASSES: Tuple[str, ...] = (
    'paper', 'plate', 'soap dispenser', 'bucket', 'clock', 'guitar', 'toilet paper holder',
    'speaker', 'cup', 'paper towel roll', 'bar', 'toaster', 'ironing board', 'soap dish',
    'toilet paper dispenser', 'fire extinguisher', 'ball', 'hat', 'shower curtain rod',
    'paper cutter', 'tray', 'toaster oven', 'mouse', 'toilet seat cover dispenser',
    'storage container', 'scale', 'tissue box', 'light switch', 'crate', 'power outlet', 'sign',
    'projector', 'candle', 'plunger', 'stuffed animal', 'headphones', 'broom', 'guitar case',
    'dustpan', 'hair dryer', 'water bottle', 'handicap bar', 'purse', 'vent', 'shower floor',
    'water pitcher', 'bowl', 'paper bag', 'alarm clock', 'music stand', 'laundry detergent',
    'dumbbell', 'tube', 'cd case', 'closet rod', 'coffee kettle', 'shower head', 'keyboard piano',
    'case of water bottles', 'coat rack', 'folded chair', 'fire alarm', 'power strip', 'calendar',
    'poster', 'luggage')
#: The 11 classes that occur in ScanNet train but not in val (ODIN
#: ``VALID_CLASS_IDS_200_TRAIN_ONLY``); the other 189 (``VALID_CLASS_IDS_200_VALIDATION``) occur in
#: val.
SCANNET200_TRAIN_ONLY_CLASSES: Tuple[str, ...] = (
    'bicycle', 'storage container', 'candle', 'guitar case', 'purse', 'alarm clock', 'music stand',
    'cd case', 'structure', 'storage organizer', 'luggage')

# --------------------------------------------------------------------------------------------------
# S3DIS (13 classes; ODIN ``S3DIS_NAME_MAP``, ids 1..13, all 13 scored; stairs -> clutter)
# --------------------------------------------------------------------------------------------------
S3DIS_CLASSES: Tuple[str, ...] = (
    'ceiling', 'floor', 'wall', 'beam', 'column', 'window', 'door', 'table', 'chair', 'sofa',
    'bookcase', 'board', 'clutter')
S3DIS_CLASS_IDS: Tuple[int, ...] = tuple(range(1, 14))

# --------------------------------------------------------------------------------------------------
# Matterport3D (160 classes; ODIN ``MATTERPORT_CLASS_LABELS``, ids 1..160, all 160 scored)
# --------------------------------------------------------------------------------------------------
MATTERPORT3D_CLASSES: Tuple[str, ...] = (
    'wall', 'door', 'ceiling', 'floor', 'picture', 'window', 'chair', 'pillow', 'lamp', 'cabinet',
    'curtain', 'table', 'plant', 'mirror', 'towel', 'sink', 'shelves', 'sofa', 'bed',
    'night stand', 'toilet', 'column', 'banister', 'stairs', 'stool', 'vase', 'television', 'pot',
    'desk', 'box', 'coffee table', 'counter', 'bench', 'garbage bin', 'fireplace', 'clothes',
    'bathtub', 'book', 'air vent', 'faucet', 'photo', 'toilet paper', 'fan', 'railing',
    'sculpture', 'dresser', 'rug', 'ottoman', 'bottle', 'refridgerator', 'bookshelf', 'wardrobe',
    'pipe', 'monitor', 'stand', 'drawer', 'container', 'light switch', 'purse', 'door way',
    'basket', 'chandelier', 'oven', 'clock', 'stove', 'washing machine', 'shower curtain',
    'fire alarm', 'bin', 'chest', 'microwave', 'blinds', 'bowl', 'tissue box', 'plate', 'tv stand',
    'shoe', 'heater', 'headboard', 'bucket', 'candle', 'flower pot', 'speaker', 'furniture', 'sign',
    'air conditioner', 'fire extinguisher', 'curtain rod', 'floor mat', 'printer', 'telephone',
    'blanket', 'handle', 'shower head', 'soap', 'keyboard', 'thermostat', 'radiator',
    'kitchen island', 'paper towel', 'sheet', 'glass', 'dishwasher', 'cup', 'ladder',
    'garage door', 'hat', 'exit sign', 'piano', 'board', 'rope', 'ball', 'excercise equipment',
    'hanger', 'candlestick', 'light', 'scale', 'bag', 'laptop', 'treadmill', 'guitar',
    'display case', 'toilet paper holder', 'bar', 'tray', 'urn', 'decorative plate', 'pool table',
    'jacket', 'bottle of soap', 'water cooler', 'utensil', 'tea pot', 'stuffed animal',
    'paper towel dispenser', 'lamp shade', 'car', 'toilet brush', 'doll', 'drum', 'whiteboard',
    'range hood', 'candelabra', 'toy', 'foot rest', 'soap dish', 'placemat', 'cleaner', 'computer',
    'knob', 'paper', 'projector', 'coat hanger', 'case', 'pan', 'luggage', 'trinket', 'chimney',
    'person', 'alarm')
MATTERPORT3D_CLASS_IDS: Tuple[int, ...] = tuple(range(1, 161))

# --------------------------------------------------------------------------------------------------
# AI2THOR / ProcTHOR (117 classes = 115 objects + Wall + Floor; instance id multiplier 200)
# --------------------------------------------------------------------------------------------------
AI2THOR_CLASSES: Tuple[str, ...] = (
    'ShowerDoor', 'Cabinet', 'CounterTop', 'Sink', 'Towel', 'HandTowel', 'TowelHolder', 'SoapBar',
    'ToiletPaper', 'ToiletPaperHanger', 'HandTowelHolder', 'SoapBottle', 'GarbageCan', 'Candle',
    'ScrubBrush', 'Plunger', 'SinkBasin', 'Cloth', 'SprayBottle', 'Toilet', 'Faucet',
    'ShowerHead', 'Box', 'Bed', 'Book', 'DeskLamp', 'BasketBall', 'Pen', 'Pillow', 'Pencil',
    'CellPhone', 'KeyChain', 'Painting', 'CreditCard', 'AlarmClock', 'CD', 'Laptop', 'Drawer',
    'SideTable', 'Chair', 'Blinds', 'Desk', 'Curtains', 'Dresser', 'Watch', 'Television',
    'WateringCan', 'Newspaper', 'FloorLamp', 'RemoteControl', 'HousePlant', 'Statue', 'Ottoman',
    'ArmChair', 'Sofa', 'DogBed', 'BaseballBat', 'TennisRacket', 'VacuumCleaner', 'Mug',
    'ShelvingUnit', 'Shelf', 'StoveBurner', 'Apple', 'Lettuce', 'Bottle', 'Egg', 'Microwave',
    'CoffeeMachine', 'Fork', 'Fridge', 'WineBottle', 'Spatula', 'Bread', 'Tomato', 'Pan', 'Cup',
    'Pot', 'SaltShaker', 'Potato', 'PepperShaker', 'ButterKnife', 'StoveKnob', 'Toaster',
    'DishSponge', 'Spoon', 'Plate', 'Knife', 'DiningTable', 'Bowl', 'LaundryHamper', 'Vase',
    'Stool', 'CoffeeTable', 'Poster', 'Bathtub', 'TissueBox', 'Footstool', 'BathtubBasin',
    'ShowerCurtain', 'TVStand', 'Boots', 'RoomDecor', 'PaperTowelRoll', 'Ladle', 'Kettle', 'Safe',
    'GarbageBag', 'TeddyBear', 'TableTopDecor', 'Dumbbell', 'Desktop', 'AluminumFoil', 'Window',
    'LightSwitch', 'Wall', 'Floor')
AI2THOR_CLASS_IDS: Tuple[int, ...] = tuple(range(1, 118))
AI2THOR_INSTANCE_CLASSES: Tuple[str, ...] = AI2THOR_CLASSES[:-2]
AI2THOR_INSTANCE_CLASS_IDS: Tuple[int, ...] = tuple(range(1, 116))
AI2THOR_ID_MULTIPLIER = 200
#: 1-based ids ODIN lists as absent from its AI2THOR split (``AI2THOR_MISSING_CLASS_IDS``).
AI2THOR_ODIN_MISSING_CLASS_IDS: Tuple[int, ...] = (
    1, 2, 5, 6, 7, 10, 11, 15, 22, 36, 41, 43, 47, 63, 83, 95, 96, 98, 99, 100, 112, 113, 115)

#: ALFRED / TEACh: AI2THOR classes plus 6 state classes (123; multiplier 200).
ALFRED_CLASSES: Tuple[str, ...] = AI2THOR_CLASSES + (
    'AppleSliced', 'BreadSliced', 'EggCracked', 'LettuceSliced', 'PotatoSliced', 'TomatoSliced')

SCANNET_ID_MULTIPLIER = 1000

# --------------------------------------------------------------------------------------------------
# One record per dataset, used by the datasets, the model (num_classes) and the evaluators.
# --------------------------------------------------------------------------------------------------


def _record(classes, class_ids, instance_ids, semantic_ids, multiplier, known=None,
            subsets=None, alt_classes=None) -> dict:
    id2name = dict(zip(class_ids, classes))
    return dict(
        classes=tuple(classes),
        alt_classes=tuple(alt_classes or ()),
        class_ids=tuple(class_ids),
        num_classes=len(classes),
        instance_class_ids=tuple(instance_ids),
        instance_classes=tuple(id2name[i] for i in instance_ids),
        semantic_class_ids=tuple(semantic_ids),
        semantic_classes=tuple(id2name[i] for i in semantic_ids),
        id_multiplier=multiplier,
        known_label_ids=tuple(known if known is not None else (0, ) + tuple(class_ids)),
        subsets=dict(subsets or {}),
    )


#: ``DATASET_CLASS_INFO[name]`` = dict(classes, alt_classes, class_ids, num_classes,
#: instance_class_ids, instance_classes, semantic_class_ids, semantic_classes, id_multiplier,
#: known_label_ids, subsets). ``classes`` / ``class_ids`` are in training order (``alt_classes``:
#: other spellings of the same list, e.g. ODIN's ScanNet names); ``instance_*`` and ``semantic_*``
#: in benchmark (reporting) order; ``subsets`` maps a subset name to class names.
DATASET_CLASS_INFO: Dict[str, dict] = {
    'scannet': _record(SCANNET_CLASSES, SCANNET_CLASS_IDS, SCANNET_INSTANCE_CLASS_IDS,
                       SCANNET_SEMANTIC_CLASS_IDS, SCANNET_ID_MULTIPLIER,
                       known=SCANNET_KNOWN_LABEL_IDS, alt_classes=SCANNET_ODIN_CLASS_NAMES),
    'scannet200': _record(
        SCANNET200_CLASSES, SCANNET200_CLASS_IDS, SCANNET200_INSTANCE_CLASS_IDS,
        SCANNET200_SEMANTIC_CLASS_IDS, SCANNET_ID_MULTIPLIER, known=SCANNET200_KNOWN_LABEL_IDS,
        subsets=dict(head=SCANNET200_HEAD_CLASSES, common=SCANNET200_COMMON_CLASSES,
                     tail=SCANNET200_TAIL_CLASSES)),
    's3dis': _record(S3DIS_CLASSES, S3DIS_CLASS_IDS, S3DIS_CLASS_IDS, S3DIS_CLASS_IDS,
                     SCANNET_ID_MULTIPLIER),
    'matterport3d': _record(MATTERPORT3D_CLASSES, MATTERPORT3D_CLASS_IDS, MATTERPORT3D_CLASS_IDS,
                            MATTERPORT3D_CLASS_IDS, SCANNET_ID_MULTIPLIER),
    'ai2thor': _record(AI2THOR_CLASSES, AI2THOR_CLASS_IDS, AI2THOR_INSTANCE_CLASS_IDS,
                       AI2THOR_CLASS_IDS, AI2THOR_ID_MULTIPLIER),
}


def get_class_info(dataset: str) -> dict:
    """Return the class record of a dataset (see :data:`DATASET_CLASS_INFO`).

    Args:
        dataset (str): One of ``'scannet'``, ``'scannet200'``, ``'s3dis'``, ``'matterport3d'``,
            ``'ai2thor'`` (case-insensitive; ``'matterport'`` is accepted too).

    Returns:
        dict: A copy of the record.
    """
    key = dataset.lower()
    key = {'matterport': 'matterport3d', 'scannet20': 'scannet'}.get(key, key)
    if key not in DATASET_CLASS_INFO:
        raise KeyError(f'unknown dataset {dataset!r}; known: {sorted(DATASET_CLASS_INFO)}')
    rec = DATASET_CLASS_INFO[key]
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in rec.items()}
