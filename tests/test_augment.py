"""Augmentation of host batches against explicit index arithmetic, pixel by pixel."""

import numpy as np
import pytest

from minidl.datasets import Compose, Normalize, RandomApply, RandomCrop, RandomHorizontalFlip


def _images(n=6, c=2, h=5, w=7, seed=0):
    return np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(np.float32)


def _cropByLoops(x, offsets, size, pad):
    """out[n, c, i, j] = x[n, c, i + dy - pad_h, j + dx - pad_w] inside the image, else 0."""
    (sh, sw), (ph, pw) = size, pad
    n, c, h, w = x.shape
    out = np.zeros((n, c, sh, sw), np.float32)
    for k in range(n):
        dy, dx = offsets[k]
        for ch in range(c):
            for i in range(sh):
                for j in range(sw):
                    r, q = i + dy - ph, j + dx - pw
                    if 0 <= r < h and 0 <= q < w:
                        out[k, ch, i, j] = x[k, ch, r, q]
    return out


@pytest.mark.parametrize("size, pad", [((5, 7), (1, 1)), ((4, 6), (0, 0)), ((3, 8), (2, 1)), ((9, 11), (2, 2))],
                         ids=["same_pad1", "smaller_nopad", "rect_pad21", "whole_padded"])
def test_crop_with_injected_offsets(size, pad):
    x = _images()
    crop = RandomCrop(size, pad=pad)
    rows, cols = 5 + 2 * pad[0] - size[0] + 1, 7 + 2 * pad[1] - size[1] + 1
    offsets = np.array([[k % rows, (3 * k) % cols] for k in range(6)])
    offsets[0] = [rows - 1, cols - 1]     # the far corner
    got = crop.crop(x, offsets)
    assert got.shape == (6, 2) + size and got.dtype == np.float32
    assert np.array_equal(got, _cropByLoops(x, offsets, size, pad))


def test_random_crop_draws_per_image_offsets_from_the_generator():
    x = _images(n=40, c=3, h=8, w=8)
    copy = x.copy()
    got = RandomCrop(8, pad=1)(x, np.random.default_rng(7))
    # the draw the docstring promises: integers(0, [rows, cols], size=(N, 2)), here rows = cols = 3
    offsets = np.random.default_rng(7).integers(0, [3, 3], size=(40, 2))
    assert np.array_equal(got, _cropByLoops(x, offsets, (8, 8), (1, 1)))
    assert np.array_equal(x, copy), "the input is not changed"
    assert len({tuple(o) for o in offsets}) > 3, "the offsets vary per image"
    again = RandomCrop(8, pad=1)(x, np.random.default_rng(7))
    assert np.array_equal(got, again)


def test_flip_with_injected_flags_and_from_the_generator():
    x = _images()
    flags = np.array([True, False, False, True, True, False])
    got = RandomHorizontalFlip().flip(x, flags)
    for k in range(6):
        for j in range(7):
            source = 6 - j if flags[k] else j
            assert np.array_equal(got[k, :, :, j], x[k, :, :, source]), (k, j)
    drawn = np.random.default_rng(3).random(6) < 0.3
    got = RandomHorizontalFlip(p=0.3)(x, np.random.default_rng(3))
    assert np.array_equal(got, RandomHorizontalFlip().flip(x, drawn))
    assert np.array_equal(RandomHorizontalFlip(p=0)(x, np.random.default_rng(0)), x)
    assert np.array_equal(RandomHorizontalFlip(p=1)(x, np.random.default_rng(0)), x[:, :, :, ::-1])


def test_normalize_per_channel():
    x = _images(c=3)
    got = Normalize([0.5, -1.0, 2.0], [2.0, 0.5, 4.0])(x)
    expected = np.empty_like(x)
    for ch, (m, s) in enumerate([(0.5, 2.0), (-1.0, 0.5), (2.0, 4.0)]):
        expected[:, ch] = (x[:, ch] - np.float32(m)) / np.float32(s)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_compose_applies_in_order_with_one_generator():
    x = _images(n=20, c=1, h=6, w=6)
    pipeline = Compose([RandomCrop(6, pad=2), RandomHorizontalFlip(), Normalize([0.25], [0.5])])
    got = pipeline(x, np.random.default_rng(11))
    rng = np.random.default_rng(11)
    offsets = rng.integers(0, [5, 5], size=(20, 2))       # the crop draws first ...
    flags = rng.random(20) < 0.5                          # ... then the flip, from the same generator
    cropped = _cropByLoops(x, offsets, (6, 6), (2, 2))
    flipped = np.where(flags[:, None, None, None], cropped[:, :, :, ::-1], cropped)
    np.testing.assert_allclose(got, (flipped - np.float32(0.25)) / np.float32(0.5), rtol=1e-6, atol=1e-7)


