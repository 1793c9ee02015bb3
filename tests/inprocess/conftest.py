"""Fixtures of the in-process tier: a stack per test, over a fresh backing directory, closed afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .stack import InProcessStack

StackFactory = Callable[..., InProcessStack]


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[StackFactory]:
    """Build stacks on demand (``make_stack(config, observe=...)``); every one is closed at teardown."""
    stacks: list[InProcessStack] = []

    def make(config: dict[str, Any] | None = None, **options: Any) -> InProcessStack:
        backing = tmp_path / f"backing{len(stacks)}"
        backing.mkdir()
        stack = InProcessStack(backing, config, **options)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()


@pytest.fixture(params=["passthrough", "fake"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs on both backends."""
    kind: str = request.param
    return kind
