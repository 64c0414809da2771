"""Data augmentation for host batches: RandomCrop, RandomHorizontalFlip, Normalize, RandomApply,
Compose.

A transform takes a float32 numpy array of images (N, C, H, W) on the host and
a numpy Generator, and returns a new array (the input is never changed):
``y = transform(x, rng)``. Each random transform draws everything it needs for
the whole batch in one call (``draw``) and then applies it deterministically
(``crop`` / ``flip``), so a seeded generator gives the same result every time
and tests can inject the draws. ``Compose([...])`` applies transforms in order
with one generator. The background loader (minidl/datasets/loader.py) runs
them in its worker thread; every step is one vectorised NumPy operation over
the batch (no per-image Python loop) so that thread leaves the interpreter to
the training loop most of the time.

    >>> rng = np.random.default_rng(0)
    >>> cifar = Compose([RandomCrop(32, pad=4), RandomHorizontalFlip(),
    ...                  Normalize((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))])
    >>> cifar(np.zeros((8, 3, 32, 32), np.float32), rng).shape
    (8, 3, 32, 32)

Not supported: integer (uint8) images, NHWC layout, per-image shapes that
differ, geometric transforms other than crop and flip.
"""

import numbers

import numpy as np

from minidl.shapes import pair, realInRange


def _checkImages(owner, x):
    if not isinstance(x, np.ndarray):
        raise TypeError("%s: expected a numpy array of images (N, C, H, W), got %s" % (owner, type(x).__name__))
    if x.ndim != 4 or x.dtype != np.float32:
        raise ValueError("%s: expected float32 images of shape (N, C, H, W), got %s of shape %s"
                         % (owner, x.dtype, x.shape))


def _checkRng(owner, rng):
    if not isinstance(rng, np.random.Generator):
        raise TypeError("%s: expected a numpy Generator (np.random.default_rng(seed)), got %s"
                        % (owner, type(rng).__name__))


class Transform:
    """The base of the transforms: ``__call__(x, rng=None)`` checks x (float32 (N, C, H, W)) and
    returns a new array; random transforms need rng, a numpy Generator."""

    def __call__(self, x, rng=None):
        raise NotImplementedError("%s must implement __call__(x, rng)" % type(self).__name__)


