"""Scanning, windowing, errors and the frame cache of tennis_exp.data, on tiny JPEG trees."""

from __future__ import annotations

import logging
import os
import pickle
import random
import re
import sys
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from tennis_exp.config import (
    BACKGROUND,
    EVENTS,
    IDLE_ACTION,
    THETIS_ACTIONS,
    THETIS_EXCLUDED,
    DataConfig,
    SyntheticConfig,
    SyntheticPreset,
    TrainingConfig,
    validate,
)
from tennis_exp.data import frame_cache, split_index
from tennis_exp.data.frames import WindowDataset, build_datasets
from tennis_exp.data.loaders import make_loader
from tennis_exp.data.split_index import scan_split
from tennis_exp.errors import UserError

from ..helpers.configs import compose_config
from ..helpers.frame_trees import LAYOUT, SIZE, make_tree, write_video

# torchvision 0.29 deprecates its JPEG decoder (in favour of torchcodec) and warns per call.


def make_cfg(root: Path, **overrides):
    cfg = OmegaConf.structured(
        DataConfig(root=str(root), actions=dict(THETIS_ACTIONS), excluded=list(THETIS_EXCLUDED))
    )
    cfg.cache_dir = str(root.parent / "cache")
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def all_items(dataset: WindowDataset) -> list[tuple[torch.Tensor, int]]:
    return [dataset[i] for i in range(len(dataset))]


# --- scanning -----------------------------------------------------------------------------

LENGTHS = [15, 16, 23, 24, 40]
STARTS = {  # stride -> video length -> window starts
    8: {15: [], 16: [0], 23: [0], 24: [0, 8], 40: [0, 8, 16, 24]},
    16: {15: [], 16: [0], 23: [0], 24: [0], 40: [0, 16]},
}


@pytest.mark.parametrize("split, stride", [("train", 8), ("val", 16), ("train", 16), ("val", 8)])
def test_window_starts(tmp_path, split, stride):
    root = make_tree(tmp_path / "d", {split: {"smash": LENGTHS}})
    other = 16 if stride == 8 else 8  # the other split's stride must not be used
    strides = {"train_stride": stride, "eval_stride": other}
    if split != "train":
        strides = {"train_stride": other, "eval_stride": stride}
    index = scan_split(root, split, make_cfg(root, **strides))

    found = {len(index.videos[v]): [] for v in range(len(index.videos))}
    for video, start in index.windows.tolist():
        found[len(index.videos[video])].append(start)
    expected = {length: starts for length, starts in STARTS[stride].items() if starts}
    assert found == expected
    assert index.skipped_short == 1
    assert index.windows.dtype == np.int64 and index.labels.dtype == np.int64


def test_mapping_and_class_counts(tmp_path):
    root = make_tree(tmp_path / "d")
    cfg = make_cfg(root)
    index = scan_split(root, "train", cfg)
    # smash 20+24 -> 1+2, volley 16 -> 1, backhand 30 -> 2, service 40 -> 4 (stride 8)
    assert index.class_counts(cfg.events) == {"Smash": 3, "Net Play": 1, "Rally": 2, "Serve": 4}
    assert index.video_labels == [2, 3, 1, 0, 0]  # sorted folders: backhand, flat_service, ...
    assert index.labels.tolist() == [index.video_labels[v] for v, _ in index.windows.tolist()]
    assert index.skipped_short == 1 and index.skipped_actions == {}
    frames = index.videos[0]
    assert [p.name for p in frames] == [f"frame_{i:04d}.jpg" for i in range(30)]


def test_frames_sorted_numerically_and_non_jpeg_ignored(tmp_path):
    video = tmp_path / "d" / "train" / "smash" / "v0"
    video.mkdir(parents=True)
    for i in range(16):
        (video / f"frame_{i}.jpg").write_bytes(b"")  # unpadded names; scanning does not decode
    (video / "Thumbs.db").write_bytes(b"")
    index = scan_split(tmp_path / "d", "train", make_cfg(tmp_path / "d"))
    assert [p.name for p in index.videos[0]] == [f"frame_{i}.jpg" for i in range(16)]


