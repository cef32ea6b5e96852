"""A puppet style (`puppets.Style`, `THICK_PASTEL`: thick limbs, pale parts) and the style LoRA (issue 14's last item): the style draws what it
says, examples/puppets/train_style_lora.py trains a loadable LoRA, and the shipped LoRA moves the shipped model's
output towards the style on held-out styled puppets. Thresholds come from measured values (in the comments) with a
margin."""

import hashlib

import numpy as np
import pytest
import torch
from example_scripts import load_example

from diffusers_stableanimator import StableAnimatorPipeline
from diffusers_stableanimator import puppet_evaluation as E
from diffusers_stableanimator import puppets as P
from diffusers_stableanimator.errors import StableAnimatorError
from diffusers_stableanimator.lora import LORA_WEIGHT_NAME
from diffusers_stableanimator.tiny_puppet import THICK_PASTEL_LORA, load_tiny_puppet, ship_lora

SEEDS = [(1, 2), (3, 4), (5, 6)]
# sha256 of the 16 frames (64x64) of puppet (1, 2), computed with puppets.py as it was before `Style` existed (8f0fffd)
EXPECTED_DEFAULT_SHA256 = "a90b2187adf6abfcaac87dd5695e5d95339b61db088a958864562f7aee699708"


def test_default_style_draws_as_before():
    video = P.render_video(*SEEDS[0])
    digest = hashlib.sha256(b"".join(f.tobytes() for f in video.frames)).hexdigest()
    assert digest == EXPECTED_DEFAULT_SHA256
    explicit = P.render_video(*SEEDS[0], style=P.Style(limb_scale=1.0))
    assert all(np.array_equal(a, b) for a, b in zip(video.frames, explicit.frames))