class RandomCrop(Transform):
    """Zero-pad each image by pad on every side, then crop a size window at a random position.

    size: an int or an (h, w) pair (the output's H, W), at most the padded image; pad: an int or
    an (h, w) pair >= 0 (default 0). The window's top-left corner in the padded image is uniform
    in [0, H + 2*pad_h - size_h] x [0, W + 2*pad_w - size_w], drawn independently per image as
    ``rng.integers(0, [rows, cols], size=(N, 2))`` (``draw``); ``crop(x, offsets)`` applies given
    offsets. Output (N, C, size_h, size_w): out[n, c, i, j] = x[n, c, i + dy - pad_h, j + dx - pad_w]
    where that falls inside the image, 0 elsewhere.

    Example::

        >>> RandomCrop(8, pad=1)(np.ones((2, 1, 8, 8), np.float32), np.random.default_rng(0)).shape
        (2, 1, 8, 8)
    """

    def __init__(self, size, pad=0):
        self.size = pair(size, "RandomCrop: size")
        self.pad = pair(pad, "RandomCrop: pad")
        if min(self.size) < 1 or min(self.pad) < 0:
            raise ValueError("RandomCrop: size must be >= 1 and pad >= 0, got size %r, pad %r" % (size, pad))

    def _positions(self, shape):
        """How many window positions there are along H and along W for images of this shape."""
        (sh, sw), (ph, pw) = self.size, self.pad
        rows, cols = shape[2] + 2 * ph - sh + 1, shape[3] + 2 * pw - sw + 1
        if rows < 1 or cols < 1:
            raise ValueError("RandomCrop: cannot crop %dx%d from images of %dx%d padded by %dx%d, got shape %s"
                             % (sh, sw, shape[2], shape[3], ph, pw, tuple(shape)))
        return rows, cols

    def draw(self, shape, rng):
        """The windows' top-left corners in the padded images for images of shape (N, C, H, W), drawn
        from rng (a numpy Generator): an int64 array (N, 2) of (dy, dx)."""
        _checkRng("RandomCrop", rng)
        rows, cols = self._positions(shape)
        return rng.integers(0, [rows, cols], size=(shape[0], 2))

    def crop(self, x, offsets):
        """x (N, C, H, W) cropped at the given (N, 2) offsets: (N, C, size_h, size_w)."""
        _checkImages("RandomCrop", x)
        rows, cols = self._positions(x.shape)
        offsets = np.asarray(offsets)
        if offsets.shape != (x.shape[0], 2) or offsets.dtype.kind not in "iu":
            raise ValueError("RandomCrop.crop: expected integer offsets of shape (%d, 2), got %s of shape %s"
                             % (x.shape[0], offsets.dtype, offsets.shape))
        if offsets.size and (offsets.min() < 0 or offsets[:, 0].max() >= rows or offsets[:, 1].max() >= cols):
            raise ValueError("RandomCrop.crop: offsets must be in [0, %d) x [0, %d), got rows %d..%d, cols %d..%d"
                             % (rows, cols, offsets[:, 0].min(), offsets[:, 0].max(),
                                offsets[:, 1].min(), offsets[:, 1].max()))
        (sh, sw), (ph, pw) = self.size, self.pad
        n, c, h, w = x.shape
        padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), np.float32)
        padded[:, :, ph:ph + h, pw:pw + w] = x
        out = np.empty((n, c, sh, sw), np.float32)
        # one slice copy per distinct offset (at most (2 * pad + 1)^2 of them when size == H, W)
        codes = offsets[:, 0] * cols + offsets[:, 1]
        for code in np.unique(codes):
            dy, dx = divmod(int(code), cols)
            which = np.flatnonzero(codes == code)
            out[which] = padded[which, :, dy:dy + sh, dx:dx + sw]
        return out

    def __call__(self, x, rng=None):
        _checkImages("RandomCrop", x)
        return self.crop(x, self.draw(x.shape, rng))

    def __repr__(self):
        return "RandomCrop(size=%r, pad=%r)" % (self.size, self.pad)


class RandomHorizontalFlip(Transform):
    """Mirror each image left-right (along W) with probability p (default 0.5, in [0, 1]).

    ``draw`` gives the per-image choices, ``rng.random(N) < p``; ``flip(x, flags)`` applies them.
    Not for images whose meaning changes when mirrored (digits, text).

    Example::

        >>> x = np.arange(4, dtype=np.float32).reshape(1, 1, 1, 4)
        >>> RandomHorizontalFlip().flip(x, np.array([True]))
        array([[[[3., 2., 1., 0.]]]], dtype=float32)
    """

    def __init__(self, p=0.5):
        self.p = realInRange("RandomHorizontalFlip", "p", p, 0, 1)

    def draw(self, shape, rng):
        """Which of N images (shape (N, C, H, W)) to mirror, drawn from rng (a numpy Generator): a bool
        array (N,)."""
        _checkRng("RandomHorizontalFlip", rng)
        return rng.random(shape[0]) < self.p

    def flip(self, x, flags):
        """A copy of x with the images where flags (bool (N,)) is True mirrored along W."""
        _checkImages("RandomHorizontalFlip", x)
        flags = np.asarray(flags)
        if flags.shape != (x.shape[0],) or flags.dtype != np.bool_:
            raise ValueError("RandomHorizontalFlip.flip: expected bool flags of shape (%d,), got %s of shape %s"
                             % (x.shape[0], flags.dtype, flags.shape))
        out = x.copy()
        which = np.flatnonzero(flags)
        out[which] = x[which, :, :, ::-1]
        return out

    def __call__(self, x, rng=None):
        _checkImages("RandomHorizontalFlip", x)
        return self.flip(x, self.draw(x.shape, rng))

    def __repr__(self):
        return "RandomHorizontalFlip(p=%r)" % self.p