def test_natural_sort_shortcut_agrees_with_the_key():
    # Lexical order stands in for the natural key only when names differ in digits alone. Random
    # names over digits and characters either side of them ('-' < '0' < 'a'): variations of one
    # template in its digits (the shortcut), half the time with an unrelated name (the key).
    rng = random.Random(0)
    alphabet = "ab-_.0129"

    def vary(template: str) -> str:
        return "".join(rng.choice("0123456789") if c.isdigit() else c for c in template)

    shortcuts = 0
    for _ in range(3000):
        template = "".join(rng.choices(alphabet, k=rng.randint(1, 6)))
        names = {vary(template) for _ in range(rng.randint(2, 6))}
        if rng.random() < 0.5:
            names.add("".join(rng.choices(alphabet, k=rng.randint(1, 6))))
        shortcuts += len({len(name) for name in names}) == 1
        # Ties of the key (9, 09) keep lexical order.
        expected = sorted(sorted(names), key=split_index._natural_key)
        assert split_index._natural_sorted(list(names)) == expected, names
    assert shortcuts > 1000
    padded = [f"frame_{i:04d}.jpg" for i in (10, 2, 9999, 0)]
    assert split_index._natural_sorted(padded + ["frame_10000.jpg"])[-2:] == [
        "frame_9999.jpg",
        "frame_10000.jpg",
    ]


def test_frame_paths(tmp_path):
    root = make_tree(tmp_path / "d", {"train": {"smash": [16]}})
    frames = scan_split(root, "train", make_cfg(root)).videos[0]
    folder = root / "train" / "smash" / "v000"
    assert frames[3] == folder / "frame_0003.jpg" and frames[-1] == folder / "frame_0015.jpg"
    assert frames[1:3] == [folder / "frame_0001.jpg", folder / "frame_0002.jpg"]
    assert list(frames) == sorted(folder.iterdir())
    assert pickle.loads(pickle.dumps(frames))[0] == frames[0]


def test_excluded_actions_ignored_silently(tmp_path, caplog):
    layout = {"train": {"smash": [16], "kick_service": [40, 40], "slice_service": [24]}}
    root = make_tree(tmp_path / "d", layout)
    with caplog.at_level(logging.WARNING):
        index = scan_split(root, "train", make_cfg(root))
    assert caplog.records == []
    assert len(index.videos) == 1 and index.skipped_actions == {}


def test_excluded_wins_over_mapping(tmp_path):
    root = make_tree(tmp_path / "d", {"train": {"smash": [16], "backhand": [16]}})
    index = scan_split(root, "train", make_cfg(root, excluded=["backhand"]))
    assert index.video_labels == [0]


def test_unknown_action_folders_warned_once(tmp_path, caplog):
    layout = {"train": {"smash": [16], "mystery": [16, 20], "cartwheel": [30]}}
    root = make_tree(tmp_path / "d", layout)
    with caplog.at_level(logging.WARNING, logger="tennis_exp.data"):
        index = scan_split(root, "train", make_cfg(root))
    assert index.skipped_actions == {"cartwheel": 1, "mystery": 2}
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "skipped 3 video(s)" in message
    assert "cartwheel (1)" in message and "mystery (2)" in message
    assert len(index.videos) == 1


def test_real_train_split_window_counts(tmp_path, monkeypatch):
    """A THETIS-shaped train split (115 videos per action, as 165 x 70 %) gives 7775 windows.

    Only the folders are created; frame listing is faked from the length in the folder name,
    so the whole scan (mapping, exclusion, short videos, windows) runs for real.
    """

    def lengths(windows_per_video: dict[int, int]) -> list[int]:
        # 8w + 8 frames give w windows at stride 8; + (k % 8) tests the floor.
        return [
            8 * w + 8 + k % 8 for w, count in windows_per_video.items() for k in range(count)
        ] + [3, 15]  # two short videos per action, skipped

    per_action = {  # windows per video -> number of videos
        "smash": {8: 34, 7: 81},  # 839
        "forehand_volley": {7: 109, 6: 6},  # 799
        "backhand_volley": {7: 108, 6: 7},  # 798
        "forehand_flat": {8: 64, 7: 51},  # 869
        "forehand_openstands": {8: 64, 7: 51},  # 869
        "backhand": {8: 64, 7: 51},  # 869
        "forehand_slice": {8: 64, 7: 51},  # 869
        "backhand_slice": {8: 63, 7: 52},  # 868
        "flat_service": {9: 75, 8: 40},  # 995
        "kick_service": {9: 50},  # excluded
    }
    split_dir = tmp_path / "d" / "train"
    for action, spec in per_action.items():
        for k, length in enumerate(lengths(spec)):
            (split_dir / action / f"v{k:03d}_L{length}").mkdir(parents=True)

    def fake_list_frames(video_dir: str) -> split_index.VideoFrames:
        length = int(video_dir.rsplit("_L", 1)[1])
        return split_index.VideoFrames(video_dir, [f"frame_{i:04d}.jpg" for i in range(length)])

    monkeypatch.setattr(split_index, "_list_frames", fake_list_frames)
    cfg = make_cfg(tmp_path / "d")
    index = scan_split(tmp_path / "d", "train", cfg)
    assert index.class_counts(cfg.events) == {
        "Smash": 839,
        "Net Play": 1597,
        "Rally": 4344,
        "Serve": 995,
    }
    assert len(index.windows) == 7775
    assert index.skipped_short == 2 * 9 and len(index.videos) == 115 * 9


