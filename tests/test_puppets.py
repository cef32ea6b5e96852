"""The synthetic puppet generator (`puppets.py`) and its dataset script, checked against independent computations."""

import math

import cv2
import numpy as np
import pytest
from example_scripts import load_example
from PIL import Image

from diffusers_stableanimator import puppets as P
from diffusers_stableanimator.errors import StableAnimatorError
from diffusers_stableanimator.preprocessing.drawing import BODY_COLORS, BODY_LIMBS, LIMB_DIMMING, draw_pose_canvas, render_pose
from diffusers_stableanimator.training.dataset import StableAnimatorVideoDataset

SEEDS = [(1, 2), (3, 4), (5, 6), (7, 8)]
SIZE = 64


@pytest.fixture(scope="module")
def videos():
    return [P.render_video(i, m, num_frames=16, width=SIZE, height=SIZE) for i, m in SEEDS]


def test_same_seeds_give_identical_videos(videos):
    again = P.render_video(*SEEDS[0], num_frames=16, width=SIZE, height=SIZE)
    first = videos[0]
    for a, b in [(first.frames, again.frames), (first.pose_images, again.pose_images), (first.face_masks, again.face_masks)]:
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert np.array_equal(first.keypoints, again.keypoints) and first.face_boxes == again.face_boxes


def test_different_seeds_give_different_identities_and_motions(videos):
    identities = [v.identity for v in videos]
    for i in range(len(identities)):
        for j in range(i + 1, len(identities)):
            assert identities[i].colors != identities[j].colors
            assert not np.allclose(videos[i].keypoints, videos[j].keypoints)
    # the identity depends on the identity seed only, the motion on the motion seed only
    same_puppet = P.render_video(1, 99, num_frames=4)
    assert same_puppet.identity == videos[0].identity
    assert not np.allclose(same_puppet.keypoints, videos[0].keypoints[:4])
    same_motion = P.render_video(99, 2, num_frames=4)
    assert np.allclose(same_motion.keypoints, videos[0].keypoints[:4])


def test_keypoints_stay_inside_the_frame(videos):
    for video in videos:
        k = video.keypoints
        assert k.shape == (16, 18, 2)
        assert k.min() >= P.FIT_MARGIN - 1e-9 and k.max() <= 1 - P.FIT_MARGIN + 1e-9
        # the head disc too
        assert (k[:, 0] - P.HEAD_RADIUS * video.scale).min() >= P.FIT_MARGIN - 1e-9
        assert (k[:, 0] + P.HEAD_RADIUS * video.scale).max() <= 1 - P.FIT_MARGIN + 1e-9


def _speed(name):
    """Largest change per frame of an angle: budget * 2 pi * f_max (the sinusoids' amplitudes sum to <= budget)."""
    return P.ANGLES[name][1] * 2 * math.pi * P.MAX_FREQUENCY


def test_keypoints_move_smoothly(videos):
    # A joint is the pelvis plus a chain of links p = pelvis + sum_i L_i u(theta_i), each theta_i a sum of angles,
    # so its displacement per frame is at most |d pelvis| + sum_i L_i sum_{angles in theta_i} |d angle|,
    # times the fit's scale. |d pelvis| <= |(A_x, A_y)| * 2 pi f_max.
    pelvis = math.hypot(*P.PELVIS_AMPLITUDE) * 2 * math.pi * P.MAX_FREQUENCY
    w_t = _speed("torso")
    neck = P.TORSO * w_t
    head = neck + P.HEAD * (w_t + _speed("head"))
    bounds = {0: head, 1: neck, 14: head + P.HEAD_RADIUS * (w_t + _speed("head")) * 0.5}
    bounds[15] = bounds[14]
    bounds[16] = bounds[17] = head + P.HEAD_RADIUS * (w_t + _speed("head"))
    for side, (s, e, w), (h, k, a) in (("r", (2, 3, 4), (8, 9, 10)), ("l", (5, 6, 7), (11, 12, 13))):
        bounds[s] = neck + P.SHOULDER * w_t
        w_u, w_f = _speed(f"{side}_upper_arm"), _speed(f"{side}_forearm")
        bounds[e] = bounds[s] + P.UPPER_ARM * (w_t + w_u)
        bounds[w] = bounds[e] + P.FOREARM * (w_t + w_u + w_f)
        bounds[h] = P.HIP * w_t
        w_th, w_sh = _speed(f"{side}_thigh"), _speed(f"{side}_shin")
        bounds[k] = bounds[h] + P.THIGH * (w_t + w_th)
        bounds[a] = bounds[k] + P.SHIN * (w_t + w_th + w_sh)
    bound = np.array([pelvis + bounds[j] for j in range(18)])
    for video in videos:
        step = np.linalg.norm(np.diff(video.keypoints, axis=0), axis=-1)  # (F-1, 18), square frames: short-side units
        assert (step <= video.scale * bound + 1e-9).all()
        assert step.max() < 0.1  # and concretely: under 6.4 px per frame at 64 px
        assert step.max() > 0.002  # it does move


