"""Which implementation the NumPy backend runs for an op, and why: one plan per geometry.

Each op family with more than one implementation (conv/plan.py: general and pointwise
convolution; depthwise/plan.py; batchnorm/; elementwise/) builds a Plan the first time it sees a
geometry, and its ops look only at the plan to pick their path: the plan is the only place the
choice is made. Plans are cached per geometry (a training loop asks for the same few every step)
and per whether the numba kernels are on (jit.enabled). A planner reads its thresholds when it
builds a plan, so code that moves one (tests do) calls clearPlans() before and after.

What a plan cannot know ahead is the values: several fast paths are exact for finite values only,
and their ops check the result and take the exact path when it is not finite. A route names that
fallback too.

One call answers "which kernel runs for this shape?"::

    >>> from minidl.backend.numpy import routing
    >>> print(routing.plan("general", (32, 32, 32, 32), (64, 32, 3, 3), stride=1, pad=1))  # doctest: +SKIP
    general conv (32, 32, 32, 32) * (64, 32, 3, 3), stride (1, 1), pad (1, 1), dilation (1, 1), groups 1
      forward         winograd   3x3 at stride 1 with >= 32 maps per group ...
"""

import functools

from minidl.backend.numpy import jit


class Route:
    """One pass of a plan: the implementation it runs (impl), why (why), and the exact path it
    falls back to at run time when a value is not finite (fallback, '' for none)."""

    __slots__ = ("impl", "why", "fallback")

    def __init__(self, impl, why, fallback=""):
        self.impl, self.why, self.fallback = impl, why, fallback

    def __repr__(self):
        return "Route(%r, %r%s)" % (self.impl, self.why, ", fallback=%r" % self.fallback if self.fallback else "")


class Plan:
    """An op family's routing for one geometry: routes (an ordered dict, pass name -> Route) and
    whatever the chosen kernels need precomputed (attributes set by the family's planner).
    ``plan["forward"]`` is that pass's implementation name."""

    def __init__(self, family, geometry, routes, **data):
        self.family, self.geometry, self.routes = family, geometry, dict(routes)
        for key, value in data.items():
            setattr(self, key, value)

    def __getitem__(self, passName):
        return self.routes[passName].impl

    def __str__(self):
        width = max(len(route.impl) for route in self.routes.values())
        lines = ["%s %s" % (self.family, self.geometry)]
        for name, route in self.routes.items():
            line = "  %-15s %-*s  %s" % (name, width, route.impl, route.why)
            if route.fallback:
                line += " (fallback: %s)" % route.fallback
            lines.append(line)
        return "\n".join(lines)

    def summary(self):
        """The implementations of the passes, in order, joined by '/': a short label for tables."""
        return "/".join(route.impl for route in self.routes.values())


_planners = {}
_caches = []


def planner(family):
    """Register fn(*geometry) -> Plan as family's planner; plans are then cached per geometry and
    per jit.enabled. Arguments must be hashable (tuples of ints)."""
    def register(fn):
        cached = functools.lru_cache(maxsize=1024)(lambda enabled, *geometry: fn(*geometry))
        _caches.append(cached)

        @functools.wraps(fn)
        def get(*geometry):
            return cached(jit.enabled, *geometry)
        _planners[family] = get
        return get
    return register


def clearPlans():
    """Forget every cached plan (tests that move a threshold call this before and after)."""
    for cache in _caches:
        cache.cache_clear()


def _pair(value):
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value), int(value))


def plan(family, *args, **kwargs):
    """The plan for one op of the NumPy backend.

    family, then that family's geometry:
    - "general" (Conv2D's general path), "depthwise": inshape (N, C, H, W), wshape (O, C/G, kh, kw),
      then stride, pad, dilation (ints or pairs, default 1, 0, 1) and, for "general", groups (1);
    - "pointwise": inshape, wshape (any further arguments are ignored: 1x1, stride 1, no padding);
    - "batchnorm": inshape;
    - "activation": kind (as ops.activation takes it).
    The family names for convolutions are Conv2D's ``algo`` values, so
    ``plan(conv.algo, x.shape, conv.W.shape, conv.stride, conv.pad, conv.dilation, conv.groups)``
    names what a Conv2D module runs, whatever its algo."""
    _loadPlanners()
    if family not in _planners:
        raise ValueError("routing.plan: unknown op family %r, expected one of %s"
                         % (family, ", ".join(sorted(_planners))))
    if family in ("general", "depthwise"):
        return _convPlan(family, *args, **kwargs)
    if family == "pointwise":
        return _planners[family](tuple(int(v) for v in args[0]), tuple(int(v) for v in args[1]))
    if family == "batchnorm":
        return _planners[family](tuple(args[0]))
    return _planners[family](*args)


def _convPlan(family, inshape, wshape, stride=1, pad=0, dilation=1, groups=1):
    geometry = (tuple(int(v) for v in inshape), tuple(int(v) for v in wshape), _pair(stride), _pair(pad),
                _pair(dilation))
    if family == "general":
        geometry += (int(groups),)
    return _planners[family](*geometry)


def _loadPlanners():
    # the families register their planners when they import
    from minidl.backend.numpy import batchnorm, conv, depthwise, elementwise  # noqa: F401