# --- errors -------------------------------------------------------------------------------


def test_missing_root(tmp_path):
    with pytest.raises(UserError, match=r"data.root=.*nowhere does not exist"):
        build_datasets(make_cfg(tmp_path / "nowhere"), seed=0)


def test_root_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is not a directory"):
        build_datasets(make_cfg(tmp_path / "file"), seed=0)


def test_empty_root(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(UserError, match=r"data.root=.*d is empty"):
        build_datasets(make_cfg(tmp_path / "d"), seed=0)


def test_missing_splits_named(tmp_path):
    root = make_tree(tmp_path / "d", {"train": LAYOUT["train"]})
    expected = r"lacks split folder\(s\) val, test; expected train/val/test"
    with pytest.raises(UserError, match=expected):
        build_datasets(make_cfg(root), seed=0)


def test_split_without_usable_video(tmp_path):
    layout = dict(LAYOUT, val={"smash": [10, 12], "kick_service": [40], "mystery": [30]})
    root = make_tree(tmp_path / "d", layout)
    with pytest.raises(UserError) as info:
        build_datasets(make_cfg(root, frame_cache=False), seed=0)
    message = str(info.value)
    assert "no usable video in" in message and str(root / "val") in message
    assert "2 video(s) with fewer than data.window=16 frames" in message
    assert "1 in data.excluded actions" in message and "1 in action folders not in" in message


def test_unknown_event_in_mapping(tmp_path):
    root = make_tree(tmp_path / "d", {"train": {"smash": [16]}})
    with pytest.raises(UserError, match="unknown event 'Lob'"):
        scan_split(root, "train", make_cfg(root, actions={"smash": "Lob"}))


@pytest.mark.parametrize("frame_cache", [True, False])
@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_corrupt_jpeg_names_the_file(tmp_path, frame_cache, damage):
    root = make_tree(tmp_path / "d")
    bad = root / "train" / "smash" / "v001" / "frame_0005.jpg"
    bad.write_bytes(bad.read_bytes()[:100] if damage == "truncated" else b"")
    with pytest.raises(UserError, match=re.escape(f"frame {bad} is not a readable JPEG")):
        all_items(build_datasets(make_cfg(root, frame_cache=frame_cache), seed=0)["train"])
    # A failed build leaves neither a cache nor its temporary file behind.
    assert list((tmp_path / "cache").glob("*train*")) == []


@pytest.mark.parametrize("frame_cache", [True, False])
def test_mixed_frame_sizes_name_the_video(tmp_path, frame_cache):
    root = make_tree(tmp_path / "d")
    video = root / "train" / "flat_service" / "v000"
    odd = video / "frame_0003.jpg"
    Image.new("RGB", (40, 24)).save(odd)
    expected = re.escape(f"video {video} mixes frame sizes 32x32 and 40x24")
    with pytest.raises(UserError, match=expected):
        all_items(build_datasets(make_cfg(root, frame_cache=frame_cache), seed=0)["train"])


# --- datasets and the cache ---------------------------------------------------------------


def test_dataset_items(tmp_path):
    root = make_tree(tmp_path / "d")
    write_video(root / "train" / "smash" / "v002", 16, size=(48, 40))  # resized to SIZE
    datasets = build_datasets(make_cfg(root, image_size=SIZE), seed=0)
    assert set(datasets) == {"train", "val", "test"}
    train = datasets["train"]
    assert len(train) == 11 and len(datasets["val"]) == 6  # eval stride 16
    for i, (clip, label) in enumerate(all_items(train)):
        assert clip.dtype == torch.uint8 and clip.shape == (16, 3, SIZE, SIZE)
        assert isinstance(label, int) and label == train.index.labels[i]


def test_cached_equals_uncached(tmp_path):
    root = make_tree(tmp_path / "d")
    write_video(root / "val" / "backhand" / "v002", 20, size=(48, 40))
    cached = build_datasets(make_cfg(root), seed=0)
    decoded = build_datasets(make_cfg(root, frame_cache=False), seed=0)
    for split in cached:
        for (a, label_a), (b, label_b) in zip(
            all_items(cached[split]), all_items(decoded[split]), strict=True
        ):
            assert torch.equal(a, b) and label_a == label_b
    # Frames really are distinct: the green channel encodes the frame number.
    clip, _ = cached["train"][0]
    assert len({int(frame[1].float().mean().round()) for frame in clip}) == 16


def cache_files(root: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (root.parent / "cache").glob("*.npy")}


def test_cache_reused_then_rebuilt_on_change(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "d")
    cfg = make_cfg(root)
    build_datasets(cfg, seed=0)
    first = cache_files(root)
    assert len(first) == 3
    assert not list((root.parent / "cache").glob("*.tmp"))

    def no_decoding(*args):
        raise AssertionError("the cache was rebuilt")

    with monkeypatch.context() as patch:
        patch.setattr(frame_cache, "load_frame", no_decoding)
        build_datasets(cfg, seed=0)
    assert cache_files(root) == first

    def touch(frame: Path) -> None:  # moved explicitly: filesystem clocks can be coarse
        stat = frame.stat()
        os.utime(frame, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))

    touch(root / "test" / "smash" / "v000" / "frame_0003.jpg")  # same bytes, new mtime
    build_datasets(cfg, seed=0)
    after = cache_files(root)
    assert len(after) == 4 and set(first) < set(after)  # train/val reused, test rebuilt

    frame = root / "train" / "backhand" / "v000" / "frame_0000.jpg"  # window 0's first
    Image.new("RGB", (SIZE, SIZE), (255, 0, 0)).save(frame)
    touch(frame)
    rebuilt = build_datasets(cfg, seed=0)
    assert len(cache_files(root)) == 5
    clip, _ = rebuilt["train"][0]
    assert clip[0, 0].float().mean() > 200  # the new red frame, not the stale ramp

    write_video(root / "val" / "smash" / "v000", 21)  # a frame added (20 -> 21 frames)
    build_datasets(cfg, seed=0)
    assert len(cache_files(root)) == 6