def _limb_width(frame, a, b, colour, max_width=16.0):
    """The width in pixels of the run of `colour` across segment a-b at its midpoint (perpendicular scan, 1/4 px
    steps), or None if the midpoint does not have the colour (another part covers it)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    axis = (b - a) / max(np.linalg.norm(b - a), 1e-9)
    normal = np.array([-axis[1], axis[0]])
    mid = (a + b) / 2
    height, width = frame.shape[:2]

    def is_colour(t):
        x, y = (int(round(v)) for v in mid + t * normal)
        return 0 <= x < width and 0 <= y < height and tuple(frame[y, x]) == tuple(colour)

    if not is_colour(0.0):
        return None
    steps = np.arange(0, max_width, 0.25)
    up = next((t for t in steps if not is_colour(t)), max_width)
    down = next((t for t in steps if not is_colour(-t)), max_width)
    return up + down - 0.25  # the last sample inside on each side, plus the one pixel the scan stands in


def test_thick_limbs_are_drawn_about_twice_as_wide():
    """Measured independently of the drawing code: the colour's run across each arm segment at its midpoint (arms only:
    the two thighs nearly touch, which would merge their runs). At 64 px and fit scale 1 limbs have half-width 2 px
    by default and 4 px with limb_scale 2, so the runs differ by 2 * (4 - 2) = 4 px; each run also counts up to
    about a pixel of pixel extent and rounding on either side (measured medians: 7.0 and 11.0 px)."""
    widths = {P.Style(): [], P.Style(limb_scale=2.0): []}
    for seeds in SEEDS:
        for style, found in widths.items():
            video = P.render_video(*seeds, num_frames=6, style=style)
            assert video.scale == 1.0  # the widths above are for scale 1
            for frame, keypoints in zip(video.frames, video.keypoints):
                for _, a, b, part in P.ARM_LIMBS:
                    w = _limb_width(frame, keypoints[a] * 64, keypoints[b] * 64, video.part_colours[part])
                    if w is not None:
                        found.append(w)
    thin, thick = np.median(widths[P.Style()]), np.median(widths[P.Style(limb_scale=2.0)])
    assert min(len(found) for found in widths.values()) >= 30
    assert 5 <= thin <= 8 and 3 <= thick - thin <= 5, (thin, thick)


def test_pastel_parts_are_halfway_to_white():
    # The torso's centre pixel (not covered by the arms in these frames) in the identity colour mixed 50/50 with white,
    # computed here by hand; the face's eyes keep their colour.
    default, pale = P.render_video(*SEEDS[2], num_frames=3), P.render_video(*SEEDS[2], num_frames=3, style=P.Style(lighten=0.5))
    for a, b, k in zip(default.frames, pale.frames, default.keypoints):
        x, y = (int(v) for v in np.round(k[[2, 5, 11, 8]].mean(0) * 64))
        r, g, bl = default.identity.colors["torso"]
        assert tuple(a[y, x]) == (r, g, bl)
        assert tuple(b[y, x]) == tuple(int(np.floor(c + (255 - c) / 2 + 0.5)) for c in (r, g, bl))
        ex, ey = (int(round(v * 64)) for v in k[14])
        assert tuple(b[ey, ex]) == tuple(a[ey, ex]) == default.identity.eye_color


def test_style_changes_only_the_puppets_drawing():
    default, styled = P.render_video(*SEEDS[1], num_frames=4), P.render_video(*SEEDS[1], num_frames=4, style=P.THICK_PASTEL)
    assert np.array_equal(default.keypoints, styled.keypoints) and default.face_boxes == styled.face_boxes
    assert all(np.array_equal(a, b) for a, b in zip(default.pose_images, styled.pose_images))
    # every changed pixel now has a (pale) part colour: the background and the face's details are untouched
    part_colours = set(styled.part_colours.values())
    assert part_colours.isdisjoint(default.part_colours.values())
    for a, b in zip(default.frames, styled.frames):
        changed = np.any(a != b, axis=-1)
        assert changed.sum() > 200
        assert {tuple(c) for c in b[changed]} <= part_colours


# ------------------------------------------------------------------------------------------------- the recipe
@pytest.fixture(scope="module")
def recipe():
    return load_example("puppets/train_style_lora.py")


@pytest.fixture(scope="module")
def run(recipe, tmp_path_factory):
    out = tmp_path_factory.mktemp("style_lora") / "run"
    report = recipe.main(["--output-dir", str(out), "--videos", "2", "--frames", "6", "--num-frames", "4",
                          "--steps", "2", "--rank", "2", "--threads", "1"])
    return out, report


def test_recipe_trains_on_styled_puppets(run):
    from PIL import Image

    from diffusers_stableanimator.puppet_recognizer import face_embedding

    out, report = run
    assert report["lora_steps"] == 2 and np.isfinite(report["loss_last"])
    base = load_tiny_puppet()
    for index in range(2):
        identity_seed, motion_seed = P.video_seeds(1, index)  # --seed 1, the recipe's default
        # far from the held-out puppets the LoRA is measured on
        assert abs(identity_seed - E.HELD_OUT_IDENTITY) > 10_000 and abs(motion_seed - E.HELD_OUT_MOTION) > 10_000
        video = P.render_video(identity_seed, motion_seed, 6, style=P.THICK_PASTEL)

        stored = np.asarray(Image.open(out / "data" / P.video_name(index) / "images" / "frame_3.png"))
        assert np.array_equal(stored, video.frames[3])
        expected = face_embedding(base.face_recognizer, video.frames[0], video.face_boxes[0])
        np.testing.assert_allclose(np.load(out / "data" / P.video_name(index) / "face_embedding.npy"), expected, atol=1e-5)


def test_recipe_lora_loads_and_changes_the_output(run):
    out, _ = run
    case = E.held_out_case(0, 4, style=P.THICK_PASTEL)
    pipe = load_tiny_puppet()
    before = E.generate(pipe, case, steps=2)
    pipe.load_lora_weights(str(out / "lora"))
    assert any("lora_B" in name for name, _ in pipe.unet.named_parameters())
    after = E.generate(pipe, case, steps=2)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))


def test_ship_lora_replaces_the_file(run, tmp_path):
    out, _ = run
    target = tmp_path / "shipped"
    target.mkdir()
    (target / "old.txt").write_text("an earlier LoRA")
    ship_lora(out / "lora", target)
    assert sorted(p.name for p in target.iterdir()) == [LORA_WEIGHT_NAME]
    assert (target / LORA_WEIGHT_NAME).read_bytes() == (out / "lora" / LORA_WEIGHT_NAME).read_bytes()
    with pytest.raises(StableAnimatorError, match="holds no"):
        ship_lora(tmp_path / "nothing", target)


def test_recipe_refuses_a_used_output_dir(recipe, run):
    out, _ = run
    with pytest.raises(StableAnimatorError, match="not empty"):
        recipe.main(["--output-dir", str(out), "--steps", "1"])
    with pytest.raises(StableAnimatorError, match="--base"):
        recipe.main(["--output-dir", str(out.parent / "new"), "--base", str(out / "data"), "--steps", "1"])


# ------------------------------------------------------------------------------------------- the shipped LoRA
# Measured on the shipped weights (tiny-puppet base + weights/tiny-puppet-thick-pastel-lora), held-out puppets drawn
# in THICK_PASTEL, 8 frames, 10 denoising steps (examples/puppets/evaluate_style_lora.py, 6 puppets x 2 seeds):
#   puppet saturation 0.415 -> 0.347 (styled truth 0.322), lower in 12 of 12 runs;
#   SSIM 0.498 -> 0.532 and PSNR* 16.05 -> 16.71, better in 10 of 12; L1 0.0070 -> 0.0067 but better in only 6 of 12
#   and DisCo's PSNR in 5 (neither asserted).
# Here the first four puppets, seed 0 (means): saturation 0.435 -> 0.354, PSNR* 15.57 -> 16.04, SSIM 0.480 -> 0.517.
# The same recipe on two more base runs (each with its own LoRA): seed 1 0.467 -> 0.366, 15.79 -> 16.85, SSIM +0.036;
# seed 2 (a base that already paints pale) 0.339 -> 0.285, 16.55 -> 17.29, SSIM only +0.001 (+0.015 on all six
# puppets). So the test asserts saturation and PSNR*, which moved in every base run, and not SSIM.
CASES = (0, 1, 2, 3)
SATURATION_DROP, PSNR_STAR_GAIN = 0.03, 0.2


@pytest.fixture(scope="module")
def shipped_figures():
    base = load_tiny_puppet()
    styled = load_tiny_puppet()
    styled.load_lora_weights(str(THICK_PASTEL_LORA))
    figures = {"base": [], "lora": []}
    for index in CASES:
        case = E.held_out_case(index, 8, recognizer=base.face_recognizer, style=P.THICK_PASTEL)
        for name, pipe in (("base", base), ("lora", styled)):
            frames = E.generate(pipe, case, 10, seed=0)
            figures[name].append({**E.pixel_metrics(frames, case.truth), "saturation": E.puppet_saturation(frames, case),
                                  "truth_saturation": E.puppet_saturation(case.truth, case)})
    return {name: E.mean_figures(values) for name, values in figures.items()}


def test_shipped_lora_moves_the_output_towards_the_style(shipped_figures):
    base, lora = shipped_figures["base"], shipped_figures["lora"]
    # paler, towards the pale truth, which the base model (never shown saturation below 0.55) overshoots
    assert lora["saturation"] <= base["saturation"] - SATURATION_DROP, (base, lora)
    assert lora["saturation"] > 0.8 * base["truth_saturation"], (base, lora)  # towards the truth, not past it
    assert lora["psnr_star"] >= base["psnr_star"] + PSNR_STAR_GAIN, (base["psnr_star"], lora["psnr_star"])


def test_puppet_saturation_is_hsv_saturation():
    # against colorsys on a frame whose puppet pixels are all one known colour
    import colorsys

    case = E.held_out_case(0, 2, style=P.THICK_PASTEL)
    frames = [np.full_like(t, (200, 100, 50)) for t in case.truth]
    assert E.puppet_saturation(frames, case) == pytest.approx(colorsys.rgb_to_hsv(200, 100, 50)[1])
    pale = E.puppet_saturation(case.truth, case)
    vivid = E.puppet_saturation(E.held_out_case(0, 2).truth, E.held_out_case(0, 2))
    assert pale < 0.7 * vivid