class Normalize(Transform):
    """Per-channel normalisation: out[:, c] = (x[:, c] - mean[c]) / std[c]. Deterministic (rng unused).

    mean, std: sequences of C finite numbers (std > 0); images must have C channels.

    Example::

        >>> float(Normalize([0.5], [0.25])(np.ones((1, 1, 2, 2), np.float32))[0, 0, 0, 0])
        2.0
    """

    def __init__(self, mean, std):
        self.mean, self.std = self._values("mean", mean, None), self._values("std", std, 0)
        if len(self.mean) != len(self.std):
            raise ValueError("Normalize: mean and std must have one value per channel each, got %d and %d"
                             % (len(self.mean), len(self.std)))

    @staticmethod
    def _values(name, values, low):
        """float32 array of the per-channel values, each finite (and > low unless low is None)."""
        if isinstance(values, numbers.Real) or not hasattr(values, "__len__") or len(values) == 0:
            raise ValueError("Normalize: %s must be a non-empty sequence of per-channel numbers, got %r"
                             % (name, values))
        return np.array([realInRange("Normalize", name + " values", v, low, lowOpen=True)
                         for v in values], np.float32)

    def __call__(self, x, rng=None):
        _checkImages("Normalize", x)
        if x.shape[1] != len(self.mean):
            raise ValueError("Normalize: expected images with %d channels, got shape %s" % (len(self.mean), x.shape))
        return ((x - self.mean[:, None, None]) / self.std[:, None, None]).astype(np.float32, copy=False)

    def __repr__(self):
        return "Normalize(mean=%s, std=%s)" % (self.mean.tolist(), self.std.tolist())


class RandomApply(Transform):
    """Apply transform to each image with probability p (default 0.5, in [0, 1]), leave the others.

    Draws the choices first, ``rng.random(N) < p``, then runs transform once on the chosen images
    (its own draws follow, for those images only); it must keep the images' shape. For a milder
    augmentation, e.g. shifting only half of a small dataset's images.

    Example::

        >>> shift = RandomApply(RandomCrop(8, pad=1), p=0.5)
        >>> shift(np.zeros((4, 1, 8, 8), np.float32), np.random.default_rng(0)).shape
        (4, 1, 8, 8)
    """

    def __init__(self, transform, p=0.5):
        if not callable(transform):
            raise TypeError("RandomApply: expected a transform(x, rng), got %s" % type(transform).__name__)
        self.transform = transform
        self.p = realInRange("RandomApply", "p", p, 0, 1)

    def __call__(self, x, rng=None):
        _checkImages("RandomApply", x)
        _checkRng("RandomApply", rng)
        which = np.flatnonzero(rng.random(x.shape[0]) < self.p)
        out = x.copy()
        if which.size:
            changed = self.transform(x[which], rng)
            if changed.shape != (which.size,) + x.shape[1:]:
                raise ValueError("RandomApply: %r must keep the images' shape %s, it made %s"
                                 % (self.transform, (which.size,) + x.shape[1:], changed.shape))
            out[which] = changed
        return out

    def __repr__(self):
        return "RandomApply(%r, p=%r)" % (self.transform, self.p)


class Compose(Transform):
    """Apply transforms in order, sharing one generator: Compose([t1, t2])(x, rng) = t2(t1(x, rng), rng).

    transforms: a non-empty list of Transforms (or callables f(x, rng) returning a new array).

    Example::

        >>> t = Compose([RandomCrop(4, pad=2), RandomHorizontalFlip(), Normalize([0.5], [0.5])])
        >>> t(np.ones((3, 1, 4, 4), np.float32), np.random.default_rng(0)).shape
        (3, 1, 4, 4)
    """

    def __init__(self, transforms):
        if not isinstance(transforms, (list, tuple)) or not transforms:
            raise ValueError("Compose: expected a non-empty list of transforms, got %r" % (transforms,))
        for t in transforms:
            if not callable(t):
                raise TypeError("Compose: expected callables transform(x, rng), got %s" % type(t).__name__)
        self.transforms = list(transforms)

    def __call__(self, x, rng=None):
        _checkImages("Compose", x)
        for t in self.transforms:
            x = t(x, rng)
        return x

    def __repr__(self):
        return "Compose([%s])" % ", ".join(repr(t) for t in self.transforms)