def test_cache_key_follows_every_frame(tmp_path):
    root = make_tree(tmp_path / "d", {"train": {"smash": [16, 20]}})
    cfg = make_cfg(root)

    def key() -> str:
        return frame_cache._cache_key(scan_split(root, "train", cfg), SIZE)

    first = key()
    assert key() == first
    video = root / "train" / "smash" / "v001"
    frame = video / "frame_0007.jpg"
    stat, folder_mtime = frame.stat(), video.stat().st_mtime_ns
    frame.write_bytes(frame.read_bytes() + b"\0")  # rewritten in place: new size, same mtime
    os.utime(frame, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert video.stat().st_mtime_ns == folder_mtime  # so the folder's mtime cannot be the key
    assert key() != first
    frame.write_bytes(frame.read_bytes()[:-1])  # the size back, the mtime moved
    os.utime(frame, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert key() != first
    os.utime(frame, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert key() == first  # the same size and mtime again: the same key
    (video / "frame_0019.jpg").unlink()
    assert key() != first


def test_concurrent_builds_of_one_cache(tmp_path):
    root = make_tree(tmp_path / "d")
    index = scan_split(root, "train", make_cfg(root))
    path = tmp_path / "cache" / "train.npy"
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: frame_cache._build_cache(index, SIZE, path), range(2)))
    assert [p.name for p in path.parent.iterdir()] == ["train.npy"]
    frames = np.load(path, mmap_mode="r")
    first, _ = frame_cache.load_frame(index.videos[0][0], SIZE)
    assert frames.shape == (130, 3, SIZE, SIZE)
    assert np.array_equal(frames[0], first.numpy())


def test_shuffle_frames_deterministic_permutation(tmp_path):
    root = make_tree(tmp_path / "d")
    plain = build_datasets(make_cfg(root), seed=7)["train"]
    shuffled = build_datasets(make_cfg(root, shuffle_frames=True), seed=7)["train"]
    again = build_datasets(make_cfg(root, shuffle_frames=True, frame_cache=False), seed=7)["train"]
    other_seed = build_datasets(make_cfg(root, shuffle_frames=True), seed=8)["train"]
    for i in range(len(plain)):
        a, b, c = plain[i][0], shuffled[i][0], again[i][0]
        assert torch.equal(b, c)
        assert not torch.equal(a, b)
        assert sorted(f.numpy().tobytes() for f in a) == sorted(f.numpy().tobytes() for f in b)
    assert any(not torch.equal(shuffled[i][0], other_seed[i][0]) for i in range(len(plain)))


def test_dataloader_workers_over_cache(tmp_path):
    root = make_tree(tmp_path / "d")
    train = build_datasets(make_cfg(root), seed=0)["train"]
    expected = all_items(train)  # opens the memmap in this process first
    # The open memmap (130 frames, 400 kB) is not shipped to workers.
    assert len(pickle.dumps(train)) < 100_000
    training = TrainingConfig(num_workers=2, prefetch_factor=3)
    loader = make_loader(train, 4, training, torch.device("cpu"), 0)
    assert (loader.num_workers, loader.prefetch_factor) == (2, 3)
    clips, labels = zip(*loader, strict=True)
    assert torch.equal(torch.cat(clips), torch.stack([clip for clip, _ in expected]))
    assert torch.cat(labels).tolist() == [label for _, label in expected]


@pytest.mark.parametrize("as_string", [False, True])
def test_synthetic_generated_first(tmp_path, monkeypatch, as_string):
    calls = []

    def ensure_synthetic(root, preset, seed, image_size, sport, background):
        calls.append((root, preset, seed, image_size, sport, background))
        make_tree(root)

    fake = types.ModuleType("tennis_exp.data.synthetic")
    fake.ensure_synthetic = ensure_synthetic
    monkeypatch.setitem(sys.modules, "tennis_exp.data.synthetic", fake)
    cfg = make_cfg(tmp_path / "d", frame_cache=False)
    cfg.synthetic = SyntheticConfig(generate=True, preset=SyntheticPreset.tiny, seed=3)
    if as_string:  # a plain (non-structured) config holds the enum's name as a string
        cfg = OmegaConf.create(OmegaConf.to_container(cfg, enum_to_str=True))
    datasets = build_datasets(cfg, seed=0)
    assert calls == [(tmp_path / "d", "tiny", 3, 64, "tennis", False)]
    assert len(datasets["train"]) == 10


def test_the_thetis_config_maps_the_folders_the_generator_and_prepare_write():
    for dataset in ("thetis", "synthetic"):
        cfg = compose_config([f"data={dataset}", "data.root=/frames"]).data
        assert dict(cfg.actions) == THETIS_ACTIONS and list(cfg.excluded) == THETIS_EXCLUDED


def test_a_dataset_without_an_action_mapping_is_one_line():
    cfg = compose_config([])
    cfg.data.actions = {}  # a new dataset's config that forgot its mapping
    with pytest.raises(UserError, match="data.actions is empty: map the action folders"):
        validate(cfg)


def test_background_adds_its_class_and_the_idle_folder_once(tmp_path):
    cfg = compose_config(["data=synthetic", "data.background=true"])
    validate(cfg)
    validate(cfg)  # a checkpoint's config already holds them: not added twice
    assert list(cfg.data.events) == [*EVENTS, BACKGROUND]
    assert cfg.data.actions[IDLE_ACTION] == BACKGROUND
    layout = {"train": {"smash": [16], IDLE_ACTION: [24]}}
    root = make_tree(tmp_path / "d", layout)
    with_class = make_cfg(root, events=cfg.data.events, actions=cfg.data.actions, background=True)
    index = scan_split(root, "train", with_class)
    assert index.class_counts(cfg.data.events) == {**dict.fromkeys(EVENTS, 0), "Smash": 1,
                                                   BACKGROUND: 2}  # fmt: skip
    plain = compose_config(["data=synthetic"])
    validate(plain)
    assert list(plain.data.events) == EVENTS and IDLE_ACTION not in plain.data.actions
    # Without the class, the idle clips of the same root are left out as excluded ones: no
    # warning of an unmapped folder (one twin serves both, data/synthetic.py).
    index = scan_split(root, "train", make_cfg(root))
    assert index.class_counts(EVENTS) == {**dict.fromkeys(EVENTS, 0), "Smash": 1}
    assert index.skipped_actions == {}
