"""Containers: Sequential, Parallel and Graph (with its Node), and the Container base."""

from minidl.containers.container import Container  # noqa: F401
from minidl.containers.graph import Graph, Node  # noqa: F401
from minidl.containers.parallel import Parallel  # noqa: F401
from minidl.containers.sequential import Sequential  # noqa: F401
