import numpy as np
import pytest
from PIL import Image

from diffusers_stableanimator.preprocessing import list_frame_files, read_frames, video_fps, write_frames, write_video
from diffusers_stableanimator.preprocessing.video_io import natural_key


def colour_frames(n, width=64, height=48):
    """Frames of flat, clearly different colours (robust to h264 compression)."""
    return [np.full((height, width, 3), (40 * i % 256, 255 - 40 * i % 256, 128), np.uint8) for i in range(n)]


def test_mp4_round_trip_count_size_stride_max_frames(tmp_path):
    frames = colour_frames(7)
    path = write_video(tmp_path / "clip.mp4", frames, fps=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # no temporary file left behind
    back = read_frames(path)
    assert len(back) == 7 and back[0].shape == (48, 64, 3) and back[0].dtype == np.uint8
    assert np.abs(back[3].astype(int) - frames[3]).mean() < 6
    assert video_fps(path) == pytest.approx(10)
    strided = read_frames(path, stride=3)
    assert len(strided) == 3  # frames 0, 3, 6
    assert np.abs(strided[1].astype(int) - frames[3]).mean() < 6
    assert len(read_frames(path, stride=2, max_frames=2)) == 2


def test_write_mp4_pads_odd_sizes(tmp_path):
    with pytest.warns(UserWarning, match="even"):
        write_video(tmp_path / "odd.mp4", colour_frames(2, 33, 21))
    assert read_frames(tmp_path / "odd.mp4")[0].shape == (22, 34, 3)


def test_gif(tmp_path):
    write_video(tmp_path / "a.gif", colour_frames(5), fps=5)
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == 5 and gif.size == (64, 48)


def test_image_folder_natural_sort(tmp_path):
    for i in (10, 2, 1, 0):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(tmp_path / f"frame_{i}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    assert [p.name for p in list_frame_files(tmp_path)] == ["frame_0.png", "frame_1.png", "frame_2.png", "frame_10.png"]
    assert [int(f[0, 0, 0]) for f in read_frames(tmp_path)] == [0, 1, 2, 10]
    assert [int(f[0, 0, 0]) for f in read_frames(tmp_path, stride=2)] == [0, 2]

    plain = tmp_path / "plain"
    plain.mkdir()
    for i in (100, 9, 10):
        Image.fromarray(np.full((4, 4, 3), i % 256, np.uint8)).save(plain / f"{i:d}.jpg")
    assert [p.name for p in list_frame_files(plain)] == ["9.jpg", "10.jpg", "100.jpg"]
    assert sorted(["img12", "img2", "IMG1"], key=natural_key) == ["IMG1", "img2", "img12"]


def test_write_frames_official_names(tmp_path):
    paths = write_frames(tmp_path / "poses", colour_frames(3))
    assert [p.name for p in paths] == ["frame_0.png", "frame_1.png", "frame_2.png"]
    np.testing.assert_array_equal(read_frames(tmp_path / "poses")[2], colour_frames(3)[2])


def test_read_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No image files"):
        read_frames(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_frames(tmp_path / "missing.mp4")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(ValueError, match="Unsupported video type"):
        read_frames(tmp_path / "x.txt")
    with pytest.raises(ValueError, match="stride"):
        read_frames(tmp_path / "empty", stride=0)
    with pytest.raises(ValueError, match=".mp4 or .gif"):
        write_video(tmp_path / "a.avi", colour_frames(1))


@pytest.mark.parametrize("fps", [5, 4, 10])
def test_gif_frame_durations_follow_fps(tmp_path, fps):
    """Each GIF frame lasts round(1000 / fps) ms (GIF stores centiseconds: these fps give whole centiseconds)."""
    write_video(tmp_path / "a.gif", colour_frames(3), fps=fps)
    with Image.open(tmp_path / "a.gif") as gif:
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
    assert durations == [round(1000 / fps)] * 3
