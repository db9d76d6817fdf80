"""Smoke test of tools/analysis_tools/benchmark_long_scene.py: a tiny run end to end (a generated
recording, one fresh process per size and path) prints the table's rows and parsable figures."""
import re

import pytest

from odin_testing import load_script


@pytest.mark.smoke
def test_benchmark_long_scene_prints_a_table(tmp_path, capsys):
    bench = load_script('tools/analysis_tools/benchmark_long_scene.py')
    rc = bench.main(['--frames', '4', '8', '--models', 'r50_sensor', '--recording-hw', '96',
                     '128', '--image-size', '64', '80', '--work-dir', str(tmp_path),
                     '--threads', '1'])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert '8 frames of 128x96' in out and 'random weights' in out
    rows = {}
    for line in out.splitlines():
        m = re.match(r'r50_sensor\s+(\d+)\s+(unchunked|bounded)\s+(.*)$', line)
        if m:
            rows[(int(m.group(1)), m.group(2))] = [float(v) for v in m.group(3).split()]
    assert sorted(rows) == [(4, 'bounded'), (4, 'unchunked'), (8, 'bounded'), (8, 'unchunked')]
    for (frames, _), (prep_s, wall_s, per_frame, read_gb, peak_gb) in rows.items():
        assert prep_s >= 0 and wall_s > 0 and read_gb >= 0  # prep of tiny frames may print 0.0
        assert per_frame == pytest.approx(wall_s / frames, abs=0.05 / frames + 0.006)  # rounding
        assert 0.1 < peak_gb < 64
    for path in ('unchunked', 'bounded'):
        m = re.search(rf'r50_sensor {path}: peak RSS (-?[\d.]+) GB \+ (-?[\d.]+) MB/frame', out)
        assert m, out
        float(m.group(1)), float(m.group(2))
    # the recording is reused by a second run (its marker file is there)
    assert (tmp_path / 'recording_8_96x128' / 'recording.json').is_file()


def test_benchmark_skips_sizes_over_the_budget(tmp_path, capsys):
    bench = load_script('tools/analysis_tools/benchmark_long_scene.py')
    # a budget below the estimate of any size: nothing runs, every size says what it would need
    rc = bench.main(['--frames', '2', '100', '--models', 'r50_sensor', '--paths', 'unchunked',
                     '--recording-hw', '48', '64', '--work-dir', str(tmp_path),
                     '--max-memory-gb', '0.5'])
    out = capsys.readouterr().out
    assert rc == 0
    need = [float(v) for v in re.findall(r'skipped \(would need ~([\d.]+) GB\)', out)]
    assert len(need) == 2 and need[1] > need[0] > 0.5
    assert 'fewer than two sizes measured' in out
    assert bench.fit_line([1, 2, 3], [2.0, 4.0, 6.0]) == pytest.approx((0.0, 2.0))


def test_long_recording_of_a_larger_room_sees_more_surface(tmp_path):
    """``room`` (``--room``) sets the floor extent: the camera orbits a larger room, so its
    depths reach further than in the default room, and the folder records the room."""
    import json

    import cv2
    bench = load_script('tools/analysis_tools/benchmark_long_scene.py')
    far = {}
    for name, room in (('default', None), ('large', (9.0, 8.0))):
        rec = bench.make_long_recording(str(tmp_path / name), 3, (48, 64), room=room)
        depths = [cv2.imread(f'{rec}/depth/{i}.png', -1) for i in range(3)]
        far[name] = max(float(d.max()) for d in depths)
        spec = json.loads((tmp_path / name / 'recording.json').read_text())
        assert spec.get('room') == (None if room is None else list(room))
    assert far['large'] > 1.2 * far['default']
    with pytest.raises(ValueError, match='room must be two positive'):
        bench.make_long_recording(str(tmp_path / 'bad'), 3, (48, 64), room=(-1.0, 5.0))