def _segment_distance(p, a, b):
    p, a, b = (np.asarray(v, dtype=float) for v in (p, a, b))
    d = b - a
    t = 0.0 if not d.any() else float(np.clip(np.dot(p - a, d) / np.dot(d, d), 0, 1))
    return float(np.linalg.norm(p - (a + t * d)))


def _px(point):
    return np.array([round(point[0] * SIZE), round(point[1] * SIZE)], dtype=float)


def test_body_parts_sit_at_the_keypoints(videos):
    """The pixel at each limb's midpoint (and the torso's centre, and each eye) has that part's identity colour,
    wherever no part drawn later comes within 2 px of it."""
    limbs = list(P.LEG_LIMBS) + [("torso", None, None, "torso"), ("neck", 1, 0, "skin")] + list(P.ARM_LIMBS)
    checked = total = 0
    for video in videos:
        half = P.limb_half_width_px(SIZE, SIZE, video.scale)
        radius = P.head_radius_px(SIZE, SIZE, video.scale)
        for frame, k in zip(video.frames, video.keypoints):
            px = [_px(point) for point in k]
            torso = np.array([px[2], px[5], px[11], px[8]], dtype=np.float32)

            def clearance(point, later):
                distances = [np.linalg.norm(point - px[0]) - radius - 1]  # the head (and eyes, mouth) come last
                for _, a, b, _ in later:
                    if a is None:
                        distances.append(-cv2.pointPolygonTest(torso, tuple(map(float, point)), True))
                    else:
                        distances.append(_segment_distance(point, px[a], px[b]) - half)
                return min(distances)

            for index, (_, a, b, part) in enumerate(limbs):
                point = torso.mean(0) if a is None else (px[a] + px[b]) / 2
                point = np.round(point)
                total += 1
                if clearance(point, limbs[index + 1 :]) <= 2:
                    continue
                checked += 1
                x, y = int(point[0]), int(point[1])
                assert tuple(frame[y, x]) == video.identity.colors[part], (part, x, y)
            for eye in (14, 15):
                x, y = (int(v) for v in px[eye])
                assert tuple(frame[y, x]) == video.identity.eye_color
    assert checked >= 0.7 * total, (checked, total)  # the test is not vacuous


def test_pose_images_are_the_package_drawing_of_the_keypoints(videos):
    for video in videos[:2]:
        for pose, image, k in zip(video.poses, video.pose_images, video.keypoints):
            assert pose.num_people == 1 and (pose.width, pose.height) == (SIZE, SIZE)
            assert np.array_equal(pose.body[0], k) and (pose.body_scores == 1).all()
            assert (pose.face_scores == 0).all() and (pose.hand_scores == 0).all()
            # The package's drawing: every lit pixel is lit on its canvas too (the area it averages over).
            canvas = draw_pose_canvas(pose, SIZE, SIZE)
            step = canvas.shape[0] / SIZE
            for y, x in zip(*np.nonzero(image.max(-1))):
                assert canvas[int(y * step):int(np.ceil((y + 1) * step)), int(x * step):int(np.ceil((x + 1) * step))].any()
            # A continuous skeleton, unlike `render_pose` at 64 px (a few scattered pixels of quarter-pixel strokes):
            # along every limb, a pixel within 1 px of the axis is lit in the limb's palette colour, at least
            # half as bright as the drawing's limbs (palette x 0.6).
            sampled = found = 0
            for limb, (a, b) in enumerate(BODY_LIMBS[:12]):  # the body's limbs; the head's are a few pixels long
                colour = np.array(BODY_COLORS[limb], dtype=np.float64) * LIMB_DIMMING
                for t in np.linspace(0.2, 0.8, 4):
                    x, y = ((1 - t) * k[a] + t * k[b]) * SIZE
                    window = image[max(int(y) - 1, 0):int(y) + 2, max(int(x) - 1, 0):int(x) + 2].reshape(-1, 3).astype(np.float64)
                    sampled += 1
                    found += bool((np.abs(window - colour).max(-1) <= 0.5 * colour.max()).any())
            assert found >= 0.9 * sampled, (found, sampled)  # crossings of two limbs may mix their colours
            assert (render_pose(pose, SIZE, SIZE).max(-1) > 0).sum() < 0.5 * (image.max(-1) > 0).sum()