def test_random_apply_transforms_the_chosen_images_only():
    x = _images(n=30, c=1, h=6, w=6)
    got = RandomApply(RandomCrop(6, pad=1), p=0.4)(x, np.random.default_rng(4))
    rng = np.random.default_rng(4)
    chosen = rng.random(30) < 0.4                                   # the choices first ...
    offsets = rng.integers(0, [3, 3], size=(int(chosen.sum()), 2))  # ... then the crop's, for those only
    expected = x.copy()
    expected[chosen] = _cropByLoops(x[chosen], offsets, (6, 6), (1, 1))
    assert np.array_equal(got, expected) and 0 < chosen.sum() < 30
    assert np.array_equal(RandomApply(RandomHorizontalFlip(p=1), p=0)(x, np.random.default_rng(0)), x)


@pytest.mark.parametrize("call, error, message", [
    (lambda: RandomCrop(8, pad=1)(np.zeros((2, 1, 8, 8)), np.random.default_rng(0)), ValueError,
     r"RandomCrop: expected float32 images of shape \(N, C, H, W\), got float64 of shape \(2, 1, 8, 8\)"),
    (lambda: RandomCrop(8, pad=1)(np.zeros((2, 8, 8), np.float32), np.random.default_rng(0)), ValueError,
     r"RandomCrop: expected float32 images of shape \(N, C, H, W\), got float32 of shape \(2, 8, 8\)"),
    (lambda: RandomCrop(8, pad=1)([[1.0]], np.random.default_rng(0)), TypeError,
     r"RandomCrop: expected a numpy array of images \(N, C, H, W\), got list"),
    (lambda: RandomCrop(8, pad=1)(np.zeros((2, 1, 8, 8), np.float32), 3), TypeError,
     r"RandomCrop: expected a numpy Generator \(np.random.default_rng\(seed\)\), got int"),
    (lambda: RandomCrop(11, pad=1)(np.zeros((2, 1, 8, 8), np.float32), np.random.default_rng(0)), ValueError,
     r"RandomCrop: cannot crop 11x11 from images of 8x8 padded by 1x1"),
    (lambda: RandomCrop(0), ValueError, r"RandomCrop: size must be >= 1 and pad >= 0, got size 0, pad 0"),
    (lambda: RandomCrop(4, pad=-1), ValueError, r"RandomCrop: size must be >= 1 and pad >= 0"),
    (lambda: RandomCrop((4, 4, 4)), ValueError, r"RandomCrop: size must be an int or an \(h, w\) pair"),
    (lambda: RandomCrop(4).crop(np.zeros((2, 1, 4, 4), np.float32), np.array([[0, 0], [0, 1]])), ValueError,
     r"RandomCrop.crop: offsets must be in \[0, 1\) x \[0, 1\), got rows 0..0, cols 0..1"),
    (lambda: RandomHorizontalFlip(p=1.5), ValueError, r"RandomHorizontalFlip: p must be in \[0, 1\], got 1.5"),
    (lambda: RandomHorizontalFlip().flip(np.zeros((2, 1, 4, 4), np.float32), np.array([1, 0])), ValueError,
     r"RandomHorizontalFlip.flip: expected bool flags of shape \(2,\), got int64 of shape \(2,\)"),
    (lambda: Normalize([0.5], [0.0]), ValueError, r"Normalize: std values must be > 0, got 0.0"),
    (lambda: Normalize(0.5, 0.2), ValueError, r"Normalize: mean must be a non-empty sequence of per-channel numbers"),
    (lambda: Normalize([0.5, 0.5], [1.0]), ValueError, r"Normalize: mean and std must have one value per channel"),
    (lambda: Normalize([0.5], [1.0])(np.zeros((1, 3, 2, 2), np.float32)), ValueError,
     r"Normalize: expected images with 1 channels, got shape \(1, 3, 2, 2\)"),
    (lambda: Compose([]), ValueError, r"Compose: expected a non-empty list of transforms"),
    (lambda: Compose([RandomHorizontalFlip(), 3]), TypeError,
     r"Compose: expected callables transform\(x, rng\), got int"),
    (lambda: RandomApply(RandomCrop(4), p=1)(np.zeros((2, 1, 6, 6), np.float32), np.random.default_rng(0)),
     ValueError, r"RandomApply: RandomCrop\(size=\(4, 4\), pad=\(0, 0\)\) must keep the images' shape \(2, 1, 6, 6\), "
                 r"it made \(2, 1, 4, 4\)"),
    (lambda: RandomApply(3), TypeError, r"RandomApply: expected a transform\(x, rng\), got int"),
], ids=["float64", "3d", "list", "seedNotGenerator", "cropTooBig", "size0", "padNegative", "size3", "offsetsOut",
        "pAbove1", "flagsNotBool", "std0", "scalarMean", "lengths", "channels", "emptyCompose", "notCallable",
        "applyChangesShape", "applyNotCallable"])
def test_errors_name_the_transform_and_what_was_expected(call, error, message):
    with pytest.raises(error, match=message):
        call()