def test_face_box_and_mask_cover_the_head(videos):
    for video in videos:
        radius = P.head_radius_px(SIZE, SIZE, video.scale)
        for (x1, y1, x2, y2), mask, k in zip(video.face_boxes, video.face_masks, video.keypoints):
            for joint in (0, 14, 15):
                x, y = _px(k[joint])
                assert x1 <= x <= x2 and y1 <= y <= y2
            assert x2 - x1 == y2 - y1 == 2 * radius  # inside the frame, so not clipped
            assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
            assert (mask == 255).sum() == (x2 - x1 + 1) * (y2 - y1 + 1) and mask[y1:y2 + 1, x1:x2 + 1].all()


def test_identity_embedding_is_per_puppet():
    a, b = P.Identity.from_seed(1), P.Identity.from_seed(2)
    ea, eb = P.identity_embedding(a), P.identity_embedding(b)
    assert ea.shape == (512,) and ea.dtype == np.float32 and abs(np.linalg.norm(ea) - 1) < 1e-5
    assert np.array_equal(ea, P.identity_embedding(P.Identity.from_seed(1)))
    assert float(ea @ eb) < 0.99


@pytest.fixture(scope="module")
def make_dataset():
    return load_example("puppets/make_dataset.py")


@pytest.fixture(scope="module")
def dataset_dir(make_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("puppets") / "data"
    assert make_dataset.main(["--out", str(out), "--videos", "3", "--seed", "5", "--frames", "10", "--videos-per-puppet", "2"]) == 0
    return out


def test_script_writes_the_training_layout(dataset_dir):
    names = (dataset_dir / "videos.txt").read_text().split()
    assert names == ["puppet_00000", "puppet_00001", "puppet_00002"]
    assert sorted(p.name for p in dataset_dir.iterdir()) == sorted(names + ["videos.txt"])
    for index, name in enumerate(names):
        folder = dataset_dir / name
        video = P.render_video(*P.video_seeds(5, index, 2), num_frames=10)
        for sub, pictures in (("images", video.frames), ("poses", video.pose_images), ("faces", video.face_masks)):
            files = sorted((folder / sub).iterdir(), key=lambda p: int(p.stem.split("_")[1]))
            assert [f.name for f in files] == [f"frame_{i}.png" for i in range(10)]
            assert all(np.array_equal(np.asarray(Image.open(f)), picture) for f, picture in zip(files, pictures))
    # Default: the shipped recognizer's embedding of the first frame's face, as the pipeline computes a reference
    # embedding (face_optimization.reference_face_embedding: its own crop and resize); puppet boxes are inclusive.
    from diffusers_stableanimator.face_optimization import reference_face_embedding
    from diffusers_stableanimator.tiny_puppet import load_tiny_puppet

    recognizer = load_tiny_puppet().face_recognizer
    embeddings = []
    for index, name in enumerate(names):
        video = P.render_video(*P.video_seeds(5, index, 2), num_frames=10)
        x1, y1, x2, y2 = video.face_boxes[0]
        expected = reference_face_embedding(recognizer, Image.fromarray(video.frames[0]), (x1, y1, x2 + 1, y2 + 1))[0]
        embeddings.append(np.load(dataset_dir / name / "face_embedding.npy"))
        assert embeddings[-1].shape == (512,) and embeddings[-1].dtype == np.float32
        np.testing.assert_allclose(embeddings[-1], expected.numpy(), rtol=1e-4, atol=1e-4)
    # two clips of puppet 0 (other motions): close; another puppet: far
    cosine = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    assert cosine(embeddings[0], embeddings[1]) > 0.5 > cosine(embeddings[0], embeddings[2])


def test_script_can_write_the_fixed_identity_projection(make_dataset, tmp_path):
    out = tmp_path / "data"
    assert make_dataset.main(["--out", str(out), "--videos", "2", "--seed", "5", "--frames", "2", "--face-embedding", "identity"]) == 0
    for index in range(2):
        identity = P.Identity.from_seed(P.video_seeds(5, index)[0])
        assert np.array_equal(np.load(out / P.video_name(index) / "face_embedding.npy"), P.identity_embedding(identity))


def test_written_dataset_loads_for_training(dataset_dir):
    dataset = StableAnimatorVideoDataset(dataset_dir / "videos.txt", width=SIZE, height=SIZE, num_frames=8, frame_rate=1, seed=0)
    assert len(dataset) == 3
    item = dataset[0]
    assert item["pixel_values"].shape == (8, 3, SIZE, SIZE) and item["pose_pixels"].shape == (8, 3, SIZE, SIZE)
    assert item["face_masks"].shape == (8, 1, SIZE, SIZE) and item["reference_image"].shape == (3, SIZE, SIZE)
    assert item["face_embeds"].shape == (512,)
    assert -1 <= item["pixel_values"].min() and item["pixel_values"].max() <= 1
    assert 0 < item["face_masks"].mean() < 0.2  # box masks: some face, mostly not


def test_script_refuses_to_overwrite(make_dataset, dataset_dir, tmp_path, capsys):
    before = (dataset_dir / "videos.txt").read_bytes()
    assert make_dataset.main(["--out", str(dataset_dir), "--videos", "1", "--seed", "6"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (dataset_dir / "videos.txt").read_bytes() == before
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    assert make_dataset.main(["--out", str(foreign), "--videos", "1", "--overwrite"]) == 2
    assert (foreign / "notes.txt").read_text() == "keep" and sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    # A file of the user's deep inside an earlier dataset is not replaced either.
    mine = dataset_dir / "puppet_00000" / "images" / "notes.txt"
    mine.write_text("keep")
    assert make_dataset.main(["--out", str(dataset_dir), "--videos", "1", "--overwrite"]) == 2
    assert "puppet_00000/images/notes.txt" in capsys.readouterr().err and mine.read_text() == "keep"
    mine.unlink()
    mine = dataset_dir / "puppet_notes.txt"  # a file named like a video folder is not one
    mine.write_text("keep")
    assert make_dataset.main(["--out", str(dataset_dir), "--videos", "1", "--overwrite"]) == 2
    assert "puppet_notes.txt" in capsys.readouterr().err and mine.read_text() == "keep"
    mine.unlink()


def test_overwrite_replaces_an_earlier_dataset(tmp_path):
    out = tmp_path / "data"
    P.write_dataset(out, 2, seed=0, num_frames=3)
    P.write_dataset(out, 1, seed=1, num_frames=3, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["puppet_00000", "videos.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name != "data"]  # no temporary left behind
    with pytest.raises(StableAnimatorError):
        P.write_dataset(tmp_path / "x", 0)


def test_face_embedder_gives_the_stored_embedding(tmp_path):
    # write_dataset(face_embedder=...) stores what the embedder returns for each video (the recipe passes the puppet
    # recognizer's); here an embedder computed independently from the first frame's face pixels.
    def embedder(video):
        x1, y1, x2, y2 = video.face_boxes[0]
        face = video.frames[0][y1 : y2 + 1, x1 : x2 + 1].astype(np.float64)
        return np.resize(face.mean((0, 1)), 512)

    P.write_dataset(tmp_path / "data", 2, seed=3, num_frames=2, face_embedder=embedder)
    for index in range(2):
        video = P.render_video(*P.video_seeds(3, index), num_frames=2)
        stored = np.load(tmp_path / "data" / P.video_name(index) / "face_embedding.npy")
        assert stored.dtype == np.float32 and np.array_equal(stored, embedder(video).astype(np.float32))
